"""Opening an environment for reading only, without SQLAlchemy, pydantic or the engine's tables.

`open_environment` checks everything before a command runs: the shape of config.toml (pydantic
models), its trading, daemon and alert tables, the database's schema revision, identity and base
currency; its imports alone cost a read command about half a second. A read command (`positions`)
needs the ledger's rows and the config's strategies and instruments. `open_for_reading` gives it
those by the fast route, and gives None whenever it cannot vouch that the full opening would
succeed the same way, so that the caller takes the full path, which then says what is wrong:

* config.toml is re-validated only when it changed: after every check has passed, the full
  opening records a stamp beside it (`.config-checked`), the digest of everything the checks
  depended on: the parsed file, the environment's name, `$TRADELEDGER_ALERT_URLS` (the [alerts]
  check reads it), and the code that checks (each module of engine/setup, engine/ops and
  engine/futures, and ledger/accounts.py and ledger/names.py, the name rules the checks apply, by
  name, size and modification time). A fast opening whose digest differs (an edited file, another
  version of tradeledger) returns None.
* a database password kept apart (`db_password_env`, `db_password_file`) is left to the full path;
* the database is read on its raw DB-API connection (ledger/reading.py); a missing file, an
  unreachable server, another schema revision, identity or base currency returns None.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tradeledger.engine.setup import ENVIRONMENTS, default_db_url, resolve_home
from tradeledger.ledger import db
from tradeledger.ledger.reading import Reader, open_reader

try:  # CPython's own SHA-256 (hashlib's fallback): the same digest without loading OpenSSL, a tenth of the time
    from _sha2 import sha256  # Python 3.12+
except ImportError:
    try:
        from _sha256 import sha256  # Python 3.11
    except ImportError:  # a build without them
        from hashlib import sha256

STAMP = ".config-checked"
ALERT_URLS_VARIABLE = "TRADELEDGER_ALERT_URLS"  # engine/ops/alerts.py reads it while checking [alerts]
_PACKAGE = Path(__file__).resolve().parents[2]
_CHECKING_CODE = ("engine/setup", "engine/ops", "engine/futures", "ledger/accounts.py", "ledger/names.py")


def _code_key() -> list:
    """Name, size and modification time of each module whose code checks config.toml."""
    found = []
    for part in _CHECKING_CODE:
        path = _PACKAGE / part
        entries = sorted(os.scandir(path), key=lambda e: e.name) if path.is_dir() else [path]
        for entry in entries:
            name = entry.name if isinstance(entry, os.DirEntry) else entry.name
            if name.endswith(".py"):
                info = entry.stat()
                found.append((part, name, info.st_size, info.st_mtime_ns))
    return found


def config_digest(raw: dict, env: str) -> str:
    """The digest of what checking config.toml depends on (see the module's docstring)."""
    text = json.dumps([raw, env, os.environ.get(ALERT_URLS_VARIABLE, ""), _code_key()], sort_keys=True, default=repr)
    return sha256(text.encode()).hexdigest()


def record_checked(env_dir: Path, raw: dict, env: str) -> None:
    """Remember that config.toml as parsed (`raw`) passed every check; best effort (a read-only
    directory only costs later read commands their fast path)."""
    stamp = env_dir / STAMP
    digest = config_digest(raw, env)
    try:
        if stamp.exists() and stamp.read_text(encoding="utf-8").strip() == digest:
            return
        tmp = stamp.with_name(f"{STAMP}.{os.getpid()}.tmp")
        tmp.write_text(digest + "\n", encoding="utf-8")
        tmp.replace(stamp)
    except OSError:
        pass


@dataclass(frozen=True)
class ReadEnvironment:
    """An environment opened for reading: its identity, parsed config and the ledger's reader."""

    home: Path
    env: str
    account: str
    base_currency: str
    raw: dict  # config.toml, parsed and checked (the stamp vouches for it)
    reader: Reader
    url: str  # the database's URL, as the full opening would connect to it

    @property
    def dir(self) -> Path:
        return self.home / self.env

    def close(self) -> None:
        self.reader.close()


def open_for_reading(home: str | Path | None, env: str, db_url: str | None = None) -> ReadEnvironment | None:
    """The environment opened for reading, or None: take the full path (`open_environment`)."""
    if env not in ENVIRONMENTS:
        return None
    env_dir = resolve_home(home) / env
    try:
        raw = tomllib.loads((env_dir / "config.toml").read_text(encoding="utf-8"))
        stamp = (env_dir / STAMP).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    if stamp != config_digest(raw, env):
        return None
    section = raw["environment"]
    if section.get("db_password_env") or section.get("db_password_file"):
        return None
    url = db_url or section.get("db_url") or default_db_url(env_dir)
    reader = open_reader(url)
    if reader is None:
        return None
    account, base = str(section.get("account", "")), str(section.get("base_currency", "USD"))
    try:
        meta = reader.meta() if reader.revision() == db.head_revision() else {}
    except Exception:  # noqa: BLE001 - any failure to read: the full path reports it in its words
        meta = {}
    if (meta.get("environment"), meta.get("broker_account"), meta.get("base_currency")) != (env, account, base):
        reader.close()
        return None
    return ReadEnvironment(resolve_home(home), env, account, base, raw, reader, url)
