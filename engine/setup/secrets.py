"""Database passwords: kept out of config.toml, read from where the user keeps them, never shown.

`config.toml` names the database without its password and, when one is needed, where to find it:

    [environment]
    db_url = "postgresql+psycopg://trader@db.internal/tradeledger"
    db_password_file = "secrets/db_password"      # relative to the environment's directory
    # or: db_password_env = "TRADELEDGER_DB_PASSWORD"

`init --db-url` with a password in the URL writes the password to `secrets/db_password` and the
URL without it to config.toml, both readable by their owner only (0600); a password file that
others can read is refused (as ssh refuses a private key). Every message and log line passes
through `ledger.db.mask_secrets`, so a password given on the command line is never echoed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import sqlalchemy as sa

PASSWORD_FILE = "secrets/db_password"


def _config_error(message: str) -> Exception:
    from tradeledger.engine.setup.environment import ConfigError

    return ConfigError(message)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (0600), atomically: config files and secrets."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o600)  # an existing tmp kept its old mode
    tmp.replace(path)


def split_password(url: str) -> tuple[str, str | None]:
    """(the URL without its password, the password or None)."""
    parsed = sa.engine.make_url(url)
    if parsed.password is None:
        return url, None
    return parsed._replace(password=None).render_as_string(hide_password=False), str(parsed.password)


def read_password(config_path: Path, env_dir: Path, password_env: str | None, password_file: str | None) -> str | None:
    """The database password from the environment variable or the file the config names."""
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise _config_error(f"{config_path}: environment.db_password_env names ${password_env}, which is not set: "
                                "export it, or use db_password_file")
        return value
    if password_file:
        path = Path(password_file).expanduser()
        path = path if path.is_absolute() else env_dir / path
        try:
            mode = path.stat().st_mode
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise _config_error(f"{config_path}: environment.db_password_file {path} does not exist") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise _config_error(f"{path}: the database password file is readable by others "
                                f"(mode {stat.S_IMODE(mode):04o}): chmod 600 {path}")
        return text.rstrip("\r\n")
    return None


def with_password(url: str, password: str | None) -> str:
    if password is None:
        return url
    return sa.engine.make_url(url).set(password=password).render_as_string(hide_password=False)
