/// The bounce and feedback-loop processor blocks the DSN and suppression
/// suites run with: VERP bounces to `bounces+…@bounce.peregrine.test` and
/// complaints to `fbl@fbl.peregrine.test` are taken in, not relayed.
enum ReportProcessors {
    static let config = """
        <bounce-processor>
            <address-list>
                address /^bounces[+-].*@bounce\\.peregrine\\.test$/
            </address-list>
        </bounce-processor>
        <feedback-loop-processor>
            <address-list>
                address /^fbl@fbl\\.peregrine\\.test$/
            </address-list>
        </feedback-loop-processor>
        """
}
