"""Backups that restore, on SQLite and PostgreSQL, taken while the books move.

The backup is taken while another connection books an entry inside the backup's pinned
snapshot: the restored ledger has exactly the manifest's entries and balances digest (not the
later entry), passes beancount's check, and a restore over an existing ledger is refused.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
import tarfile
import uuid
from decimal import Decimal as D

import pytest
import sqlalchemy as sa

from tradeledger.engine.setup.environment import init_environment, open_environment
from tradeledger.engine.ops.backup import (
    BackupError,
    balances_digest,
    daily_backup,
    parse_backup_config,
    prune,
    read_backup,
    restore,
    take_backup,
)
from tradeledger.engine.setup.environment import ConfigError
from tradeledger.ledger.model import Posting, Transaction

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
PG_URL = os.environ.get("TRADELEDGER_TEST_PG_URL")


def deposit(env, amount: str, currency: str, minute: int) -> None:
    chart = env.chart
    env.ledger.book(Transaction(T0 + dt.timedelta(minutes=minute), "deposit", f"deposit {amount} {currency}",
                                (Posting(chart.cash, D(amount), currency),
                                 Posting(chart.deposits, -D(amount), currency)), key=f"dep-{minute}"))


def make_env(tmp_path, db_url, name="home"):
    env = init_environment(tmp_path / name, "paper", "sim", None, db_url=db_url)
    deposit(env, "100000.00", "USD", 1)
    deposit(env, "2500.5", "EUR", 2)
    deposit(env, "0.000000001", "GBP", 3)  # the smallest amount the ledger holds
    return env


@pytest.fixture
def empty_pg_database(request):
    """A new, empty PostgreSQL database (restores go into one), dropped afterwards."""
    if not PG_URL:
        pytest.skip("TRADELEDGER_TEST_PG_URL not set")
    name = f"r_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")

    def drop():
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()

    request.addfinalizer(drop)
    return sa.engine.make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def restore_target(request, db_url):
    return request.getfixturevalue("empty_pg_database") if db_url.startswith("postgresql") else None


def test_backup_during_a_booking_restores_exactly_its_snapshot(tmp_path, db_url, request):
    env = make_env(tmp_path, db_url)
    before = env.ledger.count()
    booked_during = []

    def book_meanwhile():  # another connection books while the backup's snapshot is pinned
        deposit(env, "7.25", "USD", 10)
        booked_during.append(env.ledger.count())

    result = take_backup(env, tmp_path / "b.tar.gz", while_pinned=book_meanwhile)
    assert booked_during == [(before[0] + 1, before[1] + 2)]  # the booking committed during the backup
    manifest = result.manifest
    assert (manifest.transactions, manifest.postings) == before  # the copy is the snapshot, not later
    assert manifest.environment == "paper" and manifest.broker_account == "DU1234567"
    assert manifest.backend == env.engine.dialect.name and manifest.schema_revision
    live_digest = balances_digest(env.ledger.balances())
    assert manifest.balances_digest != live_digest  # the later 7.25 USD is not in it
    assert stat.S_IMODE(os.stat(result.path).st_mode) == 0o600
    with tarfile.open(result.path) as archive:
        assert "config.toml" in archive.getnames() and "manifest.json" in archive.getnames()

    restored = restore(result.path, tmp_path / "new-home", db_url=restore_target(request, db_url))
    assert restored.digest == manifest.balances_digest
    assert restored.check_entries == manifest.transactions
    env2 = open_environment(tmp_path / "new-home", "paper")
    try:
        assert env2.ledger.count() == before
        assert env2.ledger.balances()[(env2.chart.cash, "GBP")] == D("0.000000001")
        assert (env2.chart.cash, "USD") in env2.ledger.balances()
        assert env2.ledger.balances()[(env2.chart.cash, "USD")] == D("100000.00")
        deposit(env2, "1", "USD", 20)  # the restored ledger books on
    finally:
        env2.engine.dispose()


def test_restore_refuses_to_overwrite_an_existing_ledger(tmp_path, db_url):
    env = make_env(tmp_path, db_url)
    result = take_backup(env, tmp_path / "b.tar.gz")
    with pytest.raises(BackupError, match="refusing to overwrite an existing ledger"):
        restore(result.path, tmp_path / "home")  # the very home it came from
    if db_url.startswith("postgresql"):  # a new home, but the database still holds the ledger
        with pytest.raises(BackupError, match="refusing to overwrite an existing ledger"):
            restore(result.path, tmp_path / "other", db_url=db_url)
    else:  # a new home, but an existing database file
        with pytest.raises(BackupError, match="refusing to overwrite an existing ledger"):
            restore(result.path, tmp_path / "other", db_url=db_url)
    assert not (tmp_path / "other" / "paper").exists()  # nothing left half-made
    assert env.ledger.count()[0] == 3


def test_a_damaged_or_foreign_backup_is_refused(tmp_path):
    env = make_env(tmp_path, None)
    result = take_backup(env, tmp_path / "b.tar.gz")
    with tarfile.open(result.path) as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive.getmembers()}
    members["database.sqlite"] = members["database.sqlite"][:-1] + b"\x01"
    damaged = tmp_path / "damaged.tar.gz"
    with tarfile.open(damaged, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            import io
            archive.addfile(info, io.BytesIO(data))
    with pytest.raises(BackupError, match="does not match its manifest"):
        restore(damaged, tmp_path / "new")
    assert not (tmp_path / "new" / "paper").exists()
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(BackupError, match="not a tradeledger backup"):
        restore(tmp_path / "junk.tar.gz", tmp_path / "new")
    with pytest.raises(BackupError, match="of the paper environment, not live"):
        restore(result.path, tmp_path / "new", env_name="live")


def test_daily_backups_keep_the_newest(tmp_path):
    env = init_environment(tmp_path / "home", "paper", "sim", None, config_extra="[backup]\nkeep = 2\n")
    deposit(env, "1", "USD", 1)
    for day in range(3):
        line = daily_backup(env, now=T0 + dt.timedelta(days=day))
        assert line.startswith("backup tradeledger-paper-DU1234567-")
    folder = env.dir / "backups"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["tradeledger-paper-DU1234567-20261202T150000Z.tar.gz",
                     "tradeledger-paper-DU1234567-20261203T150000Z.tar.gz"]
    assert "1 old removed" in line
    manifest, archive = read_backup(folder / names[-1])
    archive.close()
    assert manifest.transactions == 1


def test_retention_and_config_are_pure_decisions():
    names = [f"tradeledger-paper-DU1-2026120{d}T030000Z.tar.gz" for d in range(1, 6)]
    names += ["tradeledger-live-U9-20261201T030000Z.tar.gz", "notes.txt"]
    assert prune(names, "paper", 3) == names[:2]
    assert prune(names, "live", 3) == []
    assert parse_backup_config({}).keep == 14 and parse_backup_config({}).daily == dt.time(3, 30, tzinfo=UTC)
    assert parse_backup_config({"backup": {"daily": ""}}).daily is None
    with pytest.raises(ConfigError, match="backup.keep"):
        parse_backup_config({"backup": {"keep": 0}})
    with pytest.raises(ConfigError, match="backup.daily"):
        parse_backup_config({"backup": {"daily": "3am"}})
    assert balances_digest({("A", "USD"): D("1.50")}) == balances_digest({("A", "USD"): D("1.5"), ("B", "X"): D(0)})
    assert balances_digest({("A", "USD"): D("1.5")}) != balances_digest({("A", "USD"): D("1.6")})
