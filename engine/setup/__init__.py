"""Setting up: environments (home, paper/live, config.toml, identity), the validated trading
configuration (instruments, strategies, limits, the expiry calendar), the opened session, the demo."""
