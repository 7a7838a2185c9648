// PeregrineCore: the engine (spool, queues, throttles, routing, accounting, config).
