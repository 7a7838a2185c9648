import PeregrineEngine

extension ConnectionBudgets {
    /// `total-max-smtp-out` and each `<virtual-mta>`'s `max-smtp-out`.
    func configure(_ config: PeregrineConfig) {
        var perVMTA: [String: Int] = [:]
        for v in config.virtualMTAs { if let n = v.maxSMTPOut { perVMTA[v.name.lowercased()] = n } }
        configure(total: config.totalMaxSMTPOut, perVMTA: perVMTA)
    }
}
