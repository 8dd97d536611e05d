"""Setting up: environments (home, paper/live, config.toml, identity), the validated trading
configuration (instruments, strategies, limits, the expiry calendar), the opened session, the demo."""

from __future__ import annotations

import os
from pathlib import Path

from tradeledger.errors import UserError

# Here rather than in environment.py so that the CLI can offer the choice, and the read commands
# (engine/setup/quick.py) can find and read an environment, without importing the engine or
# SQLAlchemy (environment.py imports them); environment.py re-exports these.
ENVIRONMENTS = ("paper", "live")


class ConfigError(UserError):
    """A configuration a user must fix; the message names the file and the field."""


def resolve_home(home: str | Path | None) -> Path:
    if home:
        return Path(home).expanduser()
    if os.environ.get("TRADELEDGER_HOME"):
        return Path(os.environ["TRADELEDGER_HOME"]).expanduser()
    return Path.home() / ".tradeledger"


def default_db_url(env_dir: Path) -> str:
    return f"sqlite:///{(env_dir / 'tradeledger.db').resolve()}"
