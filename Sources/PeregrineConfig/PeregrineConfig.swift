// PeregrineConfig: the PowerMTA-style block-config lexer and tree
// (`<domain x>` blocks, directives, values), typed values (durations, sizes,
// rates, host:port, networks) and errors that carry file:line. The `Rate` value
// and its GCRA `RateLimiter` live here because both the engine and the sink
// configure limits with them. Imports: PeregrineIO (SocketAddress).
// Never touches: what a directive means; the daemon and the sink give meaning.
