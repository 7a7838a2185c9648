#if canImport(Glibc)
import Glibc
#endif
import Dispatch
import Foundation
import PeregrineIO
import PeregrineDKIM
import PeregrineTLS

/// The `peregrine-sink` program, as a library function so tests can run it in-process too.
public enum SinkMain {
    // stdio, not FileHandle.write: Foundation's write traps (try!) on EPIPE,
    // and a sink whose reader went away must still shut down cleanly.
    static func say(_ s: String) {
        fputs(s + "\n", stdout)
        fflush(stdout)
    }
    static func complain(_ s: String) {
        fputs("peregrine-sink: " + s + "\n", stderr)
    }

    /// Runs until SIGTERM/SIGINT; returns the exit status.
    public static func run(arguments: [String]) -> Int32 {
        // Before any thread exists, so that every thread inherits the mask and
        // the runner's wait is the only receiver (ProcessSignals).
        ProcessSignals.block(stopSignals)
        let options: SinkOptions
        switch SinkOptions.parse(arguments) {
        case .failure(let e): complain(e.message); return 2
        case .success(let o): options = o
        }
        if options.help { say(SinkOptions.usage); return 0 }

        var set = SinkProfileSet()
        if !options.profiles.isEmpty {
            do { set = try SinkProfileParser.load(paths: options.profiles) } catch {
                fputs(error.description + "\n", stderr)
                return 1
            }
        }
        do { set = try set.served(hasCertificate: options.tlsCert != nil, noRequireTLS: options.noRequireTLS) } catch {
            fputs(error.description + "\n", stderr)
            return 1
        }
        var bindings: [SinkBinding] = []
        var seen: [SocketAddress: String] = [:]
        for (index, p) in set.profiles.enumerated() {
            for ip in p.mx {
                let address: SocketAddress
                do { address = try SocketAddress(ip: ip, port: options.port ?? p.port) } catch {
                    complain("<isp \(p.name)>: mx \(ip): \(error)"); return 1
                }
                if let other = seen[address], address.port != 0 {
                    complain("<isp \(p.name)> and <isp \(other)> both listen on \(address)"); return 1
                }
                seen[address] = p.name
                bindings.append(SinkBinding(address: address, providerIndex: index))
            }
        }
        if options.acceptAll, let listen = options.listen {
            var p = SinkISPProfile.acceptAll()
            if set.profiles.contains(where: { $0.name == p.name }) { p.name = "accept-all-listen" }
            guard let address = try? SocketAddress(parsing: listen) else { complain("--listen: bad address"); return 2 }
            p.mx = [address.ip]
            p.port = address.port
            bindings.append(SinkBinding(address: address, providerIndex: set.profiles.count))
            set.profiles.append(p)
        }
        if bindings.isEmpty { complain("no profile has an mx address to listen on"); return 1 }

        let scale = options.timeScale ?? set.timeScale ?? 1
        let policy = SinkPolicy(profiles: set.profiles, timeScale: scale, seed: options.seed)
        for text in options.mxFaults {
            switch SinkMXFault.parse(text, profiles: set.profiles) {
            case .failure(let e): complain("--mx-fault \(text): \(e.message)"); return 2
            case .success(let f):
                let provider = policy.providers[f.providerIndex]
                var delay = 0.0
                if case .slow(let d) = f.kind { delay = d }
                provider.mxFaults[f.mx] = SinkMXFaultState(kind: f.kind, afterNanos: SinkProvider.nanos(f.afterSeconds, scale),
                                                           delayNanos: SinkProvider.nanos(delay, scale))
            }
        }
        let shared = SinkShared(policy: policy)
        shared.dnsFaults = options.dnsFaults
        if let cert = options.tlsCert, let key = options.tlsKey {
            do { shared.tlsContext = try TLSContext.server(certificateFile: cert, keyFile: key) } catch {
                complain("--tls-cert/--tls-key: \(error)"); return 1
            }
        }
        for spec in options.dkimKeys {
            let parts = spec.split(separator: ":", maxSplits: 2).map(String.init)
            do {
                let key = try DKIMPublicKey.load(path: parts[2])
                shared.dkimKeys["\(parts[1])._domainkey.\(parts[0].lowercased())"] = key
            } catch {
                complain("--dkim-key \(spec): \(error)"); return 1
            }
        }
        for p in set.profiles where p.bulkSender.isActive && !options.quiet {
            // Said either way, so a scenario's log shows whether the rules were enforced in its run.
            if options.dkimKeys.isEmpty {
                fputs("peregrine-sink: <isp \(p.name)>: require-dkim/-dmarc-alignment/-list-unsubscribe not enforced: "
                      + "no --dkim-key DOMAIN:SELECTOR:PUBKEYFILE to verify signatures with\n", stderr)
            } else {
                fputs("peregrine-sink: <isp \(p.name)>: bulk-sender rules enforced\n", stderr)
            }
        }
        if let path = options.recordIds {
            do { try shared.recordIds(to: path) } catch { complain("--record-ids: \(error)"); return 1 }
        }
        if let reports = options.asyncReports { shared.asyncReports = SinkAsyncReports(options: reports) }
        Posix.ignoreSIGPIPE()
        return open(options.backend.loopType, options: options, shared: shared, bindings: bindings)
    }

    /// SIGTERM/SIGINT stop the sink (it prints its counters first).
    static let stopSignals: [Int32] = [SIGTERM, SIGINT]

    static func open<L: EventLoop>(_ type: L.Type, options: SinkOptions, shared: SinkShared, bindings: [SinkBinding]) -> Int32 {
        SinkRunner<L>(options: options, shared: shared, bindings: bindings).run()
    }
}

/// Starts the loops (a LoopGroup), sets each up in turn, waits for a signal, stops, reports.
final class SinkRunner<L: EventLoop>: @unchecked Sendable {
    let options: SinkOptions
    let shared: SinkShared
    var bindings: [SinkBinding]
    private var servers: [SinkServer<L>] = []

    init(options: SinkOptions, shared: SinkShared, bindings: [SinkBinding]) {
        self.options = options
        self.shared = shared
        self.bindings = bindings
    }

    func run() -> Int32 {
        // SIGTERM/SIGINT are blocked in every thread (see SinkMain.run): a
        // TERM during start-up stays pending and is taken by the wait below.
        let group: LoopGroup<L>
        do { group = try LoopGroup(count: options.threads, name: "sink-loop") } catch {
            SinkMain.complain("\(error)")
            return 1
        }
        // Loop 0 binds first: with --port 0 its ports are what the others reuse.
        var notes: [String] = []
        for (index, loop) in group.loops.enumerated() {
            let setUp = DispatchSemaphore(value: 0)
            let outcome = Locked<(notes: [String], error: String?)>(([], nil))
            loop.execute { [self] in
                let r = listen(on: loop, index: index)
                outcome.withLock { $0 = r }
                setUp.signal()
            }
            setUp.wait()
            let result = outcome.withLock { $0 }
            notes += result.notes
            if let e = result.error {
                SinkMain.complain(e)
                stopAll(group)
                return 1
            }
        }
        if !options.quiet {
            for note in notes { SinkMain.say(note) }
        }
        SinkMain.say("peregrine-sink: ready (backend \(L.kind), \(options.threads) thread\(options.threads == 1 ? "" : "s"), time-scale \(shared.policy.timeScale))")
        fflush(stdout)

        _ = ProcessSignals.wait(SinkMain.stopSignals)
        stopAll(group)
        shared.finishIds()
        shared.asyncReports?.finish()
        SinkMain.say(String(decoding: shared.statsJSON(pretty: true), as: UTF8.self))
        fflush(stdout)
        return 0
    }

    /// On `loop`'s thread: its listeners (and on loop 0 the stats and DNS
    /// ports); the start-up lines to print, or why it could not.
    private func listen(on loop: L, index: Int) -> (notes: [String], error: String?) {
        let server = SinkServer(loop: loop, shared: shared)
        var notes: [String] = []
        do {
            let bound = try server.listen(bindings, reusePort: options.threads > 1)
            if index == 0 {
                bindings = bound   // concrete ports for the other loops
                for b in bound {
                    notes.append("peregrine-sink: listening \(shared.policy.providers[b.providerIndex].profile.name) \(b.address)")
                }
                if let s = options.stats {
                    let a = try server.serveStats(on: try SocketAddress(parsing: s))
                    notes.append("peregrine-sink: stats http://\(a)/stats")
                }
                if let d = options.dns {
                    let a = try server.serveDNS(on: try SocketAddress(parsing: d))
                    notes.append("peregrine-sink: dns \(a)")
                }
            }
        } catch {
            server.shutdown()
            return ([], "listen: \(error)")
        }
        servers.append(server)
        return (notes, nil)
    }

    /// Closes every server on its loop, stops the loops and waits for their threads.
    private func stopAll(_ group: LoopGroup<L>) {
        for (loop, server) in zip(group.loops, servers) {
            loop.execute {
                server.shutdown()
                loop.stop()
            }
        }
        // Loops set up no server (a failed start-up): nothing to close there.
        for loop in group.loops.dropFirst(servers.count) { loop.stop() }
        group.join()
    }
}
