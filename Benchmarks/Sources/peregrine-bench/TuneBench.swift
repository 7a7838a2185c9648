import Foundation
#if canImport(Glibc)
import Glibc
#endif
import PeregrineAccounting

/// `peregrine-bench tune --isp NAME` (issue 19): searches the per-domain
/// settings that deliver the most per hour to one provider profile of the
/// sink with no avoidable deferrals, by running Peregrine against a fresh sink
/// many times with short runs, and writes the `<domain>` block it chose.
///
/// Every trial is a new sink (that provider's profile only, so no limit or
/// penalty carries over) and a new daemon whose queue for the provider's
/// domains goes to the sink's MX hosts (`smtp-hosts`, in the profile's MX order); loadgen queues `--count`
/// messages faster than any provider takes them, and the trial ends when the
/// queue has drained. The sink's `/stats` says why it deferred what it
/// deferred; `random-failure` is the only reason the sender cannot avoid.
///
/// The search, one setting at a time over ladders of round values (binary
/// search: a setting that causes its kind of deferral fails, and so does
/// every larger value):
///  1. `max-msg-rate` with 3 connections of 10 messages: highest without
///     rate deferrals (`max-msg-rate`, `penalty-box`, `max-domain-msg-rate`,
///     `escalated`, `warm-up`), and only if the daemon delivered at least 80%
///     of the rate (a rate a loaded machine never reached proves nothing; a
///     trial short of it runs again with 5 connections);
///  2. `max-smtp-out` at that rate: highest without connection refusals;
///  3. `max-msg-per-connection` on one connection (so one connection carries
///     the whole run): highest without per-connection deferrals;
///  4. the three together, run to the end: its delivered rate and deferral
///     count are the figures of the preset; a deferral steps its setting down
///     and the check runs again;
///  5. backoff, with the deferral text phase 1 saw as a `mode=backoff` pattern
///     (or an unpaced run provokes, when phase 1 never tripped the limit):
///     each trial trips the limit once, then runs phase 4's settings with the
///     rule; first how long to hold (`backoff-max-msg-rate 0`; retries and the
///     way back to normal after that long), then the highest trickle
///     (`backoff-max-msg-rate`) the box lets through without more refusals
///     (`searchBackoff`). None is written when no hold up to 4 h recovers.
/// A failing trial stops as soon as its kind of deferral shows, which keeps
/// runs short (and a provider's penalty from escalating).
///
/// The sink runs at `--time-scale` (0.01: an hour is 36 s); the daemon's
/// rates and durations are scaled the same way, and the preset is written
/// in real units (50 messages a second at 0.01 is 1800/h).
func runTuneBench(arguments: [String]) -> Int32 {
    let usage = """
    usage: peregrine-bench tune --isp NAME | --isps all|NAME,NAME… [--backend epoll|io_uring|dispatch]
                                [--count N] [--time-scale X] [--trial-deadline S] [--seed N]
                                [--output-dir DIR] [--presets-dir DIR] [--no-presets] [--no-backoff]
           peregrine-bench tune --isp NAME --backoff-trial LENGTH[@RATE] --chosen OUT,PER-CONNECTION,RATE --pattern REGEX
      --isp NAME         one provider profile of the sink (gmail, yahoo, outlook, icloud, comcast, gmx, orange)
      --isps LIST        several, one after the other (all: every shipped profile)
      --count N          messages per trial (default 1000: well past every profile's burst)
      --time-scale X     the sink's time scale (default 0.01); the daemon's rates and times follow it
      --trial-deadline S seconds a trial may take before it counts as failed (default 150)
      --presets-dir DIR  where the <domain> blocks go, one DIR/NAME.conf per provider (default examples/presets)
      --no-presets       write results only
      --no-backoff       skip phase 5 (the backoff rule: how long, and at what backoff-max-msg-rate)
      --backoff-trial L[@R]  run only one phase-5 trial: backoff for L (e.g. 90m) at backoff-max-msg-rate R
                         (e.g. 12/h; default 0, the hold), after settings --chosen (max-smtp-out,
                         max-msg-per-connection, max-msg-rate per hour, e.g. 20,20,3600) and the rule
                         --pattern (e.g. '\\[TSS04\\]'); prints the trial, writes nothing
                         (PEREGRINE_BENCH_KEEP=1 keeps its logs)
    """
    let defaults = ["isp": "", "isps": "", "backend": "epoll", "count": "1000", "time-scale": "0.01",
                    "trial-deadline": "150", "seed": "1", "output-dir": "results", "presets-dir": "examples/presets",
                    "backoff-trial": "", "chosen": "", "pattern": ""]
    let options: ScenarioOptions
    switch ScenarioOptions.parse(arguments, defaults: defaults, flags: ["no-presets", "no-backoff"], usage: usage) {
    case .success(let o): options = o
    case .failure(let e): fputs("peregrine-bench tune: \(e.message)\n", stderr); return 2
    }
    let providers: [IspMixProvider]
    let settings: TuneRun.Settings
    do {
        let isp = options.string("isp"), isps = options.string("isps")
        guard isp.isEmpty != isps.isEmpty else { throw BenchUsageError("give --isp NAME or --isps LIST (not both)\n\(usage)") }
        providers = try IspMixProvider.select(isp.isEmpty ? isps : isp)
        let backends = try options.backends()
        guard backends.count == 1 else { throw BenchUsageError("--backend: tune runs one backend") }
        let scale = try options.double("time-scale")
        guard scale > 0, scale <= 1 else { throw BenchUsageError("--time-scale needs a number in (0, 1]") }
        let count = try options.int("count")
        guard count >= 100 else { throw BenchUsageError("--count needs at least 100 (the profiles allow bursts of 100)") }
        settings = TuneRun.Settings(backend: backends[0], count: count, timeScale: scale,
                                    trialDeadline: try options.double("trial-deadline"), seed: options.string("seed"),
                                    outputDir: options.string("output-dir"),
                                    presetsDir: options.flags.contains("no-presets") ? nil : options.string("presets-dir"),
                                    backoff: !options.flags.contains("no-backoff"))
    } catch let e as BenchUsageError {
        fputs("peregrine-bench tune: \(e.message)\n", stderr)
        return 2
    } catch {
        fputs("peregrine-bench tune: \(error)\n", stderr)
        return 2
    }
    if !options.string("backoff-trial").isEmpty {
        return runOneBackoffTrial(providers: providers, settings: settings, options: options)
    }
    var rows: [[String]] = []
    var failed = false
    for provider in providers {
        do {
            let outcome = try TuneRun(provider: provider, settings: settings).run()
            rows.append(outcome.row)
            if !outcome.ok { failed = true }
        } catch {
            fputs("peregrine-bench tune \(provider.name): \(error)\n", stderr)
            rows.append([provider.name, "-", "-", "-", "-", "-", "-", "error"])
            failed = true
        }
    }
    printBenchTable(title: "tune: the settings that deliver most without avoidable deferrals (sink time-scale \(settings.timeScale), real units)",
                    header: ["provider", "max-smtp-out", "max-msg-per-connection", "max-msg-rate", "backoff (length, rate)",
                             "delivered/h", "avoidable deferrals", "result"], rows: rows)
    return failed ? 1 : 0
}

/// `--backoff-trial`: one provoked backoff trial, as phase 5 runs it, to
/// look at one rule without the whole search (about a minute instead of an hour).
func runOneBackoffTrial(providers: [IspMixProvider], settings: TuneRun.Settings, options: ScenarioOptions) -> Int32 {
    let spec = options.string("backoff-trial").split(separator: "@", maxSplits: 1).map(String.init)
    let chosen = options.string("chosen").split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: "/h", with: "")) }
    let rate = spec.count > 1 ? Int(spec[1].replacingOccurrences(of: "/h", with: "")) : 0
    guard providers.count == 1, let seconds = TuneRun.seconds(fromDuration: spec[0]), let rate,
          chosen.count == 3, let out = chosen[0], let perConnection = chosen[1], let perHour = chosen[2], perHour > 0,
          !options.string("pattern").isEmpty else {
        fputs("peregrine-bench tune: --backoff-trial L[@R] needs one --isp, --chosen OUT,PER-CONNECTION,RATE (rate > 0) and --pattern REGEX\n", stderr)
        return 2
    }
    do {
        let run = TuneRun(provider: providers[0], settings: settings)
        let t = try run.backoffTrial("backoff (one trial)", pattern: options.string("pattern"),
                                     chosen: TuneRun.Candidate(maxSMTPOut: out, maxMsgPerConnection: perConnection, ratePerHour: perHour),
                                     seconds: seconds, rate: rate) { phase, c, stopOn, reloadTo, late, deadline in
            try TuneTrial(provider: providers[0], settings: settings, candidate: c, phase: phase, stopOn: stopOn,
                          reloadTo: reloadTo, stopAfterLateRefusals: late, deadline: deadline).run()
        }
        fputs("   \(t.phase): \(TuneRun.describe(t.candidate)) → \(t.summaryLine), refusals \(t.tripRefusals) at the trip"
              + (t.trippedAfter.map { " (\(Int($0.rounded())) s in)" } ?? "") + " + "
              + "\(t.lateRefusals) late\(t.reloaded ? "" : ", NOT reloaded"), \(String(format: "%.1f", t.scaledSeconds)) s\n", stderr)
        if let data = try? JSONSerialization.data(withJSONObject: t.json, options: [.sortedKeys]) {
            print(String(decoding: data, as: UTF8.self))
        }
        return t.drained ? 0 : 1
    } catch {
        fputs("peregrine-bench tune: \(error)\n", stderr)
        return 1
    }
}

/// The kinds of sink deferral the search tells apart (by the sink's reason names).
enum TuneDeferralKind: String, CaseIterable {
    case rate, connections, perConnection = "per-connection", other, unavoidable

    init(sinkReason: String) {
        switch sinkReason {
        case "max-msg-rate", "penalty-box", "max-domain-msg-rate", "escalated", "warm-up": self = .rate
        case "max-connections", "max-connection-rate": self = .connections
        case "max-msg-per-connection": self = .perConnection
        // The sink fails this share of transactions whatever the sender does.
        case "random-failure": self = .unavoidable
        default: self = .other
        }
    }
}

/// One provider's search.
struct TuneRun {
    struct Settings {
        var backend: String
        var count: Int
        var timeScale: Double
        var trialDeadline: Double
        var seed: String
        var outputDir: String
        var presetsDir: String?
        var backoff: Bool
    }

    /// What a trial configures for the provider's queue (real units).
    struct Candidate: Equatable {
        var maxSMTPOut: Int
        var maxMsgPerConnection: Int
        /// Messages per real hour; 0 = no max-msg-rate.
        var ratePerHour: Int
        /// The backoff rule: pattern (regex) → mode=backoff; nil = none.
        var backoffPattern: String? = nil
        /// backoff-retry-after and backoff-to-normal-after, real seconds: how long backoff lasts.
        var backoffSeconds: Int = 0
        /// backoff-max-msg-rate, messages per real hour; 0 = hold (`backoff-max-msg-rate 0`).
        var backoffRatePerHour: Int = 0

        var json: [String: Any] {
            var j: [String: Any] = ["max-smtp-out": maxSMTPOut, "max-msg-per-connection": maxMsgPerConnection,
                                    "max-msg-rate": ratePerHour == 0 ? "unlimited" : "\(ratePerHour)/h"]
            if let p = backoffPattern {
                j["backoff-pattern"] = p
                j["backoff-retry-after"] = TuneRun.durationText(backoffSeconds)
                j["backoff-to-normal-after"] = TuneRun.durationText(backoffSeconds)
                j["backoff-max-msg-rate"] = TuneRun.backoffRateText(backoffRatePerHour)
            }
            return j
        }
    }

    /// The ladders the search climbs (round values an operator would write).
    static let rateLadder = [300, 600, 900, 1200, 1800, 2700, 3600, 5400, 7200, 10_800, 14_400, 21_600, 36_000]
    static let connectionLadder = [1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50]
    static let perConnectionLadder = [5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 200, 500]
    /// How long backoff lasts (backoff-retry-after = backoff-to-normal-after), real seconds (15 min … 4 h).
    static let backoffLadder = [900, 1800, 3600, 5400, 7200, 14_400]
    /// backoff-max-msg-rate candidates, messages per real hour (a trickle: one every 5 min … 10 a minute).
    static let trickleLadder = [12, 30, 60, 120, 300, 600]
    /// The share of a trial's max-msg-rate it must deliver for a rate to count as safe.
    static let reachedShare = 0.8
    /// Rate refusals a provoked run may show after the trip settled (the refusals
    /// in the second after the first one are the trip's: every open connection's
    /// transaction in flight). A rule that waits the box out draws none; one
    /// that comes back early draws a refusal per open connection each time.
    static let acceptableLateRefusals = 2

    let provider: IspMixProvider
    let settings: Settings

    struct Outcome { var row: [String]; var ok: Bool }

    func run() throws -> Outcome {
        // One rig for the run's clock and results file; each trial has its own.
        let rig = try ScenarioRig(scenario: "tune")
        defer { rig.cleanUp() }
        fputs("== tune \(provider.name) on \(settings.backend): \(settings.count) messages a trial, time-scale \(settings.timeScale)\n", stderr)
        var trials: [TuneTrial.Result] = []
        func trial(_ phase: String, _ c: Candidate, stopOn: Set<TuneDeferralKind>, reloadTo: Candidate? = nil,
                   stopAfterLateRefusals: Int? = nil, deadline: Double? = nil) throws -> TuneTrial.Result {
            let r = try TuneTrial(provider: provider, settings: settings, candidate: c, phase: phase, stopOn: stopOn,
                                  reloadTo: reloadTo, stopAfterLateRefusals: stopAfterLateRefusals, deadline: deadline).run()
            trials.append(r)
            fputs("   \(phase): \(Self.describe(reloadTo ?? c)) → \(r.summaryLine)"
                  + (reloadTo == nil ? "" : ", refusals \(r.tripRefusals) at the trip"
                     + (r.trippedAfter.map { " (\(Int($0.rounded())) s in)" } ?? "")
                     + " + \(r.lateRefusals) late\(r.reloaded ? "" : ", NOT reloaded")") + "\n", stderr)
            return r
        }

        // 1. Rate.
        var rateTexts: [String] = []
        // A rate passes only if the daemon really sent at it: on a loaded machine
        // it may fall short, and a rate never reached proves nothing about the
        // provider's limit. Short of 80% (pacing alone loses ~10%), the trial is
        // run once more, then counts as failed.
        let rate = try Self.highestPassing(Self.rateLadder) { r in
            for attempt in 1...2 {
                // Again with 5 connections: on a loaded machine a transaction takes tens of
                // milliseconds and 3 connections cannot carry 100 messages a (scaled) second.
                let t = try trial(attempt == 1 ? "rate" : "rate (again with 5 connections: short of the rate)",
                                  Candidate(maxSMTPOut: attempt == 1 ? 3 : 5, maxMsgPerConnection: 10, ratePerHour: r), stopOn: [.rate])
                rateTexts += t.texts[.rate] ?? []
                if t.count(.rate) > 0 { return false }
                if t.realPerHour >= Double(r) * Self.reachedShare { return true }
            }
            return false
        }
        // No rate deferral even at the top of the ladder: the provider sets no rate limit we could find.
        let chosenRate = rate.map { $0 == Self.rateLadder.last ? 0 : $0 } ?? Self.rateLadder[0]
        // 2. Connections, at that rate.
        let connections = try Self.highestPassing(Self.connectionLadder) { n in
            try trial("connections", Candidate(maxSMTPOut: n, maxMsgPerConnection: 10, ratePerHour: chosenRate),
                      stopOn: [.connections]).count(.connections) == 0
        } ?? 1
        // 3. Messages per connection, one connection carrying the run.
        let perConnection = try Self.highestPassing(Self.perConnectionLadder) { m in
            try trial("per-connection", Candidate(maxSMTPOut: 1, maxMsgPerConnection: m, ratePerHour: chosenRate),
                      stopOn: [.perConnection]).count(.perConnection) == 0
        } ?? Self.perConnectionLadder[0]

        // 4. Together, to the end; a deferral steps its own setting down.
        var chosen = Candidate(maxSMTPOut: connections, maxMsgPerConnection: perConnection, ratePerHour: chosenRate)
        var check = try trial("check", chosen, stopOn: [])
        for _ in 0..<3 where check.avoidable > 0 {
            var next = chosen
            if check.count(.connections) > 0 { next.maxSMTPOut = Self.stepDown(Self.connectionLadder, from: next.maxSMTPOut) }
            if check.count(.perConnection) > 0 { next.maxMsgPerConnection = Self.stepDown(Self.perConnectionLadder, from: next.maxMsgPerConnection) }
            if check.count(.rate) > 0 {
                next.ratePerHour = next.ratePerHour == 0 ? Self.rateLadder[Self.rateLadder.count - 2] : Self.stepDown(Self.rateLadder, from: next.ratePerHour)
            }
            if next == chosen { break }   // only deferrals no setting here can avoid
            chosen = next
            check = try trial("check", chosen, stopOn: [])
        }

        // 5. Backoff: what to do when the rate limit trips anyway.
        var backoffNote = "not searched"
        var backoffEvidence: [[String: Any]] = []
        if settings.backoff, chosen.ratePerHour > 0, rateTexts.isEmpty {
            // Phase 1 never tripped the limit (every rate it reached was under it): trip it
            // once, unpaced, for the provider's text, which the rule's pattern is made from.
            let t = try trial("provoke (for the rate deferral's text)",
                              Candidate(maxSMTPOut: min(5, chosen.maxSMTPOut), maxMsgPerConnection: 10, ratePerHour: 0), stopOn: [.rate])
            rateTexts += t.texts[.rate] ?? []
        }
        if settings.backoff, chosen.ratePerHour > 0, let pattern = Self.pattern(from: rateTexts) {
            let result = try searchBackoff(pattern: pattern, chosen: chosen) { phase, c, stopOn, reloadTo, late, deadline in
                try trial(phase, c, stopOn: stopOn, reloadTo: reloadTo, stopAfterLateRefusals: late, deadline: deadline)
            }
            backoffNote = result.note
            backoffEvidence = result.evidence
            if let rule = result.rule { chosen = rule }
        } else if settings.backoff {
            backoffNote = chosen.ratePerHour == 0 ? "no rate limit found" : "no rate deferral text seen"
        }

        let ok = check.avoidable == 0 && check.drained
        let realPerHour = check.realPerHour
        var figures: [String: Any] = [
            "provider": provider.name,
            "domains": provider.domains,
            "sinkProfile": "sink/profiles/\(provider.name).conf",
            "timeScale": settings.timeScale,
            "backend": settings.backend,
            "messagesPerTrial": settings.count,
            "objective": "most delivered per hour with no avoidable deferrals (every sink deferral but random-failure)",
            "chosen": chosen.json,
            "deliveredPerHour": Int(realPerHour.rounded()),
            "avoidableDeferrals": check.avoidable,
            "unavoidableDeferrals": check.count(.unavoidable),
            "checkTrial": check.json,
            "backoff": backoffNote,
            "backoffTrials": backoffEvidence,
            "rateDeferralTexts": Array(Set(rateTexts)).sorted().prefix(4).map { $0 },
            "trials": trials.map(\.json),
            "ok": ok,
            "summary": [["max-smtp-out", "\(chosen.maxSMTPOut)"], ["max-msg-per-connection", "\(chosen.maxMsgPerConnection)"],
                        ["max-msg-rate", chosen.ratePerHour == 0 ? "unlimited" : "\(chosen.ratePerHour)/h"],
                        ["backoff", backoffNote], ["delivered/h", "\(Int(realPerHour.rounded()))"],
                        ["avoidable deferrals", "\(check.avoidable)"], ["trials", "\(trials.count)"], ["result", ok ? "ok" : "FAIL"]],
        ]
        let resultPath = BenchEnvironment.runResultPath(directory: settings.outputDir, scenario: "tune", target: provider.name,
                                                        startedAt: rig.clock.startedAt)
        if let dir = settings.presetsDir, ok {
            let preset = Self.preset(provider: provider, chosen: chosen, resultsFile: "results/" + (resultPath as NSString).lastPathComponent,
                                     realPerHour: realPerHour, check: check, timeScale: settings.timeScale, backoffNote: backoffNote)
            try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let presetPath = dir + "/\(provider.name).conf"
            try preset.write(toFile: presetPath, atomically: true, encoding: .utf8)
            figures["preset"] = presetPath
            fputs("   wrote \(presetPath)\n", stderr)
            print(preset)
        }
        rig.writeResult(target: provider.name, figures: figures, outputDir: settings.outputDir)
        return Outcome(row: [provider.name, "\(chosen.maxSMTPOut)", "\(chosen.maxMsgPerConnection)",
                             chosen.ratePerHour == 0 ? "unlimited" : "\(chosen.ratePerHour)/h",
                             chosen.backoffPattern == nil ? "-" : Self.durationText(chosen.backoffSeconds)
                                + ", " + Self.backoffRateText(chosen.backoffRatePerHour),
                             "\(Int(realPerHour.rounded()))", "\(check.avoidable)", ok ? "ok" : "FAIL"], ok: ok)
    }

    /// Phase 5. Each trial provokes the limit once (up to 5 connections, no
    /// max-msg-rate) with the rule under test in force, then reloads the
    /// daemon with the settings phase 4 chose plus that rule, so a trial shows
    /// what the rule does after a trip: how many refusals it draws once the
    /// trip has settled, whether the provider escalates, whether all drains.
    ///  a. How long to back off: hold (`backoff-max-msg-rate 0`) for each
    ///     length on a ladder; the shortest that draws no more than
    ///     `acceptableLateRefusals` late refusals and drains is the box's length.
    ///  b. What to send meanwhile: a trickle on a ladder of low rates for that
    ///     length; the highest that draws no more late refusals than the hold
    ///     did is written (a provider whose box lets a trickle through,
    ///     Outlook's, gets one; a hard box, Yahoo's or Gmail's, gets the hold).
    /// Each trial has time for its box plus three times the drain at the safe
    /// rate, counted from the trip (TuneTrial.deadline says why).
    func searchBackoff(pattern: String, chosen: Candidate,
                       trial: (String, Candidate, Set<TuneDeferralKind>, Candidate?, Int?, Double?) throws -> TuneTrial.Result)
        throws -> (rule: Candidate?, note: String, evidence: [[String: Any]]) {
        var evidence: [[String: Any]] = []
        func run(_ phase: String, seconds: Int, rate: Int) throws -> TuneTrial.Result {
            let t = try backoffTrial(phase, pattern: pattern, chosen: chosen, seconds: seconds, rate: rate, trial: trial)
            evidence.append(["backoff": Self.durationText(seconds), "backoff-max-msg-rate": Self.backoffRateText(rate),
                             "tripRefusals": t.tripRefusals, "lateRefusals": t.lateRefusals,
                             "escalated": t.deferrals["escalated", default: 0], "drained": t.drained,
                             "reloaded": t.reloaded, "seconds": t.scaledSeconds, "trippedAfter": t.trippedAfter ?? -1])
            return t
        }
        func passes(_ t: TuneTrial.Result, lateAllowed: Int) -> Bool {
            t.reloaded && t.tripRefusals > 0 && t.drained && t.deferrals["escalated", default: 0] == 0 && t.lateRefusals <= lateAllowed
        }
        // a. The hold.
        var hold: (seconds: Int, late: Int)? = nil
        for seconds in Self.backoffLadder {
            let t = try run("backoff (hold)", seconds: seconds, rate: 0)
            if passes(t, lateAllowed: Self.acceptableLateRefusals) { hold = (seconds, t.lateRefusals); break }
        }
        guard let hold else {
            return (nil, "none written: no hold up to \(Self.durationText(Self.backoffLadder.last ?? 0)) recovered without escalation "
                    + "or more than \(Self.acceptableLateRefusals) late refusals (see backoffTrials)", evidence)
        }
        // b. The trickle.
        var trickle = 0
        for rate in Self.trickleLadder {
            let t = try run("backoff (trickle)", seconds: hold.seconds, rate: rate)
            // No more refusals than the hold drew: a hard box refuses every trickle.
            guard passes(t, lateAllowed: hold.late) else { break }
            trickle = rate
        }
        var rule = chosen
        rule.backoffPattern = pattern
        rule.backoffSeconds = hold.seconds
        rule.backoffRatePerHour = trickle
        let note = "\(Self.durationText(hold.seconds)) at " + (trickle == 0 ? "0 (hold: the box refuses even the slowest trickle)" : "\(trickle)/h")
            + " (\(hold.late) late refusals with the hold)"
        return (rule, note, evidence)
    }

    /// One provoked trial of a rule: backoff for `seconds` at `rate` per hour after `chosen`.
    func backoffTrial(_ phase: String, pattern: String, chosen: Candidate, seconds: Int, rate: Int,
                      trial: (String, Candidate, Set<TuneDeferralKind>, Candidate?, Int?, Double?) throws -> TuneTrial.Result)
        throws -> TuneTrial.Result {
        let drainSeconds = Double(settings.count) * 3600 / Double(chosen.ratePerHour) * settings.timeScale
        var rule = chosen
        rule.backoffPattern = pattern
        rule.backoffSeconds = seconds
        rule.backoffRatePerHour = rate
        // Unpaced (a paced run may never reach the limit on a loaded machine), with the rule already in force.
        var provoke = rule
        provoke.maxSMTPOut = min(5, chosen.maxSMTPOut)
        provoke.maxMsgPerConnection = 10
        provoke.ratePerHour = 0
        let deadline = 20 + Double(seconds) * settings.timeScale + 3 * drainSeconds
        let t = try trial(phase, provoke, [], rule, Self.acceptableLateRefusals, deadline)
        // A run that never tripped the limit says nothing about the rule.
        if t.tripRefusals == 0 { return try trial(phase + " (again: never tripped)", provoke, [], rule, Self.acceptableLateRefusals, deadline) }
        return t
    }

    /// `90m`, `2h`, `900s`, `900` as seconds.
    static func seconds(fromDuration text: String) -> Int? {
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86_400]
        guard let last = text.last else { return nil }
        if let u = units[last] { return Int(text.dropLast()).map { $0 * u } }
        return Int(text)
    }

    /// The highest ladder value for which `passes` holds, assuming that once a
    /// value fails every larger one does (binary search); nil when the first fails.
    static func highestPassing(_ ladder: [Int], _ passes: (Int) throws -> Bool) rethrows -> Int? {
        var lo = -1, hi = ladder.count
        while hi - lo > 1 {
            let mid = (lo + hi) / 2
            if try passes(ladder[mid]) { lo = mid } else { hi = mid }
        }
        return lo >= 0 ? ladder[lo] : nil
    }

    static func stepDown(_ ladder: [Int], from v: Int) -> Int { ladder.last { $0 < v } ?? ladder[0] }
    static func stepUp(_ ladder: [Int], from v: Int) -> Int { ladder.first { $0 > v } ?? v * 2 }

    /// A regex for the rate deferrals seen: the provider's own tag when the
    /// texts carry one (`[TSS04]`, `(S775)`), else their enhanced status code.
    static func pattern(from texts: [String]) -> String? {
        guard let text = texts.first else { return nil }
        let escape: (Substring) -> String = { s in
            s.map { "\\^$.|?*+()[]{}".contains($0) ? "\\\($0)" : String($0) }.joined()
        }
        // A bracketed tag of letters and digits, e.g. [TSS04] or (S775).
        if let r = text.range(of: #"[\[(][A-Z]{1,4}[0-9]{2,6}[\])]"#, options: .regularExpression) { return escape(text[r]) }
        if let r = text.range(of: #"[245]\.[0-9]{1,3}\.[0-9]{1,3}"#, options: .regularExpression) { return escape(text[r]) }
        return nil
    }

    /// `0` (hold) or a rate per hour.
    static func backoffRateText(_ perHour: Int) -> String { perHour == 0 ? "0" : "\(perHour)/h" }

    static func durationText(_ seconds: Int) -> String {
        if seconds % 3600 == 0 { return "\(seconds / 3600)h" }
        if seconds % 60 == 0 { return "\(seconds / 60)m" }
        return "\(seconds)s"
    }

    static func describe(_ c: Candidate) -> String {
        "max-smtp-out \(c.maxSMTPOut), max-msg-per-connection \(c.maxMsgPerConnection), max-msg-rate "
            + (c.ratePerHour == 0 ? "unlimited" : "\(c.ratePerHour)/h")
            + (c.backoffPattern.map { ", /\($0)/ mode=backoff for \(durationText(c.backoffSeconds)) at \(backoffRateText(c.backoffRatePerHour))" } ?? "")
    }

    /// The macro name a preset defines (its own, so presets can be included side by side).
    static func macro(_ provider: IspMixProvider) -> String { "preset-" + provider.name }

    /// The shipped preset: a PowerMTA-syntax block in real units, naming its results file.
    static func preset(provider: IspMixProvider, chosen: Candidate, resultsFile: String, realPerHour: Double,
                       check: TuneTrial.Result, timeScale: Double, backoffNote: String) -> String {
        var lines = [
            "# \(provider.name): per-domain settings from `peregrine-bench tune --isp \(provider.name)`",
            "# against peregrine-sink's sink/profiles/\(provider.name).conf at time-scale \(timeScale).",
            "# Results: \(resultsFile)",
            "# Measured with these settings: \(Int(realPerHour.rounded())) delivered per hour, \(check.avoidable) avoidable deferrals.",
            "# The sink's limits are partly operator folklore (see the profile): a starting point, not a promise.",
            "# Use: include presets/\(provider.name).conf (from the main config). Generated: re-run tune rather than edit.",
            // What phase 5 found, rule or none, with its evidence (the results file lists every trial).
            "# Backoff: \(backoffNote).",
            "domain-macro \(macro(provider)) \(provider.domains.joined(separator: ","))",
        ]
        if let p = chosen.backoffPattern {
            lines += ["<smtp-pattern-list \(macro(provider))>",
                      "    reply /\(p)/ mode=backoff",
                      "</smtp-pattern-list>"]
        }
        lines.append("<domain $\(macro(provider))>")
        // The provider's domains share its MX hosts and its limits: one connection budget for all of them.
        if provider.domains.count > 1 { lines.append("    mx-rollup yes") }
        lines.append("    max-smtp-out \(chosen.maxSMTPOut)")
        lines.append("    max-msg-per-connection \(chosen.maxMsgPerConnection)")
        if chosen.ratePerHour > 0 { lines.append("    max-msg-rate \(chosen.ratePerHour)/h") }
        if chosen.backoffPattern != nil {
            lines.append("    smtp-pattern-list \(macro(provider))")
            lines.append("    backoff-retry-after \(durationText(chosen.backoffSeconds))")
            lines.append("    backoff-to-normal-after \(durationText(chosen.backoffSeconds))")
            lines.append("    backoff-max-msg-rate \(backoffRateText(chosen.backoffRatePerHour))")
        }
        lines.append("</domain>")
        return lines.joined(separator: "\n") + "\n"
    }
}

/// One run of the sink and the daemon with one candidate.
struct TuneTrial {
    let provider: IspMixProvider
    let settings: TuneRun.Settings
    let candidate: TuneRun.Candidate
    let phase: String
    /// Deferral kinds that end the trial at once (it has failed).
    let stopOn: Set<TuneDeferralKind>
    /// A provoked run (phase 5): at the first rate deferral the daemon is
    /// reloaded with these settings (the safe rate, the rule under test), so
    /// the trip is provoked once and what follows is the rule's doing.
    var reloadTo: TuneRun.Candidate? = nil
    /// Ends the trial (failed) once this many rate refusals came after the trip
    /// settled, or at the first escalation to a permanent refusal.
    var stopAfterLateRefusals: Int? = nil
    /// Seconds the trial may take; nil = the run's --trial-deadline. A
    /// provoked run's are counted from the trip once it came: what follows the
    /// trip is what is measured, and the trip may come late. The sink's
    /// random failures carry the provider's rate text (Yahoo's [TSS04]), so
    /// one before the trip puts the daemon in backoff under the rule already
    /// in force, and the trip comes only after that hold. Counted from the
    /// start, a 90m hold (54 s) then left no time for the trip's own hold and
    /// the drain: 0 late refusals, peak 5 connections, "NOT drained" (the
    /// yahoo run of 2026-12-05, reproduced with --backoff-trial 90m).
    var deadline: Double? = nil

    struct Result {
        var phase: String
        /// The settings under test (a provoked run's after its reload).
        var candidate: TuneRun.Candidate
        /// A provoked run's settings before the reload (unpaced, to trip the limit).
        var provokedWith: TuneRun.Candidate?
        var deferrals: [String: Int]
        var texts: [TuneDeferralKind: [String]]
        var delivered: Int
        var injected: Int
        var drained: Bool
        var stoppedEarly: Bool
        var scaledSeconds: Double
        /// Delivered per real hour: first to last first-attempt arrival at the sink, scaled back.
        var realPerHour: Double
        var transientRecords: Int
        var peakConnections: Int
        var maxOnOneConnection: Int
        /// Provoked runs: rate refusals in the second after the first one (the
        /// trip's), the ones after it (the rule's), and whether the reload took.
        var tripRefusals = 0
        var lateRefusals = 0
        var reloaded = false
        /// Seconds from the trial's start to the trip (provoked runs; nil: never tripped).
        var trippedAfter: Double? = nil

        func count(_ kind: TuneDeferralKind) -> Int {
            deferrals.reduce(0) { $0 + (TuneDeferralKind(sinkReason: $1.key) == kind ? $1.value : 0) }
        }
        var avoidable: Int { deferrals.reduce(0) { $0 + (TuneDeferralKind(sinkReason: $1.key) == .unavoidable ? 0 : $1.value) } }

        var summaryLine: String {
            (stoppedEarly ? "stopped at the first \(deferrals.keys.sorted().joined(separator: "/")) deferral" : drained ? "drained" : "NOT drained")
                + ", \(delivered)/\(injected) delivered, \(Int(realPerHour.rounded()))/h, deferrals "
                + (deferrals.isEmpty ? "0" : deferrals.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " "))
                + ", peak \(peakConnections) connections, \(maxOnOneConnection) on one"
        }

        var json: [String: Any] {
            ["phase": phase, "settings": candidate.json, "deferrals": deferrals, "avoidable": avoidable,
             "delivered": delivered, "injected": injected, "drained": drained, "stoppedEarly": stoppedEarly,
             "seconds": scaledSeconds, "deliveredPerHour": Int(realPerHour.rounded()), "transientRecords": transientRecords,
             "peakConnections": peakConnections, "maxMessagesOnOneConnection": maxOnOneConnection,
             "tripRefusals": tripRefusals, "lateRefusals": lateRefusals, "reloaded": reloaded,
             "trippedAfter": trippedAfter ?? -1,
             "provokedWith": provokedWith?.json ?? [:],
             "deferralTexts": Dictionary(uniqueKeysWithValues: texts.map { ($0.key.rawValue, Array($0.value.prefix(2))) })]
        }
    }

    func run() throws -> Result {
        let rig = try ScenarioRig(scenario: "tune")
        defer { rig.cleanUp() }
        let root = packageRoot()
        let statsPort = rig.ports.stats, mtaPort = rig.ports.mta, mgmtPort = rig.ports.mgmt
        let sinkIDs = rig.work + "/sink-ids.txt"
        let cert = try BenchCertificate.make(in: rig.work, commonName: "mx.sink")
        // Only this provider's profile; every MX address on a port of the kernel's choosing.
        let sink = try rig.startSink(["--profile", root + "/sink/profiles/\(provider.name).conf", "--port", "0",
                                      "--stats-port", "\(rig.ip):\(statsPort)", "--record-ids", sinkIDs,
                                      "--time-scale", "\(settings.timeScale)", "--seed", settings.seed, "--backend", "epoll"]
                                     + cert.sinkArguments)
        let mx = Self.listeners(log: (try? String(contentsOfFile: sink.logPath, encoding: .utf8)) ?? "", provider: provider.name)
        guard !mx.isEmpty else {
            throw ScenarioRig.Failure(description: "the sink named no listener for \(provider.name): \(sink.logTail)")
        }
        let acct = rig.work + "/acct.csv"
        let configPath = rig.work + "/peregrine.conf"
        func writeConfig(_ c: TuneRun.Candidate) throws {
            try config(c, ip: rig.ip, mtaPort: mtaPort, mgmtPort: mgmtPort, spool: rig.work + "/spool", acct: acct, mx: mx)
                .write(toFile: configPath, atomically: true, encoding: .utf8)
        }
        try writeConfig(candidate)
        let daemon = try rig.startDaemon(configPath: configPath, backend: settings.backend, smtpPort: mtaPort)

        let start = Date()
        let loadIDs = rig.work + "/loadgen-ids.txt"
        let mix = provider.mix.map { "\($0.domain)=\($0.weight)" }.joined(separator: ",")
        // Faster than any profile takes mail, so the daemon's queue, not injection, sets the pace.
        let loadgen = try rig.start("loadgen", "peregrine-loadgen",
                                    ["--target", "\(rig.ip):\(mtaPort)", "--count", "\(settings.count)", "--rate", "2000/s",
                                     "--connections", "4", "--ids", loadIDs, "--seed", settings.seed, "--backend", "epoll",
                                     "--from", "news@peregrine.test", "--list-unsubscribe", "--domains", mix,
                                     "--json", rig.work + "/loadgen.json", "--no-progress"])
        var drained = false, stoppedEarly = false, reloaded = false
        var stats: [String: Any] = [:]
        var trippedAt: Date? = nil
        var tripRefusals: Int? = nil, rateRefusals = 0
        let trialDeadline = self.deadline ?? settings.trialDeadline
        while Date().timeIntervalSince(reloadTo == nil ? start : trippedAt ?? start) < trialDeadline {
            if let s = BenchNet.getJSON(ip: rig.ip, port: statsPort, path: "/stats") {
                stats = s
                let deferrals = Self.deferrals(s)
                if !stopOn.isEmpty, deferrals.contains(where: { stopOn.contains(TuneDeferralKind(sinkReason: $0.key)) }) {
                    stoppedEarly = true
                    break
                }
                rateRefusals = deferrals.reduce(0) { $0 + (TuneDeferralKind(sinkReason: $1.key) == .rate ? $1.value : 0) }
                if trippedAt == nil, rateRefusals > 0 {
                    trippedAt = Date()
                    if let next = reloadTo {
                        // The rule is in force already (the trip put the queue in backoff); from
                        // now on the normal rate is the safe one, so leaving backoff does not trip again.
                        try writeConfig(next)
                        kill(daemon.pid, SIGHUP)
                        reloaded = Self.waitForLine("reloaded ", in: daemon.logPath, timeout: 10)
                    }
                }
                if let t = trippedAt, tripRefusals == nil, Date().timeIntervalSince(t) >= 1 { tripRefusals = rateRefusals }
                if let limit = stopAfterLateRefusals,
                   deferrals["escalated", default: 0] > 0 || rateRefusals - (tripRefusals ?? rateRefusals) > limit {
                    stoppedEarly = true
                    break
                }
            }
            if !loadgen.isRunning, let s = rig.status(mgmtPort: mgmtPort) {
                let received = s["received"] as? Int ?? 0
                let settled = (s["delivered"] as? Int ?? 0) + (s["bounced"] as? Int ?? 0)
                let queued = s["queued"] as? [String: Any]
                let waiting = (queued?["ready"] as? Int ?? 0) + (queued?["delayed"] as? Int ?? 0)
                if received > 0 && settled >= received && waiting == 0 { drained = true; break }
            }
            if !daemon.isRunning { break }
            usleep(100_000)
        }
        let seconds = Date().timeIntervalSince(start)
        if let s = BenchNet.getJSON(ip: rig.ip, port: statsPort, path: "/stats") { stats = s }
        loadgen.stop()
        daemon.stop()
        sink.stop()   // flushes the id file

        let deferrals = Self.deferrals(stats)
        let finalRate = deferrals.reduce(0) { $0 + (TuneDeferralKind(sinkReason: $1.key) == .rate ? $1.value : 0) }
        let provStats = (stats["providers"] as? [String: Any])?[provider.name] as? [String: Any] ?? [:]
        let arrivals = Self.arrivals(sinkIDs)
        var texts: [TuneDeferralKind: [String]] = [:]
        var transient = 0
        if let rows = try? AccountingCSVReader.read(path: acct) {
            for row in rows where row["type"] == "t" || row["type"] == "tq" {
                transient += 1
                let diag = row["dsnDiag"] ?? ""
                let kind = Self.kind(ofText: diag, deferralsSeen: deferrals)
                if texts[kind, default: []].count < 4, !texts[kind, default: []].contains(diag) { texts[kind, default: []].append(diag) }
            }
        }
        let realPerHour = Self.realPerHour(arrivals: arrivals, retried: drained ? transient : 0, timeScale: settings.timeScale)
        // A trial stopped early may end before loadgen flushed its id file.
        let injected = max(ScenarioRig.ids(loadIDs).count, arrivals.count)
        return Result(phase: phase, candidate: reloadTo ?? candidate, provokedWith: reloadTo == nil ? nil : candidate, deferrals: deferrals, texts: texts, delivered: arrivals.count,
                      injected: injected, drained: drained, stoppedEarly: stoppedEarly, scaledSeconds: seconds,
                      realPerHour: realPerHour, transientRecords: transient,
                      peakConnections: Self.int(provStats["peak_concurrent_connections"]),
                      maxOnOneConnection: Self.int(provStats["max_messages_on_one_connection"]),
                      tripRefusals: min(tripRefusals ?? finalRate, finalRate), lateRefusals: finalRate - min(tripRefusals ?? finalRate, finalRate),
                      reloaded: reloaded, trippedAfter: trippedAt.map { $0.timeIntervalSince(start) })
    }

    /// The trial's daemon: the candidate for the provider's domains (rates and times scaled), routed to the sink.
    func config(_ c: TuneRun.Candidate, ip: String, mtaPort: UInt16, mgmtPort: UInt16, spool: String, acct: String, mx: [String]) -> String {
        let scale = settings.timeScale
        let macro = TuneRun.macro(provider)
        // Durations at the time scale, in milliseconds (10 min → 6 s at 0.01).
        func scaled(_ seconds: Int) -> String { "\(max(1, Int((Double(seconds) * 1000 * scale).rounded())))ms" }
        var domain = [
            // Every MX host of the profile, in its MX order, as DNS would give them (their ports are the kernel's).
            "    smtp-hosts " + mx.map { "[\($0.split(separator: ":").dropLast().joined(separator: ":"))]:\($0.split(separator: ":").last ?? "25")" }
                .joined(separator: ", "),
            provider.domains.count > 1 ? "    mx-rollup yes" : "",
            "    max-smtp-out \(c.maxSMTPOut)",
            "    max-msg-per-connection \(c.maxMsgPerConnection)",
        ]
        // Messages per real hour at the time scale, as a count per scaled hour (1800/h at 0.01 → 180000/h).
        if c.ratePerHour > 0 { domain.append("    max-msg-rate \(Int((Double(c.ratePerHour) / scale).rounded()))/h") }
        var patterns = ""
        if let p = c.backoffPattern {
            patterns = "<smtp-pattern-list \(macro)>\n    reply /\(p)/ mode=backoff\n</smtp-pattern-list>\n"
            // As the preset writes them: retries and the way back to normal both after the backoff's length.
            domain += ["    smtp-pattern-list \(macro)", "    backoff-retry-after \(scaled(c.backoffSeconds))",
                       "    backoff-to-normal-after \(scaled(c.backoffSeconds))",
                       "    backoff-max-msg-rate " + (c.backoffRatePerHour == 0 ? "0" : "\(Int((Double(c.backoffRatePerHour) / scale).rounded()))/h")]
        }
        return """
        smtp-listener \(ip):\(mtaPort)
        http-mgmt-port \(ip):\(mgmtPort)
        spool \(spool)
        host-name mta.peregrine.test
        domain-macro \(macro) \(provider.domains.joined(separator: ","))
        <source 127.0.0.0/8>
            always-allow-relaying yes
            process-x-virtual-mta yes
            process-x-job yes
        </source>
        <acct-file \(acct)>
            records d,b,t,tq
        </acct-file>
        \(patterns)<domain *>
            use-starttls yes
            # PowerMTA's default retry-after (10m), scaled like the sink.
            retry-after \(scaled(600))
            bounce-after 30m
            deliver-local-dsn no
        </domain>
        <domain $\(macro)>
        \(domain.filter { !$0.isEmpty }.joined(separator: "\n"))
        </domain>

        """
    }

    /// Messages per real hour from sorted arrival times (ns). A drained run's
    /// `retried` messages (one per deferral record) came back after retry-after,
    /// 6 s at time-scale 0.01: one random failure in a 20 s run would cut the
    /// rate by a quarter, so the last `retried` arrivals are left out and the
    /// figure is the pace of first attempts, which is what max-msg-rate sets.
    static func realPerHour(arrivals: [UInt64], retried: Int, timeScale: Double) -> Double {
        let n = retried > 0 && arrivals.count - retried >= 2 ? arrivals.count - retried : arrivals.count
        guard n >= 2, arrivals[n - 1] > arrivals[0] else { return 0 }
        // Messages per scaled second, back to real time: an hour at scale X lasts 3600·X seconds.
        return Double(n - 1) / (Double(arrivals[n - 1] - arrivals[0]) / 1e9) * 3600 * timeScale
    }

    /// Waits (bounded) for a line containing `text` in a log file.
    static func waitForLine(_ text: String, in path: String, timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let log = try? String(contentsOfFile: path, encoding: .utf8), log.contains(text) { return true }
            usleep(20_000)
        }
        return false
    }

    /// "peregrine-sink: listening gmail 127.0.1.1:40123" lines → ["127.0.1.1:40123", …] (the provider's MX hosts, in order).
    static func listeners(log: String, provider: String) -> [String] {
        let prefix = "peregrine-sink: listening \(provider) "
        return log.split(separator: "\n").filter { $0.hasPrefix(prefix) }
            .map { String($0.dropFirst(prefix.count)).trimmingCharacters(in: .whitespaces) }
    }

    /// The sink's deferrals (sessions refused, messages and recipients deferred, messages rejected) by reason.
    static func deferrals(_ stats: [String: Any]) -> [String: Int] {
        let totals = stats["totals"] as? [String: Any] ?? [:]
        var out: [String: Int] = [:]
        for key in ["sessions_refused", "messages_deferred", "recipients_deferred", "messages_rejected", "recipients_rejected"] {
            for (reason, n) in (totals[key] as? [String: Any]) ?? [:] { out[reason, default: 0] += int(n) }
        }
        return out
    }

    /// Arrival times (ns) at the sink, sorted.
    static func arrivals(_ path: String) -> [UInt64] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            line.split(separator: " ").dropFirst().first.flatMap { UInt64($0) }
        }.sorted()
    }

    /// Which kind a daemon-side deferral text belongs to: when the sink deferred
    /// for one kind only, every text is that kind; else by the texts of the profiles.
    static func kind(ofText text: String, deferralsSeen: [String: Int]) -> TuneDeferralKind {
        let kinds = Set(deferralsSeen.keys.map(TuneDeferralKind.init(sinkReason:)))
        if kinds.count == 1, let only = kinds.first { return only }
        let lower = text.lowercased()
        if lower.contains("rate") || lower.contains("tss04") || lower.contains("volume") { return .rate }
        if lower.contains("connections") || lower.contains("sessions") { return .connections }
        return .other
    }

    static func int(_ v: Any?) -> Int {
        if let i = v as? Int { return i }
        if let n = v as? NSNumber { return n.intValue }
        if let u = v as? UInt64 { return Int(clamping: u) }
        return 0
    }
}
