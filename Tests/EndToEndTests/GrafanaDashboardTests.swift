import Foundation
import Testing

/// examples/grafana/peregrine-dashboard.json against what Grafana's import
/// needs (uid, title, schemaVersion, panels with unique ids, a 24-column grid
/// without overlaps, targets with refId and expr, the data source variable it
/// refers to) and against what the daemon exposes: every metric a query names
/// is a family the /metrics test finds (DaemonMetricsTests.expectedFamilies).
@Suite(.timeLimit(.minutes(10)), .blockingIO) struct GrafanaDashboardTests {
    static var path: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("examples/grafana/peregrine-dashboard.json").path
    }

    @Test func dashboardJSONHasTheImportSchemaAndOnlyExposedMetrics() throws {
        let data = try #require(FileManager.default.contents(atPath: Self.path), "missing \(Self.path)")
        let dash = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect((dash["uid"] as? String).map { !$0.isEmpty && $0.count <= 40 } == true)
        #expect((dash["title"] as? String)?.isEmpty == false)
        #expect((dash["schemaVersion"] as? Int ?? 0) >= 30)
        let variables = ((dash["templating"] as? [String: Any])?["list"] as? [[String: Any]]) ?? []
        let variableNames = Set(variables.compactMap { $0["name"] as? String })
        #expect(variables.contains { $0["name"] as? String == "datasource" && $0["type"] as? String == "datasource" })
        let panels = try #require(dash["panels"] as? [[String: Any]])
        #expect(!panels.isEmpty)
        let ids = panels.compactMap { $0["id"] as? Int }
        #expect(ids.count == panels.count && Set(ids).count == ids.count, "panel ids must be unique integers")
        var cells = Set<Int>()
        var exposedUse = Set<String>()
        for p in panels {
            let title = p["title"] as? String ?? "?"
            #expect(["timeseries", "stat", "table", "gauge", "bargauge"].contains(p["type"] as? String ?? ""), "\(title)")
            let g = try #require(p["gridPos"] as? [String: Int], "\(title): gridPos")
            let (x, y, w, h) = (g["x"] ?? -1, g["y"] ?? -1, g["w"] ?? 0, g["h"] ?? 0)
            #expect(x >= 0 && y >= 0 && w >= 1 && h >= 1 && x + w <= 24, "\(title): gridPos \(g)")
            for cx in x..<max(x, x + w) { for cy in y..<max(y, y + h) { #expect(cells.insert(cy * 24 + cx).inserted, "\(title) overlaps") } }
            let targets = try #require(p["targets"] as? [[String: Any]], "\(title): targets")
            #expect(!targets.isEmpty)
            #expect(Set(targets.compactMap { $0["refId"] as? String }).count == targets.count, "\(title): refIds")
            for t in targets {
                let expr = try #require(t["expr"] as? String, "\(title): expr")
                for v in Self.variables(in: expr) { #expect(variableNames.contains(v) || v.hasPrefix("__"), "\(title): $\(v)") }
                for m in Self.metricNames(in: expr) { exposedUse.insert(m) }
            }
            let ds = (p["datasource"] as? [String: Any])?["uid"] as? String
            #expect(ds == "${datasource}", "\(title): data source")
        }
        let families = Set(DaemonMetricsTests.expectedFamilies.keys)
        for m in exposedUse { #expect(families.contains(Self.family(m)), "\(m) is not a metric /metrics exposes") }
        #expect(exposedUse.count >= 10)
    }

    /// peregrine_* and process_* names in a PromQL expression.
    static func metricNames(in expr: String) -> [String] {
        var out: [String] = [], word = ""
        for ch in expr + " " {
            if ch.isLetter || ch.isNumber || ch == "_" || ch == ":" { word.append(ch); continue }
            if word.hasPrefix("peregrine_") || word.hasPrefix("process_") { out.append(word) }
            word = ""
        }
        return out
    }

    /// `$name` and `${name}` references.
    static func variables(in expr: String) -> [String] {
        var out: [String] = []
        var rest = Substring(expr)
        while let d = rest.firstIndex(of: "$") {
            rest = rest[rest.index(after: d)...]
            let name = rest.drop { $0 == "{" }.prefix { $0.isLetter || $0.isNumber || $0 == "_" }
            if !name.isEmpty { out.append(String(name)) }
        }
        return out
    }

    /// The family a sample name belongs to (prometheus_client's naming: counters without _total).
    static func family(_ sample: String) -> String {
        for suffix in ["_bucket", "_sum", "_count", "_total"] where sample.hasSuffix(suffix) { return String(sample.dropLast(suffix.count)) }
        return sample
    }
}
