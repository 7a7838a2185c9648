// PeregrineHTTP: an HTTP/1.1 request parser, responses, Prometheus text,
// and the small server the management API listens with.
// Imports: PeregrineIO. Never touches: the engine; handlers are closures.
