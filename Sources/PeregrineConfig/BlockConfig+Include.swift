#if canImport(Glibc)
import Glibc
#endif

/// `include PATH` (PowerMTA's): the lines of another file, or of every file a
/// glob matches (in name order), in place of the `include` line, at any
/// level. A relative path is relative to the including file's directory.
/// Messages about included lines name the included file and its line.
extension BlockConfig {
    /// How deep includes may nest: far more than any real layout needs, and a bound on a mistake.
    static let maximumIncludeDepth = 16

    static func loadExpandingIncludes(path: String, includedFrom: ConfigLocation?, chain: [String],
                                      diagnostics: inout ConfigDiagnostics) -> [ConfigNode] {
        guard let text = ConfigFile.read(path: path, at: includedFrom, diagnostics: &diagnostics) else { return [] }
        let nodes = parse(text, file: path, diagnostics: &diagnostics)
        let identity = realPath(path) ?? path
        return expandIncludes(nodes, directory: directory(of: path), chain: chain + [identity], diagnostics: &diagnostics)
    }

    private static func expandIncludes(_ nodes: [ConfigNode], directory: String, chain: [String],
                                       diagnostics: inout ConfigDiagnostics) -> [ConfigNode] {
        var out: [ConfigNode] = []
        for var node in nodes {
            if node.isBlock {
                node.children = expandIncludes(node.children, directory: directory, chain: chain, diagnostics: &diagnostics)
                out.append(node)
                continue
            }
            guard node.name == "include" else { out.append(node); continue }
            guard node.arguments.count == 1 else {
                diagnostics.record(node.error("include expects one file path or glob, got '\(node.rawArguments)'"))
                continue
            }
            let written = node.arguments[0]
            let pattern = written.hasPrefix("/") || directory.isEmpty ? written : directory + "/" + written
            let files: [String]
            if written.contains(where: { "*?[".contains($0) }) {
                files = glob(pattern)
                if files.isEmpty { diagnostics.warn(node, "include: '\(written)' matches no file") }
            } else {
                files = [pattern]
            }
            for file in files {
                let identity = realPath(file) ?? file
                if let first = chain.firstIndex(of: identity) {
                    let cycle = (chain[first...] + [identity]).joined(separator: " -> ")
                    diagnostics.record(node.error("include: '\(file)' is already being read (include cycle: \(cycle))"))
                    continue
                }
                guard chain.count < maximumIncludeDepth else {
                    diagnostics.record(node.error("include: more than \(maximumIncludeDepth) nested includes at '\(file)'"))
                    continue
                }
                out += loadExpandingIncludes(path: file, includedFrom: node.location, chain: chain, diagnostics: &diagnostics)
            }
        }
        return out
    }

    private static func directory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "" }
        return slash == path.startIndex ? "/" : String(path[..<slash])
    }

    private static func realPath(_ path: String) -> String? {
        guard let resolved = Glibc.realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    /// Regular files and links matching `pattern`, sorted by name (glob's order).
    private static func glob(_ pattern: String) -> [String] {
        var result = glob_t()
        defer { globfree(&result) }
        guard Glibc.glob(pattern, 0, nil, &result) == 0 else { return [] }
        var files: [String] = []
        for i in 0..<Int(result.gl_pathc) {
            guard let p = result.gl_pathv[i] else { continue }
            let path = String(cString: p)
            var st = stat()
            // Directories a glob picks up (conf.d/*) are not config files.
            if stat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR { continue }
            files.append(path)
        }
        return files
    }
}
