import PeregrineDKIM
import PeregrineEngine

extension InjectionDKIMSigner {
    /// Signs the message SMTP injection builds from the one it received:
    /// `prefixLength` bytes of added fields (Message-ID, Date, a rewritten
    /// From), then `original` without the `dropped` field ranges. Its header
    /// fields come from `headers`, the injection's scan of `original`,
    /// shifted to where they are in `message`: the header section is scanned
    /// once per message (issue 18), not again by the signer.
    func sign(_ message: UnsafeRawBufferPointer, prefixLength: Int, original headers: HeaderSection,
              dropped: [Range<Int>], config: PeregrineConfig, source: SourceSettings, vmta: String,
              recipientDomain: String, now: Int64) -> Outcome {
        describe(message, prefixLength: prefixLength, original: headers, dropped: dropped)
        return signDescribed(message, config: config, source: source, vmta: vmta, recipientDomain: recipientDomain, now: now)
    }

    /// Fills `fields` for `message` as `DKIMHeaderFields.parse` would.
    /// `dropped` are whole fields of `headers` (possibly repeated, any order).
    func describe(_ message: UnsafeRawBufferPointer, prefixLength: Int, original headers: HeaderSection,
                  dropped: [Range<Int>]) {
        fields.removeAll()
        guard fields.appendFields(scanning: 0..<prefixLength, of: message) else {
            fields.parse(message) // not whole fields above the message: scan it all rather than guess
            return
        }
        mergedDrops.removeAll(keepingCapacity: true)
        for r in dropped.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = mergedDrops.last, r.lowerBound <= last.upperBound {
                mergedDrops[mergedDrops.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
            } else {
                mergedDrops.append(r)
            }
        }
        var removed = 0 // bytes of `original` dropped before the current field
        var next = 0    // the first merged drop not yet passed
        for f in headers.fields {
            while next < mergedDrops.count && mergedDrops[next].upperBound <= f.range.lowerBound {
                removed += mergedDrops[next].count
                next += 1
            }
            if next < mergedDrops.count && mergedDrops[next].lowerBound <= f.range.lowerBound { continue } // dropped
            let shift = prefixLength - removed
            fields.appendField(range: f.range.lowerBound + shift..<f.range.upperBound + shift,
                               colon: f.name.upperBound + shift, in: message)
        }
        while next < mergedDrops.count && mergedDrops[next].upperBound <= headers.bodyStart {
            removed += mergedDrops[next].count
            next += 1
        }
        fields.bodyStart = headers.bodyStart + prefixLength - removed
    }
}
