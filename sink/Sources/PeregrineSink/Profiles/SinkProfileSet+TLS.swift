import PeregrineConfig

extension SinkProfileSet {
    /// The profiles as a sink with (or without) a certificate serves them.
    ///
    /// A profile that says `require-tls` answers every plain-text MAIL FROM
    /// with a 421; without a certificate STARTTLS is never offered, so such a
    /// sink would defer that provider's mail forever. That is refused at
    /// start-up, naming the line, unless the operator asked for plain text
    /// (`--no-require-tls`), which turns every `require-tls` off.
    public func served(hasCertificate: Bool, noRequireTLS: Bool) throws(ConfigError) -> SinkProfileSet {
        var set = self
        if noRequireTLS {
            for i in set.profiles.indices {
                set.profiles[i].requireTLS = nil
                set.profiles[i].requireTLSLocation = nil
            }
            return set
        }
        if !hasCertificate, let p = set.profiles.first(where: { $0.requireTLS != nil }) {
            let location = p.requireTLSLocation ?? ConfigLocation(file: "<isp \(p.name)>", line: 0)
            throw ConfigError(location, "<isp \(p.name)> says require-tls, but the sink has no certificate to offer STARTTLS with: "
                              + "give --tls-cert FILE --tls-key FILE, or --no-require-tls to serve it in plain text")
        }
        return set
    }
}
