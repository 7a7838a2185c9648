// PeregrineDaemon: wiring. Reads the configuration file into `PeregrineConfig`,
// starts the loops, the injection listener (SMTP in, spool append, 250), the
// delivery engine, accounting and the management API, and reloads TLS.
// Imports: every library module below it. Never touches: backend specifics;
// loops come from PeregrineIO.
