// PeregrineEngine: queues, the scheduler, throttles, backoff, delivery
// connections, policy (pattern lists, bounce classes, reply texts) and the
// records that accounting writes for each outcome.
// Imports: IO, SMTP, TLS, Config, Transport, Spool, Accounting. Never touches:
// the injection listener, the management API, configuration files.
