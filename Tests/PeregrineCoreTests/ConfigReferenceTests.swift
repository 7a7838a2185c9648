import Foundation
import Testing
@testable import PeregrineDaemon

/// CONFIGURATION.md names every directive the parser knows and every
/// PowerMTA directive it refuses, so the operator's reference cannot fall
/// behind the code.
@Suite struct ConfigReferenceTests {
    static let reference: String = {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return (try? String(contentsOf: root.appendingPathComponent("CONFIGURATION.md"), encoding: .utf8)) ?? ""
    }()

    @Test func everyDirectiveTheParserKnowsIsDocumented() throws {
        try #require(!Self.reference.isEmpty, "CONFIGURATION.md not found next to Package.swift")
        let names = PeregrineConfig.globalDirectiveNames + DomainOverrides.directiveNames + DKIMSettings.directiveNames
            + SMTPUserSettings.directiveNames + APIKeySettings.directiveNames
        let missing = Set(names).filter { !Self.reference.contains("`\($0)") }
        #expect(missing.isEmpty, "not in CONFIGURATION.md: \(missing.sorted())")
    }

    @Test func everyRefusedDirectiveIsNamedAsRefused() throws {
        try #require(!Self.reference.isEmpty, "CONFIGURATION.md not found next to Package.swift")
        let refused = NotApplicableDirectives.unsupported.values.flatMap(\.keys)
        let missing = Set(refused).filter { !Self.reference.contains("`\($0)`") }
        #expect(missing.isEmpty, "refused but not listed in CONFIGURATION.md: \(missing.sorted())")
    }
}
