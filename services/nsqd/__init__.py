"""nsqd's core: the registry of topics, options, message storage (memory and disk
queues, durable mode), stats, statsd, metrics, heartbeats."""
