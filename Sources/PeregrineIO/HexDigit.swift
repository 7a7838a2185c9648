extension UInt8 {
    /// The value of this byte as one ASCII hex digit (`0-9`, `A-F`, `a-f`), or
    /// nil: the one decoder behind quoted-printable `=XX`, URL `%XX` and JSON
    /// `\uXXXX` escapes.
    @inlinable public var hexDigitValue: UInt8? {
        switch self {
        case 48...57: return self - 48
        case 65...70: return self - 55
        case 97...102: return self - 87
        default: return nil
        }
    }
}
