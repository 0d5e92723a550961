"""nsqlookupd's core: the registration DB, options and metrics."""
