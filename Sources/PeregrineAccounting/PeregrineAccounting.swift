// PeregrineAccounting: PowerMTA-style accounting files: the record and its
// field names, the CSV line encoder, timestamps, the reader (tests, bench,
// tooling) and the group-committing writer.
// Imports: PeregrineIO, PeregrineSMTP (status codes). Never touches: queues or
// messages; the engine turns its outcomes into records.
