"""Backups that restore: a consistent online copy of an environment, its config, and a manifest.

A backup is one file, `tradeledger-<env>-<account>-<UTC time>.tar.gz` (mode 0600), holding

    manifest.json     what it is: environment identity, backend, schema revision, entry counts,
                      the balances digest, and the sha256 of every other member
    config.toml       the environment's config (`secrets.env` is never copied)
    database.sqlite   SQLite: a page copy made by SQLite's online backup API
    database.pgdump   PostgreSQL: pg_dump's custom format
    sim.db            a simulated-broker environment's exchange state

**Consistent while the books move.** The copy and the manifest's figures come from ONE read
snapshot of the live database; the daemon and any other writer go on booking meanwhile.
SQLite: a read transaction is opened, the digest computed in it, and the backup API copies the
pages through that same connection, hence from that same WAL snapshot. PostgreSQL: a
REPEATABLE READ transaction exports its snapshot (`pg_export_snapshot`), the digest is computed
in it, and `pg_dump --snapshot` dumps exactly that snapshot.

**Restore** goes into a new home (or a new, empty database): it refuses an existing config, an
existing database file or a database that already holds tables, then loads the copy (`pg_restore
--single-transaction` on PostgreSQL) and ends with a verification: the schema and recorded
identity open, SQLite's integrity check passes, the entry counts and the balances digest equal
the manifest's, and beancount's own balances equal the ledger's. The restored copy has no
daemon and no trader: both leases are cleared and its heartbeat says `stopped`.

**Daily backups** (`[backup]` in config.toml) are a daemon job: a backup into `<env>/backups/`,
then `prune` (a pure choice over file names) keeps the newest `keep`.

    [backup]
    daily = "03:30"     # UTC time of the daemon's backup; "" turns it off
    keep = 14           # how many of the daemon's backups to keep
    dir = "backups"     # relative to the environment's directory
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

import sqlalchemy as sa

from tradeledger.engine.context import Context
from tradeledger.engine.setup.environment import (
    ConfigError,
    default_db_url,
    open_environment,
    resolve_home,
)
from tradeledger.ledger import db
from tradeledger.ledger.export import check as check_export
from tradeledger.ledger.export import export_beancount

UTC = dt.timezone.utc
FORMAT = 1
NAME = re.compile(r"^tradeledger-(paper|live)-[A-Za-z0-9-]+-\d{8}T\d{6}Z(-\d+)?\.tar\.gz$")


class BackupError(ValueError):
    """A backup or a restore that cannot be done as asked; the message says why."""


# -- pure pieces ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class BackupConfig:
    daily: dt.time | None = dt.time(3, 30, tzinfo=UTC)
    keep: int = 14
    dir: str = "backups"


def parse_backup_config(raw: dict) -> BackupConfig:
    """The [backup] table, validated."""
    table = raw.get("backup", {})
    if not isinstance(table, dict):
        raise ConfigError("config: [backup] must be a table")
    unknown = sorted(set(table) - {"daily", "keep", "dir"})
    if unknown:
        raise ConfigError(f"config: unknown [backup] key {unknown[0]!r} (daily, keep, dir)")
    daily: dt.time | None = BackupConfig.daily
    if "daily" in table:
        text = table["daily"]
        if text in ("", False):
            daily = None
        else:
            try:
                hour, minute = str(text).split(":")
                daily = dt.time(int(hour), int(minute), tzinfo=UTC)
            except ValueError:
                raise ConfigError(f"config: backup.daily must be a UTC time HH:MM or \"\", not {text!r}") from None
    keep = table.get("keep", BackupConfig.keep)
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise ConfigError(f"config: backup.keep must be a whole number of at least 1, not {keep!r}")
    return BackupConfig(daily, keep, str(table.get("dir", BackupConfig.dir)))


def balances_digest(balances: dict[tuple[str, str], Decimal]) -> str:
    """sha256 over every non-zero (account, commodity, units), sorted; equal on both backends."""
    lines = [f"{account}\t{commodity}\t{format(units.normalize(), 'f')}\n"
             for (account, commodity), units in sorted(balances.items()) if units != 0]
    return "sha256:" + hashlib.sha256("".join(lines).encode()).hexdigest()


def prune(names: list[str], env: str, keep: int) -> list[str]:
    """Which of an environment's backup files to delete so that the newest `keep` remain (pure)."""
    mine = sorted(n for n in names if NAME.match(n) and n.startswith(f"tradeledger-{env}-"))
    return mine[:-keep] if keep < len(mine) else []


@dataclass(frozen=True)
class Manifest:
    format: int
    created_at: str
    environment: str
    broker_account: str
    broker: str
    base_currency: str
    backend: str  # sqlite | postgresql
    pg_schema: str | None  # the schema dumped when the URL names one; None: the whole database
    schema_revision: str
    transactions: int
    postings: int
    last_txn_id: int | None
    balances_digest: str
    files: dict  # member name -> sha256

    def as_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Manifest:
        if data.get("format") != FORMAT:
            raise BackupError(f"unknown backup format {data.get('format')!r} (this tradeledger reads {FORMAT})")
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except KeyError as exc:
            raise BackupError(f"the backup's manifest lacks {exc.args[0]!r}") from None


@dataclass(frozen=True)
class BackupResult:
    path: Path
    manifest: Manifest
    size: int


@dataclass(frozen=True)
class RestoreResult:
    home: Path
    env: str
    db_url: str  # without password
    manifest: Manifest
    digest: str
    check_entries: int


# -- reading one snapshot --------------------------------------------------------------------------

def _figures(ctx: Context, conn) -> dict:
    entries, postings, newest = ctx.ledger.sizes(conn)
    return {
        "transactions": entries,
        "postings": postings,
        "last_txn_id": newest,
        "balances_digest": balances_digest(ctx.ledger.balances(conn=conn)),
        "schema_revision": conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar(),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_sqlite(ctx: Context, target: Path, while_pinned: Callable[[], None] | None) -> dict:
    """The backup API through a connection whose read transaction pins one snapshot."""
    with db.read_connection(ctx.engine) as conn, conn.begin():
        figures = _figures(ctx, conn)  # the first read pins the WAL snapshot
        if while_pinned is not None:
            while_pinned()
        destination = sqlite3.connect(target)
        try:
            conn.connection.dbapi_connection.backup(destination)
        finally:
            destination.close()
    return figures


def _pg_env(url: sa.engine.URL) -> tuple[dict, str | None]:
    """libpq's environment for a SQLAlchemy URL, and the schema its search_path names (if any)."""
    options = url.query.get("options", "")
    options = options if isinstance(options, str) else " ".join(options)
    found = re.search(r"-c\s*search_path\s*=\s*([A-Za-z_][A-Za-z0-9_]*)", options)
    env = {**os.environ, "PGHOST": url.host or "127.0.0.1", "PGPORT": str(url.port or 5432),
           "PGDATABASE": url.database or "postgres"}
    if url.username:
        env["PGUSER"] = url.username
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    return env, (found.group(1) if found else None)


def _run(command: list[str], env: dict, what: str) -> None:
    if shutil.which(command[0]) is None:
        raise BackupError(f"{command[0]} is not installed: {what} of a PostgreSQL ledger needs it "
                          "(Debian: postgresql-client)")
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BackupError(f"{what} failed: {command[0]}: {reason}")


def _dump_pg(ctx: Context, target: Path, while_pinned: Callable[[], None] | None) -> tuple[dict, str | None]:
    """pg_dump of the snapshot a REPEATABLE READ transaction exports, with that snapshot's figures."""
    libpq, pg_schema = _pg_env(ctx.engine.url)
    with ctx.engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
        snapshot = conn.execute(sa.text("SELECT pg_export_snapshot()")).scalar()
        figures = _figures(ctx, conn)
        if while_pinned is not None:
            while_pinned()
        command = ["pg_dump", "--format=custom", "--no-owner", "--no-acl", f"--snapshot={snapshot}",
                   f"--file={target}"] + ([f"--schema={pg_schema}"] if pg_schema else [])
        _run(command, libpq, "the backup")
    return figures, pg_schema


# -- backup ----------------------------------------------------------------------------------------

def default_backup_dir(ctx: Context) -> Path:
    return ctx.dir / parse_backup_config(ctx.settings.raw).dir


def backup_name(ctx: Context, now: dt.datetime) -> str:
    return f"tradeledger-{ctx.settings.env}-{ctx.settings.account}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.tar.gz"


def take_backup(ctx: Context, out: Path | None = None, now: dt.datetime | None = None,
                while_pinned: Callable[[], None] | None = None) -> BackupResult:
    """One consistent online copy of the environment in one file (written atomically, mode 0600).

    `while_pinned` runs after the snapshot is fixed and before the copy ends (tests book in it).
    """
    now = now or dt.datetime.now(UTC)
    if out is None:
        folder = default_backup_dir(ctx)
        out, n = folder / backup_name(ctx, now), 1
        while out.exists():
            out, n = folder / backup_name(ctx, now).replace(".tar.gz", f"-{n}.tar.gz"), n + 1
    out = Path(out)
    if out.exists() and out.is_dir():
        raise BackupError(f"{out} is a directory: give a file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    backend = ctx.engine.dialect.name
    with tempfile.TemporaryDirectory(prefix="tl-backup-", dir=out.parent) as tmp:
        work = Path(tmp)
        os.chmod(work, 0o700)
        if backend == "sqlite":
            member, pg_schema = "database.sqlite", None
            figures = _copy_sqlite(ctx, work / member, while_pinned)
        elif backend == "postgresql":
            member = "database.pgdump"
            figures, pg_schema = _dump_pg(ctx, work / member, while_pinned)
        else:
            raise BackupError(f"cannot back up a {backend} database")
        shutil.copyfile(ctx.config_path, work / "config.toml")
        members = [member, "config.toml"]
        sim = ctx.dir / "sim.db"
        if ctx.settings.broker == "sim" and sim.exists():
            source, destination = sqlite3.connect(sim), sqlite3.connect(work / "sim.db")
            try:
                source.backup(destination)
            finally:
                source.close()
                destination.close()
            members.append("sim.db")
        meta = db.read_meta(ctx.engine)
        manifest = Manifest(
            format=FORMAT, created_at=now.astimezone(UTC).isoformat(), environment=ctx.settings.env,
            broker_account=ctx.settings.account, broker=ctx.settings.broker,
            base_currency=meta.get("base_currency", ctx.settings.base_currency), backend=backend,
            pg_schema=pg_schema, files={m: _sha256(work / m) for m in members}, **figures)
        (work / "manifest.json").write_text(json.dumps(manifest.as_json(), indent=2) + "\n", encoding="utf-8")
        partial = work / "backup.tar.gz"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
            for name in ["manifest.json", *members]:
                archive.add(work / name, arcname=name)
            raw.flush()
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        partial.replace(out)
    return BackupResult(out, manifest, out.stat().st_size)


def daily_backup(ctx: Context, now: dt.datetime | None = None) -> str:
    """The daemon's job: a backup into the backup folder, then retention; a one-line result."""
    config = parse_backup_config(ctx.settings.raw)
    result = take_backup(ctx, now=now)
    folder = result.path.parent
    removed = prune([p.name for p in folder.iterdir()], ctx.settings.env, config.keep)
    for name in removed:
        (folder / name).unlink(missing_ok=True)
    return (f"backup {result.path.name} ({result.manifest.transactions} entries, {result.size} bytes)"
            + (f", {len(removed)} old removed" if removed else ""))


# -- restore ---------------------------------------------------------------------------------------

def read_backup(path: Path) -> tuple[Manifest, tarfile.TarFile]:
    try:
        archive = tarfile.open(path, mode="r:gz")
        data = archive.extractfile("manifest.json")
    except (OSError, tarfile.TarError, KeyError) as exc:
        raise BackupError(f"{path} is not a tradeledger backup: {exc}") from None
    try:
        return Manifest.from_json(json.load(io.TextIOWrapper(data, encoding="utf-8"))), archive
    except (ValueError, TypeError) as exc:
        archive.close()
        raise BackupError(f"{path}: unreadable manifest: {exc}") from None


def _extract(archive: tarfile.TarFile, manifest: Manifest, work: Path) -> None:
    for name, sha in manifest.files.items():
        if "/" in name or name.startswith("."):
            raise BackupError(f"the backup names a file outside itself: {name!r}")
        member = archive.extractfile(name)
        if member is None:
            raise BackupError(f"the backup lacks {name}")
        with open(work / name, "wb") as f:
            shutil.copyfileobj(member, f)
        if _sha256(work / name) != sha:
            raise BackupError(f"the backup's {name} does not match its manifest (damaged file?)")


def _with_db_url(config_text: str, url: str | None) -> str:
    """config.toml with `[environment] db_url` set to `url` (removed when None)."""
    lines, out, section = config_text.splitlines(), [], None
    for line in lines:
        header = re.match(r"^\s*\[([^\]]+)\]\s*$", line)
        if header:
            section = header.group(1).strip()
        if section == "environment" and re.match(r"^\s*db_url\s*=", line):
            continue
        out.append(line)
        if header and section == "environment" and url is not None:
            out.append(f"db_url = {json.dumps(url)}")
    text = "\n".join(out) + "\n"
    parsed = tomllib.loads(text).get("environment", {})
    if parsed.get("db_url") != url:
        raise BackupError("could not set db_url in the restored config.toml")
    return text


def _target_tables(url: str, pg_schema: str | None) -> list[str]:
    engine = db.make_engine(url)
    try:
        with db.read_connection(engine) as conn:
            inspector = sa.inspect(conn)
            if pg_schema is not None:
                return ([f"schema {pg_schema}"] if pg_schema in inspector.get_schema_names() else [])
            return inspector.get_table_names()
    except sa.exc.DBAPIError as exc:
        raise db.connectivity_error(url, exc) from None
    finally:
        engine.dispose()


def _restore_pg(dump: Path, url: str, pg_schema: str | None) -> str:
    """pg_restore into an empty database (or a schema not there yet); returns the URL to record."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise BackupError("this backup is of a PostgreSQL ledger: restore it into a PostgreSQL --db-url")
    libpq, named = _pg_env(parsed)
    if pg_schema is not None and named not in (None, pg_schema):
        raise BackupError(f"this backup holds schema {pg_schema!r}; the target URL names {named!r}")
    if pg_schema is not None and named is None:
        parsed = parsed.update_query_dict({"options": f"-csearch_path={pg_schema}"})
    existing = _target_tables(parsed.render_as_string(hide_password=False), pg_schema)
    if existing:
        raise BackupError(f"the database at {parsed.render_as_string(hide_password=True)} already holds "
                          f"{existing[0]}{' and more' if len(existing) > 1 else ''}: refusing to overwrite an "
                          "existing ledger (restore into a new, empty database)")
    _run(["pg_restore", "--no-owner", "--no-acl", "--exit-on-error", "--single-transaction",
          f"--dbname={libpq['PGDATABASE']}", str(dump)], libpq, "the restore")
    return parsed.render_as_string(hide_password=False)


def _sqlite_path(url: str) -> Path:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        raise BackupError("this backup is of a SQLite ledger: restore it into a SQLite file (or give no --db-url)")
    return Path(parsed.database)


def _no_daemon(ctx: Context) -> None:
    """The restored copy has no daemon and no trader: no leases (a backup taken mid-cycle holds the
    cycle's, naming a process of the original environment), and a heartbeat that says stopped."""
    from tradeledger.engine.tables import daemon_heartbeat, daemon_lease, trading_lease

    with ctx.engine.begin() as conn:
        conn.execute(daemon_lease.delete())
        conn.execute(trading_lease.delete())
        conn.execute(daemon_heartbeat.update().values(state="stopped"))


def verify(ctx: Context, manifest: Manifest) -> tuple[list[str], str, int]:
    """Problems of a restored ledger against its manifest (empty: verified), its digest, entries checked."""
    problems = []
    with db.read_connection(ctx.engine) as conn, conn.begin():
        if ctx.engine.dialect.name == "sqlite":
            integrity = conn.exec_driver_sql("PRAGMA integrity_check").scalar()
            if integrity != "ok":
                problems.append(f"SQLite integrity check: {integrity}")
        figures = _figures(ctx, conn)
    for key in ("schema_revision", "transactions", "postings", "last_txn_id", "balances_digest"):
        if figures[key] != getattr(manifest, key):
            problems.append(f"{key} is {figures[key]}, the manifest says {getattr(manifest, key)}")
    export_beancount(ctx.ledger, ctx.ledger_path, operating_currency=ctx.settings.base_currency)
    result = check_export(ctx.ledger, ctx.ledger_path)
    problems += [f"beancount: {e}" for e in result.errors[:3]]
    problems += [f"beancount balance differs: {a} {c}: ledger {o}, beancount {b}"
                 for a, c, o, b in result.differences[:3]]
    return problems, figures["balances_digest"], result.entries


def restore(path: Path, home: str | Path | None, env_name: str | None = None,
            db_url: str | None = None) -> RestoreResult:
    """Restore a backup into a new home (or new database); refuses to overwrite; ends verified."""
    manifest, archive = read_backup(Path(path))
    env_name = env_name or manifest.environment
    if env_name != manifest.environment:
        raise BackupError(f"this backup is of the {manifest.environment} environment, not {env_name}")
    home = resolve_home(home)
    env_dir = home / env_name
    if (env_dir / "config.toml").exists():
        raise BackupError(f"{env_dir / 'config.toml'} exists: refusing to overwrite an existing ledger "
                          "(restore into a new --home)")
    created_dir = not env_dir.exists()
    with archive, tempfile.TemporaryDirectory(prefix="tl-restore-") as tmp:
        work = Path(tmp)
        _extract(archive, manifest, work)
        config_text = (work / "config.toml").read_text(encoding="utf-8")
        configured = tomllib.loads(config_text).get("environment", {}).get("db_url")
        written: list[Path] = []
        try:
            if manifest.backend == "sqlite":
                target = _sqlite_path(db_url) if db_url else env_dir / "tradeledger.db"
                for suffix in ("", "-wal", "-shm"):
                    if Path(f"{target}{suffix}").exists():
                        raise BackupError(f"{target}{suffix} exists: refusing to overwrite an existing ledger")
                env_dir.mkdir(parents=True, exist_ok=True)
                target.parent.mkdir(parents=True, exist_ok=True)
                source, destination = sqlite3.connect(work / "database.sqlite"), sqlite3.connect(target)
                written.append(target)
                try:
                    source.backup(destination)
                finally:
                    source.close()
                    destination.close()
                record = (f"sqlite:///{target.resolve()}" if db_url
                          and f"sqlite:///{target.resolve()}" != default_db_url(env_dir) else None)
            else:
                url = db_url or configured
                if not url:
                    raise BackupError("give the PostgreSQL database to restore into (--db-url)")
                env_dir.mkdir(parents=True, exist_ok=True)
                record = _restore_pg(work / "database.pgdump", url, manifest.pg_schema)
            if "sim.db" in manifest.files:
                written.append(env_dir / "sim.db")
                shutil.copyfile(work / "sim.db", env_dir / "sim.db")
            (env_dir / "logs").mkdir(exist_ok=True)
            text = _with_db_url(config_text, record)
            fd = os.open(env_dir / "config.toml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
        except BaseException:
            for p in written:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{p}{suffix}").unlink(missing_ok=True)
            if created_dir and env_dir.exists():
                shutil.rmtree(env_dir, ignore_errors=True)
            raise
    env = open_environment(home, env_name)
    try:
        _no_daemon(env)
        problems, digest, entries = verify(env, manifest)
        if problems:
            raise BackupError(f"the restored ledger in {env_dir} does not verify: {'; '.join(problems)}")
        return RestoreResult(home, env_name, env.engine.url.render_as_string(hide_password=True), manifest,
                             digest, entries)
    finally:
        env.engine.dispose()
