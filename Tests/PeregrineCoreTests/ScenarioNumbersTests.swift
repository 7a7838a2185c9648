import Testing
import PeregrineTestSupport

/// The guard that keeps two test files off one loopback scenario number
/// (PrivateLoopback's third octet). Numbers from 10,000 up are no address's
/// octet, so these cases cannot clash with a real suite's claims.
@Suite struct ScenarioNumbersTests {
    @Test func theFirstFileOwnsANumberAndMayUseItAgain() {
        #expect(ScenarioNumbers.register(10_001, by: "Tests/A.swift") == nil)
        #expect(ScenarioNumbers.register(10_001, by: "Tests/A.swift") == nil)
    }

    @Test func aSecondFileIsToldWhoOwnsTheNumber() {
        #expect(ScenarioNumbers.register(10_002, by: "Tests/A.swift") == nil)
        #expect(ScenarioNumbers.register(10_002, by: "Tests/B.swift") == "Tests/A.swift")
        // The owner stays the first file; it is not taken over.
        #expect(ScenarioNumbers.register(10_002, by: "Tests/A.swift") == nil)
    }

    @Test func aClashFailsTheTestThatMadeIt() {
        ScenarioNumbers.claim(10_003, by: "Tests/A.swift")
        withKnownIssue("a second file on the same number is recorded as an issue") {
            ScenarioNumbers.claim(10_003, by: "Tests/B.swift")
        } matching: { issue in
            "\(issue)".contains("Tests/A.swift") && "\(issue)".contains("Tests/B.swift")
        }
    }

    @Test func addressesClaimTheirCallersFile() {
        let first = PrivateLoopback.address(10_004, 1)
        #expect(first.hasSuffix(".10004.1"))
        withKnownIssue("another file asking for the same number") {
            _ = PrivateLoopback.address(10_004, 2, file: "Tests/Elsewhere.swift")
        }
    }
}
