// PeregrineTransport: SMTP over an EventLoop, as a connection + handler pair
// on both sides. `SMTPServerConnection` drives an `SMTPServerSession` (the
// daemon's injection, the sink); `SMTPClientConnection` drives an
// `SMTPClientSession` (the engine's deliveries, the loadgen, the tests).
// Connections own the socket, buffers, timers, TLS and limits; handlers hold policy.
// Imports: PeregrineIO, PeregrineSMTP, PeregrineTLS. Never touches: the spool,
// queues, accounting.
