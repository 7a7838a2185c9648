// PeregrineDNS: the DNS wire codec (messages, records, names) and the
// caching stub resolver that sends it over a loop's UDP socket.
// Imports: PeregrineIO. Never touches: SMTP, the spool, the engine; routing
// decisions are the engine's.
