// PeregrineTransport: SMTP over an EventLoop. The server connection drives
// an `SMTPServerSession` and asks its handler for policy; the client TLS glue
// drives STARTTLS for any `SMTPClientSession` owner. Connections own the socket,
// buffers, timers, TLS and limits; handlers hold policy.
// Imports: PeregrineIO, PeregrineSMTP, PeregrineTLS. Never touches: the spool,
// queues, accounting.
