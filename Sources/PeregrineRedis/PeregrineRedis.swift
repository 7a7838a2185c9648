// PeregrineRedis: the RESP2 wire codec (command encoder, incremental reply
// parser) and a pipelined, reconnecting Redis connection on a loop, for the
// cluster's shared limits and backoff (issue #21).
// Imports: PeregrineIO. Never touches: SMTP, the spool, the engine, config;
// what the cluster stores in Redis is the caller's business.
