"""Setting up: environments (home, paper/live, config.toml, identity), the validated trading
configuration (instruments, strategies, limits, the expiry calendar), the opened session, the demo."""

# Here rather than in environment.py so that the CLI can offer the choice without importing the
# engine (environment.py imports SQLAlchemy); environment.py re-exports it.
ENVIRONMENTS = ("paper", "live")
