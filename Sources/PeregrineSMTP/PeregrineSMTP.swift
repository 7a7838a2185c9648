// PeregrineSMTP: SMTP as pure state machines: commands, replies, server and
// client sessions, dot-stuffing, xtext. Bytes in, bytes and events out.
// Imports: PeregrineIO for ByteBuffer only. Never touches: sockets, loops,
// clocks (timers are asked for with `.setTimer`), files.
