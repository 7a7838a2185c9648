// PeregrineSMTP: SMTP as pure state machines (bytes in, bytes and events out).
