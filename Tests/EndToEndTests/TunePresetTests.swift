import Foundation
import PeregrineConfig
import PeregrineDaemon
import PeregrineEngine
import PeregrineTestSupport
import Testing

/// The ISP presets in examples/presets come from `peregrine-bench tune`
/// (issue 19): each loads with `peregrine check-config` when included from a
/// config, names the results file it came from, that file is the provider's
/// latest tune result, and every setting the result chose is what the preset
/// sets for each of the provider's domains. Needs no network.
@Suite(.timeLimit(.minutes(2)), .blockingIO) struct TunePresetTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    /// The providers issue 19 requires presets for.
    static let required = ["gmail", "yahoo", "outlook"]

    static func presets() -> [String] {
        let dir = repo + "/examples/presets"
        return ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".conf") }.sorted()
    }

    @Test func theRequiredPresetsAreShipped() {
        let names = Self.presets().map { String($0.dropLast(".conf".count)) }
        for name in Self.required { #expect(names.contains(name), "examples/presets/\(name).conf is missing (have \(names))") }
    }

    @Test(arguments: presets())
    func presetLoadsAndMatchesItsLatestTuneResult(_ file: String) throws {
        let name = String(file.dropLast(".conf".count))
        let presetPath = Self.repo + "/examples/presets/" + file
        let text = try String(contentsOfFile: presetPath, encoding: .utf8)

        // The results file it names is the provider's latest tune run.
        let named = try #require(text.split(separator: "\n").first { $0.hasPrefix("# Results: ") }.map { String($0.dropFirst("# Results: ".count)) },
                                 "\(file) names no results file")
        let runs = ((try? FileManager.default.contentsOfDirectory(atPath: Self.repo + "/results")) ?? [])
            .filter { $0.hasPrefix("tune-\(name)-") && $0.hasSuffix(".json") }.sorted()
        #expect(runs.last.map { "results/" + $0 } == named, "\(file) names \(named); the latest tune run for \(name) is \(runs.last ?? "none")")
        let data = try #require(FileManager.default.contents(atPath: Self.repo + "/" + named), "\(named) is missing")
        let result = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(result["ok"] as? Bool == true, "\(named) is not a passing tune run")
        let chosen = try #require(result["chosen"] as? [String: Any])
        let domains = try #require(result["domains"] as? [String])

        // It loads when included, as an operator uses it, with neither errors nor warnings.
        let dir = try TestDirectory("tune-preset-\(name)")
        let config = try dir.write("peregrine.conf", """
            smtp-listener 127.0.0.1:2525
            spool \(dir.file("spool"))
            include \(presetPath)

            """)
        let check = E2E.run(E2E.executable("peregrine"), ["check-config", "--strict", config], timeout: 30)
        #expect(check.status == 0, "check-config: \(check.stdout) \(check.stderr)")

        // Every value equals the result's choice, for every domain of the provider.
        let loaded = try PeregrineConfig.load(path: config)
        for domain in domains {
            let s = loaded.settings(forDomain: domain)
            #expect(s.maxSMTPOut == chosen["max-smtp-out"] as? Int, "\(domain) max-smtp-out")
            #expect(s.maxMsgPerConnection == chosen["max-msg-per-connection"] as? Int, "\(domain) max-msg-per-connection")
            #expect(s.maxMsgRate == (try ConfigValue.rate(try #require(chosen["max-msg-rate"] as? String))), "\(domain) max-msg-rate")
            #expect(s.mxRollup == (domains.count > 1), "\(domain) mx-rollup")
            if let retry = chosen["backoff-retry-after"] as? String {
                #expect(s.backoffRetryAfter == (try ConfigValue.retrySchedule(retry)), "\(domain) backoff-retry-after")
                // "0" holds the queue while in backoff; anything else is a rate.
                let backoffRate = try #require(chosen["backoff-max-msg-rate"] as? String)
                if backoffRate == "0" {
                    #expect(s.backoffMaxMsgRateIsZero == true, "\(domain) backoff-max-msg-rate 0")
                } else {
                    #expect(s.backoffMaxMsgRate == (try ConfigValue.rate(backoffRate)), "\(domain) backoff-max-msg-rate")
                }
                if let toNormal = chosen["backoff-to-normal-after"] as? String {
                    #expect(s.backoffToNormalAfter == (try ConfigValue.durationOrNever(toNormal)), "\(domain) backoff-to-normal-after")
                }
                let list = try #require(s.smtpPatternList, "\(domain) has no smtp-pattern-list")
                let pattern = try #require(chosen["backoff-pattern"] as? String)
                #expect(text.contains("<smtp-pattern-list \(list)>\n    reply /\(pattern)/ mode=backoff\n"), "\(file): the backoff rule is not /\(pattern)/")
            } else {
                #expect(s.smtpPatternList == nil, "\(domain): a pattern list the tune result did not choose")
            }
        }
    }
}
