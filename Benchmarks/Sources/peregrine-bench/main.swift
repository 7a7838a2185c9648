#if canImport(Glibc)
import Glibc
#endif

// peregrine-bench SCENARIO [options]: named benchmark scenarios. Each scenario
// lives in its own file as `run<Name>Bench(arguments:) -> Int32` and writes
// its JSON under results/.

let usage = """
usage: peregrine-bench SCENARIO [options]
scenarios:
  echo        echo request/response over each I/O backend, side by side
  spool       spool append throughput (group commit vs fsync per message), recovery time, RSS
  smtp-parser SMTP server parsing: commands/s and MB/s through dot-unstuffing and stuffing
  sink        accept-all peregrine-sink vs Postfix's smtp-sink, fed by smtp-source -d
  relay       loadgen → MTA → sink, 4 KB, durable, per backend (and --peer postfix), side by side
  relay-100k  the same with 100 KB messages
  http-relay  HTTP API clients → MTA → sink, 1/10/100 recipients per call, beside the SMTP relay in the same run
  relay-esp   the ESP workload: DKIM-signed, STARTTLS delivery, threads 1 and 2, vs openssl speed and the plain/TLS relay
  dkim-sign   PeregrineDKIM's cost per signature vs openssl speed in the same run
  isp-mix     shipped ISP profiles + DNS, consumer mix with unknown/greylisted share: delivered, bounced, deferrals, lost
  tune        search one provider profile's best <domain> settings (rate, connections, per connection, backoff); writes examples/presets/
  backlog     sink down while N messages queue (RSS), then up (drain rate); lost = 0
  suppression load a 10,000,000-entry suppression list: load time, RSS, lookups/s (targets < 30 s, < 1 GB)
  crash       SIGKILL the daemon during injection, restart on the same spool, drain; lost = 0 (--rounds)
  cluster     3 nodes + Redis + sink: shared connection/rate limits held, lost = 0, Redis round trips, backoff propagation (--kill node|redis)
  summarize   regenerate results/README.md from results/*.json
  dashboard   write results/dashboard.html: every run over time, ratios to in-run peers, regressions flagged
  compare A B the dashboard's figures for two result sets (directories, run files or commits) side by side
"""

let arguments = Array(CommandLine.arguments.dropFirst())
guard let scenario = arguments.first else {
    fputs(usage + "\n", stderr)
    exit(2)
}
let rest = Array(arguments.dropFirst())
BenchChildren.installTerminationHandler()
let status: Int32
switch scenario {
case "-h", "--help", "help":
    print(usage)
    status = 0
case "echo":
    status = runEchoBench(arguments: rest)
case "spool":
    status = runSpoolBench(arguments: rest)
case "smtp-parser":
    status = runSMTPParserBench(arguments: rest)
case "sink", "sink-vs-smtp-sink":
    status = runSinkBench(arguments: rest)
case "relay", "relay-100k":
    status = runRelayBench(arguments: rest, scenario: scenario)
case "isp-mix": status = runIspMixBench(arguments: rest)
case "tune": status = runTuneBench(arguments: rest)
case "backlog": status = runBacklogBench(arguments: rest)
case "crash": status = runCrashBench(arguments: rest)
case "cluster": status = runClusterBench(arguments: rest)
case "suppression": status = runSuppressionBench(arguments: rest)
case "summarize": status = runSummarize(arguments: rest)
case "dashboard": status = runDashboard(arguments: rest)
case "compare": status = runCompare(arguments: rest)
case "dkim-sign": status = runDKIMSignBench(arguments: rest)
case "relay-esp": status = runRelayESPBench(arguments: rest)
case "http-relay": status = runHTTPRelayBench(arguments: rest)
default:
    fputs("peregrine-bench: unknown scenario '\(scenario)'\n\(usage)\n", stderr)
    status = 2
}
exit(status)
