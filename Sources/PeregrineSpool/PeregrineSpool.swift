// PeregrineSpool: the durable message store: segment log, records with
// CRC32C, group commit, the live set, recovery and spool-check.
// Imports: PeregrineIO (loop file I/O). Never touches: SMTP, queues, sockets.
