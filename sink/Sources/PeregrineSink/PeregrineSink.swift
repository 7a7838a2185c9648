// PeregrineSink: the multi-ISP receiver emulation behind `peregrine-sink`:
// ISP profiles, the seeded policy engine, the SMTP handler on PeregrineTransport's
// server connection, the DNS zone responder, /stats and the id file.
// Imports: PeregrineIO, SMTP, TLS, DNS, Config, Transport. Never touches: the
// engine, the daemon, the spool.
