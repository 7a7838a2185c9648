#if canImport(Glibc)
import Glibc
#endif
import Foundation
import PeregrineTestSupport
import Testing

/// `peregrine-bench dashboard` (issue 17) rendered in headless Chromium: the
/// assertions read the DOM the browser built and the figures its one script
/// measured after layout (charts and points actually drawn), never the HTML text.
@Suite(.serialized, .timeLimit(.minutes(10)), .blockingIO) struct DashboardBrowserTests {
    static var bench: String { E2E.executable("peregrine-bench") }
    static var repo: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    /// A run file as the relay bench writes it: figures, start time, in-run peer ratios.
    static func writeRun(_ dir: String, _ name: String, _ doc: [String: Any]) throws {
        let data = try JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys])
        try data.write(to: URL(fileURLWithPath: dir + "/" + name))
    }

    static func stamp(_ i: Int) -> String { String(format: "2026-12-0%dT10:%02d:00Z", 1 + i / 50, i % 50) }

    /// Seven relay runs whose Postfix ratio drops once by 40 % (run 6) amid ±5 % noise,
    /// and three backlog runs of which one lost a message: two regressions by the stated rule.
    static func fixture() throws -> String {
        let dir = HeadlessChromium.scratch()
        let ratios = [10.0, 10.5, 9.8, 10.2, 10.1, 6.0, 10.0]
        for (i, r) in ratios.enumerated() {
            try writeRun(dir, "relay-epoll-\(i).json", [
                "scenario": "relay", "target": "epoll", "startedAt": stamp(i), "gitCommit": "c0ffee\(i)",
                "deliveredPerSecond": 500 * r, "mtaCpuSecondsPer10k": 1.0, "lost": 0,
                "injectToDeliverMs": ["p99": 15.0], "deliveredPerSecondOverPeer": ["postfix": r, "harness": 0.5],
            ])
            try writeRun(dir, "relay-postfix-\(i).json", [
                "scenario": "relay", "target": "postfix", "startedAt": stamp(i), "gitCommit": "c0ffee\(i)",
                "deliveredPerSecond": 500.0, "mtaCpuSecondsPer10k": 26.0, "lost": 0,
            ])
        }
        for (i, lost) in [0, 1, 0].enumerated() {
            try writeRun(dir, "backlog-epoll-\(i).json", [
                "scenario": "backlog", "target": "epoll", "startedAt": stamp(20 + i), "gitCommit": "beef\(i)",
                "drainedPerSecond": 6000.0, "rssWithQueueDeferredMB": 680.0, "lost": lost,
            ])
        }
        return dir
    }

    @Test func fixtureRendersChartsPointsAndFlagsTheRegressions() throws {
        let dir = try Self.fixture()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (status, out) = runTool(Self.bench, ["dashboard", "--results", dir], seconds: 60)
        try #require(status == 0, "dashboard exited \(status): \(out)")
        let dom = try HeadlessChromium.dumpDOM("file://\(dir)/dashboard.html")
        let check = HeadlessChromium.attributes(ofID: "render-check", in: dom)
        let figures = HeadlessChromium.elements("figure", class: "chart", in: dom)
        let points = HeadlessChromium.elements("circle", class: "point", in: dom)
        // relay: 6 metrics (both ratios, delivered/s, CPU, p99, lost); backlog: 3.
        #expect(figures.count == 9, "\(figures.map { ($0["data-scenario"] ?? "") + "/" + ($0["data-metric"] ?? "") })")
        #expect(check["data-charts-drawn"] == "9", "\(check)")
        // Every point in the DOM was laid out with a size by the browser.
        #expect(check["data-points-drawn"] == String(points.count), "\(check), \(points.count) circles")
        let relayOverPostfix = figures.first { $0["data-scenario"] == "relay" && $0["data-metric"] == "overPostfix" }
        #expect(relayOverPostfix?["data-points"] == "7", "Postfix itself is not a series of its own ratio chart")
        // Regressions: the 40 % ratio drop and the lost message, nothing else.
        let regressions = HeadlessChromium.elements("li", class: "regression", in: dom)
        #expect(check["data-regressions"] == "2", "\(check)")
        #expect(Set(regressions.map { ($0["data-scenario"] ?? "") + "/" + ($0["data-metric"] ?? "") })
                == ["relay/overPostfix", "backlog/lost"], "\(regressions)")
        let flagged = points.filter { ($0["class"] ?? "").contains("regressed") }
        #expect(flagged.count == 2, "\(flagged)")
        // The absolute delivered/s of run 6 also fell 40 %, but absolute relay figures are not flagged.
        #expect(!regressions.contains { $0["data-metric"] == "deliveredPerSecond" })

        let png = dir + "/dashboard.png"
        try HeadlessChromium.screenshot("file://\(dir)/dashboard.html", to: png)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: png))
        #expect(bytes.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]), "not a PNG")
    }

    /// `compare A B` on two commits of the fixture: the 40 % ratio drop is WORSE than the
    /// measured noise; the same figure between two ordinary runs is not.
    @Test func compareMarksAChangeWorseThanTheNoise() throws {
        let dir = try Self.fixture()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (status, out) = runTool(Self.bench, ["compare", "c0ffee4", "c0ffee5", "--results", dir], seconds: 60)
        #expect(status == 0, "\(out)")
        let row = out.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
            .first { $0.count > 3 && $0[0] == "relay" && $0[1] == "overPostfix" && $0[2] == "epoll" }
        let cells = try #require(row, "no relay/overPostfix/epoll row:\n\(out)")
        #expect(cells[4] == "10.1" && cells[6] == "6.00", "\(cells)")
        #expect(cells.contains("WORSE"), "\(cells)")
        #expect(out.contains("1 figure(s) worse than the noise"), "\(out)")
        let (_, calm) = runTool(Self.bench, ["compare", "c0ffee2", "c0ffee3", "--results", dir], seconds: 60)
        #expect(calm.contains("0 figure(s) worse than the noise"), "\(calm)")
        let (missing, why) = runTool(Self.bench, ["compare", "nosuchcommit", "c0ffee3", "--results", dir], seconds: 60)
        #expect(missing == 1 && why.contains("no runs for nosuchcommit"), "\(why)")
    }

    /// The committed results (runs imported from git history and new timestamped runs):
    /// the scenarios issue 17 names have charts, and every point is drawn.
    @Test func committedResultsHaveTheNamedScenarios() throws {
        let out = HeadlessChromium.scratch()
        defer { try? FileManager.default.removeItem(atPath: out) }
        let (status, text) = runTool(Self.bench, ["dashboard", "--results", Self.repo + "/results", "--output", out + "/d.html"],
                                     seconds: 60)
        try #require(status == 0, "dashboard exited \(status): \(text)")
        let dom = try HeadlessChromium.dumpDOM("file://\(out)/d.html")
        let figures = HeadlessChromium.elements("figure", class: "chart", in: dom)
        let scenarios = Set(figures.compactMap { $0["data-scenario"] })
        for s in ["relay", "relay-100k", "isp-mix", "backlog"] { #expect(scenarios.contains(s), "no chart for \(s): \(scenarios)") }
        let check = HeadlessChromium.attributes(ofID: "render-check", in: dom)
        let points = HeadlessChromium.elements("circle", class: "point", in: dom)
        #expect(points.count >= 20, "\(points.count) points")
        #expect(check["data-points-drawn"] == String(points.count), "\(check)")
        #expect(check["data-charts-drawn"] == String(figures.count), "\(check)")
        // The relay history has the Postfix ratio for the imported runs.
        #expect(figures.contains { $0["data-scenario"] == "relay" && $0["data-metric"] == "overPostfix" })
        // Each point links to a run file that exists.
        for a in dom.components(separatedBy: "<a href=\"").dropFirst().prefix(400) {
            let href = String(a.prefix { $0 != "\"" })
            guard href.hasSuffix(".json") else { continue }
            let path = href.hasPrefix("/") ? href : Self.repo + "/results/" + href
            #expect(FileManager.default.fileExists(atPath: path), "dangling link \(href)")
        }
    }
}
