"""Running unattended: the daemon (one per environment by lease) and its scheduled jobs."""
