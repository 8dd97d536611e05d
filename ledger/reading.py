"""Reading the ledger on a raw DB-API connection: no SQLAlchemy, no alembic, for commands that only read.

`Ledger` (store.py) reads through SQLAlchemy, which costs a command about a tenth of a second to
import before it does anything. The read commands (`positions`) read few rows: the balances the
database maintains, the open lots, the commodities. `Reader` reads the same rows with fixed SQL on
the driver's own connection (sqlite3, or psycopg for PostgreSQL) and returns exactly what the
`Ledger` queries of the same name return (tests/test_reading.py compares them over random ledgers
on both backends):

    reader = open_reader("sqlite:////path/tradeledger.db")   # None: use the full path
    with reader:
        reader.revision(), reader.meta()
        reader.positions(prefix="Assets:Broker:DU1"), reader.lots(account, "SPY")

Everything is read in one read transaction (a consistent snapshot, no write lock on SQLite) with
a modest page cache, and no query returns more rows than there are accounts, commodities or lots:
memory does not grow with the ledger. Where the database does not maintain the balances
(PostgreSQL), they are summed from the postings in SQL, as `Ledger` does.

A URL this module cannot open exactly as SQLAlchemy would (another driver, an unusual SQLite URL)
gives None, and the caller takes the full path.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

from tradeledger.ledger.numbers import SCALE, from_scaled

FACTOR = 10**SCALE
# The page cache of a read connection: the queries here touch a few pages, an export streams the
# postings once; neither needs the 64 MB a writer keeps for the posting indexes (ledger/db.py).
READ_CACHE_KIB = 8192


class Reader:
    """One read transaction on a raw connection; `dialect` is "sqlite" or "postgresql"."""

    def __init__(self, conn, dialect: str):
        self.conn, self.dialect = conn, dialect
        self._names: dict[int, str] | None = None

    # -- the connection -----------------------------------------------------------------------

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def close(self) -> None:
        try:
            self.conn.rollback()  # a read transaction: nothing to keep
        finally:
            self.conn.close()

    def rows(self, sql: str, params: tuple = ()):
        """Rows of `sql`, written with `?` placeholders (turned into the driver's style)."""
        if self.dialect != "sqlite":
            sql = sql.replace("%", "%%").replace("?", "%s")
        cursor = self.conn.cursor()
        cursor.execute(sql, params)
        return cursor

    def stream(self, sql: str, name: str, batch: int = 5000, params: tuple = ()):
        """The rows of `sql` a batch at a time, never all at once: SQLite steps its statement as
        rows are fetched; PostgreSQL holds them in a server-side cursor (several may be open on
        the one connection, in its one transaction)."""
        if self.dialect == "sqlite":
            cursor = self.conn.cursor()
            cursor.arraysize = batch
            cursor.execute(sql, params)
        else:
            cursor = self.conn.cursor(name=name)
            cursor.itersize = batch
            cursor.execute(sql.replace("%", "%%").replace("?", "%s"), params)
        while True:
            rows = cursor.fetchmany(batch)
            if not rows:
                break
            yield from rows
        cursor.close()

    @property
    def maintained(self) -> bool:
        """Whether the database maintains `balance` and `lot_balance` (store.maintained): both
        backends at the schema head (PostgreSQL through per-transaction deltas, migration 0012)."""
        return True

    # -- identity ------------------------------------------------------------------------------

    def revision(self) -> str | None | list:
        """The schema revision the database is stamped with; None unstamped, a list when several."""
        if self.dialect == "sqlite":
            present = self.rows("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'")
        else:
            present = self.rows("SELECT 1 FROM information_schema.tables WHERE table_name = 'alembic_version' "
                                "AND table_schema = ANY (current_schemas(false))")
        if present.fetchone() is None:
            return None
        versions = [row[0] for row in self.rows("SELECT version_num FROM alembic_version")]
        return versions[0] if len(versions) == 1 else (versions or None)

    def meta(self) -> dict[str, str]:
        return dict(self.rows("SELECT key, value FROM tl_meta"))

    def count(self) -> tuple[int, int]:
        """(entries, postings) in the ledger (Ledger.count)."""
        txns, postings = self.rows("SELECT (SELECT COUNT(*) FROM txn), (SELECT COUNT(*) FROM posting)").fetchone()
        return int(txns), int(postings)

    # -- the ledger's reads (the same answers as `Ledger`'s methods of the same name) --------

    def account_names(self) -> dict[int, str]:
        if self._names is None:
            self._names = dict(self.rows("SELECT id, name FROM account"))
        return self._names

    def commodities(self) -> list[tuple[str, str, str | None, Decimal]]:
        """(name, kind, currency, multiplier) of every commodity, by name."""
        return [(name, kind, currency, Decimal(multiplier)) for name, kind, currency, multiplier in
                self.rows("SELECT name, kind, currency, multiplier FROM commodity ORDER BY name")]

    def balances(self, prefix: str | None = None) -> dict[tuple[str, str], Decimal]:
        """Units per (account, commodity) over all time, zero balances left out (Ledger.balances)."""
        names = self.account_names()
        wanted = [i for i, name in names.items() if prefix is None or name.startswith(prefix)]
        return {(names[account_id], commodity): from_scaled(total)
                for (account_id, commodity), total in self.kept_balances(wanted).items() if total != 0}

    def kept_balances(self, account_ids: list[int]) -> dict[tuple[int, str], int]:
        """Scaled units per (account id, commodity) of these accounts, a zero sum kept: a key is
        there when the account has any posting in the commodity (the maintained rows are never
        deleted), which `pnl` needs to know which groups the replay would show."""
        if not account_ids:
            return {}
        marks = ", ".join("?" * len(account_ids))
        params = tuple(account_ids)
        if self.maintained and self.dialect == "sqlite":
            sql = f"SELECT account_id, commodity, whole, nanos FROM balance WHERE account_id IN ({marks})"
        elif self.maintained:  # the row plus its deltas not folded yet, in one statement (store.kept_balances)
            sql = (f"SELECT account_id, commodity, SUM(whole), SUM(nanos) FROM ("
                   f"SELECT account_id, commodity, whole, nanos FROM balance WHERE account_id IN ({marks}) UNION ALL "
                   f"SELECT account_id, commodity, whole, nanos FROM balance_delta WHERE account_id IN ({marks})) k "
                   f"GROUP BY account_id, commodity")
            params = params * 2
        elif self.dialect == "sqlite":  # pragma: no cover - every SQLite ledger maintains them
            sql = (f"SELECT account_id, commodity, SUM(units / {FACTOR}), SUM(units % {FACTOR}) FROM posting "
                   f"WHERE account_id IN ({marks}) GROUP BY account_id, commodity")
        else:  # pragma: no cover - every ledger at the schema head maintains them
            sql = (f"SELECT account_id, commodity, div(SUM(units), {FACTOR}), mod(SUM(units), {FACTOR}) FROM posting "
                   f"WHERE account_id IN ({marks}) GROUP BY account_id, commodity")
        return {(account_id, commodity): int(whole) * FACTOR + int(rest)
                for account_id, commodity, whole, rest in self.rows(sql, params)}

    def lot_sums(self) -> dict[tuple[int, str], tuple[int, int]]:
        """(scaled units, scaled cost basis) per (account id, commodity) held at a cost, from the
        maintained lots: the units and the sum of the weights of the postings (each weight is
        units x cost exactly, ledger/rows.py, so a lot's weights sum to its units x its cost).
        A key is there when the account ever held the commodity at a cost."""
        lots = "lot_balance" if self.dialect == "sqlite" else (  # with its deltas (store.kept_lots)
            "(SELECT account_id, commodity, cost, whole, nanos FROM lot_balance UNION ALL "
            "SELECT account_id, commodity, cost, whole, nanos FROM lot_delta)")
        sums: dict[tuple[int, str], tuple[int, int]] = {}
        for account_id, commodity, cost, whole, nanos in self.rows(
                f"SELECT account_id, commodity, cost, whole, nanos FROM {lots} l"):
            units = int(whole) * FACTOR + int(nanos)
            held, basis = sums.get((account_id, commodity), (0, 0))
            sums[(account_id, commodity)] = (held + units, basis + units * int(cost) // FACTOR)
        return sums

    def first_and_last_day(self, account_ids: list[int]) -> tuple[str, str] | None:
        """The dates (YYYY-MM-DD) of the oldest and the newest posting in these accounts: two
        index lookups per account (ix_posting_period leads with the account and the time), in
        one statement (one round trip to a server)."""
        if not account_ids:
            return None
        marks = ", ".join("?" * len(account_ids))
        first, last = self.rows(
            "SELECT MIN(f), MAX(l) FROM (SELECT (SELECT MIN(p.ts) FROM posting p WHERE p.account_id = a.id) AS f, "
            "(SELECT MAX(p.ts) FROM posting p WHERE p.account_id = a.id) AS l "
            f"FROM account a WHERE a.id IN ({marks})) x", tuple(account_ids)).fetchone()
        return (first[:10], last[:10]) if first else None

    def day_sums(self, account_id: int, commodity: str) -> list[tuple[str, int]]:
        """(date, scaled units) per day of one account's postings in one commodity, summed in SQL
        on the covering index (ix_posting_period): a row per day, not per posting."""
        return [(day, int(whole) * FACTOR + int(rest)) for day, whole, rest in self.rows(
            f"SELECT substr(ts, 1, 10), SUM(units / {FACTOR}), SUM(units % {FACTOR}) FROM posting "
            "WHERE account_id = ? AND commodity = ? GROUP BY substr(ts, 1, 10) ORDER BY 1", (account_id, commodity))]

    # -- what was booked from a time on, and the newest lines before it (status's P&L of today) --

    @property
    def _by_time(self) -> str:
        """The index a read of a time range must take on SQLite: by a GROUP BY's order or its
        statistics on a big ledger it chose another (ix_posting_balance, until migration 0014
        dropped it) and read every posting of the accounts instead of the range."""
        return " INDEXED BY ix_posting_period" if self.dialect == "sqlite" else ""

    def sums_since(self, account_ids: list[int], since: str) -> list[tuple[int, str, int]]:
        """(account id, commodity, scaled units) of these accounts' postings from `since` on (an
        index range per account)."""
        if not account_ids:
            return []
        marks = ", ".join("?" * len(account_ids))
        return [(account_id, commodity, int(whole) * FACTOR + int(rest))
                for account_id, commodity, whole, rest in self.rows(
                    f"SELECT account_id, commodity, SUM(units / {FACTOR}), SUM(units % {FACTOR}) "
                    f"FROM posting{self._by_time} WHERE account_id IN ({marks}) AND ts >= ? "
                    "GROUP BY account_id, commodity ORDER BY account_id, commodity",  # Ledger.income's order
                    (*account_ids, since))]

    def lots_since(self, account_ids: list[int], since: str) -> list[tuple[int, str, int, int]]:
        """(account id, commodity, scaled cost, scaled units) of these accounts' cost-bearing
        postings from `since` on."""
        if not account_ids:
            return []
        marks = ", ".join("?" * len(account_ids))
        return [(account_id, commodity, int(cost), int(whole) * FACTOR + int(rest))
                for account_id, commodity, cost, whole, rest in self.rows(
                    f"SELECT account_id, commodity, cost, SUM(units / {FACTOR}), SUM(units % {FACTOR}) "
                    f"FROM posting{self._by_time} "
                    f"WHERE account_id IN ({marks}) AND ts >= ? AND cost IS NOT NULL "
                    "GROUP BY account_id, commodity, cost", (*account_ids, since))]

    def last_before(self, account_ids: list[int], before: str) -> str | None:
        """The time of the newest posting before `before` in these accounts (an index lookup each)."""
        if not account_ids:
            return None
        marks = ", ".join("?" * len(account_ids))
        return self.rows(
            "SELECT MAX((SELECT MAX(p.ts) FROM posting p WHERE p.account_id = a.id AND p.ts < ?)) "
            f"FROM account a WHERE a.id IN ({marks})", (before, *account_ids)).fetchone()[0]

    def first_from(self, account_ids: list[int], since: str) -> str | None:
        """The time of the oldest posting from `since` on in these accounts (an index lookup each)."""
        if not account_ids:
            return None
        marks = ", ".join("?" * len(account_ids))
        return self.rows(
            "SELECT MIN((SELECT MIN(p.ts) FROM posting p WHERE p.account_id = a.id AND p.ts >= ?)) "
            f"FROM account a WHERE a.id IN ({marks})", (since, *account_ids)).fetchone()[0]

    def metas_since(self, account_ids: list[int], since: str) -> list[tuple[int, str | None]]:
        """(account id, entry metadata) of each of these accounts' postings from `since` on."""
        if not account_ids:
            return []
        marks = ", ".join("?" * len(account_ids))
        return list(self.rows(f"SELECT p.account_id, t.meta FROM posting p{self._by_time} "
                              f"JOIN txn t ON t.id = p.txn_id WHERE p.account_id IN ({marks}) AND p.ts >= ?",
                              (*account_ids, since)))

    def postings_in_order(self, account_ids: list[int], since: str | None = None):
        """Every posting in these accounts, in booking order (time, entry, posting), streamed: (ts,
        entry id, account id, commodity, units, weight, cost). An entry's postings share its time,
        so they come together (the replay of reports/series.py). `since`: only entries of that
        time or later (an index range on the entries' time: a replay resumed from a checkpoint)."""
        after = "" if since is None else "AND t.ts >= ? "
        return self.stream("SELECT t.ts, t.id, p.account_id, p.commodity, p.units, p.weight, p.cost "
                           "FROM txn t JOIN posting p ON p.txn_id = t.id "
                           f"WHERE p.account_id IN ({', '.join(str(int(i)) for i in sorted(account_ids))}) "
                           f"{after}ORDER BY t.ts, t.id, p.id", "tl_postings_in_order",
                           params=() if since is None else (since,))

    def metas_in_order(self, since: str | None = None):
        """(id, meta) of every entry in the order of `postings_in_order`, streamed: read beside it,
        each entry's metadata comes once, not once per posting."""
        if since is None:
            return self.stream("SELECT id, meta FROM txn ORDER BY ts, id", "tl_metas_in_order")
        return self.stream("SELECT id, meta FROM txn WHERE ts >= ? ORDER BY ts, id", "tl_metas_in_order",
                           params=(since,))

    def entries_before(self, before: str) -> int:
        """How many entries have a time before `before` (a count over the range of ix_txn_ts). The
        ledger is append-only, so an unchanged count says no entry was booked into that range."""
        return int(self.rows("SELECT COUNT(*) FROM txn WHERE ts < ?", (before,)).fetchone()[0])

    def last_entry_time(self) -> str | None:
        """The time of the newest entry (the end of ix_txn_ts)."""
        return self.rows("SELECT MAX(ts) FROM txn").fetchone()[0]

    def newest_before(self, account: str, before: str, limit: int) -> list[tuple]:
        """(time, entry id, posting id, commodity, scaled cost, entry metadata) of an account's
        newest `limit` postings before `before`, newest time first (ix_posting_period, backwards);
        lines of one time in no particular order."""
        return list(self.rows(
            "SELECT p.ts, p.txn_id, p.id, p.commodity, p.cost, t.meta FROM posting p "
            "JOIN txn t ON t.id = p.txn_id WHERE p.account_id = (SELECT id FROM account WHERE name = ?) "
            f"AND p.ts < ? ORDER BY p.ts DESC LIMIT {int(limit)}", (account, before)))

    def contract_sums(self, pnl_ids: list[int], holding_ids: list[int], base: str,
                      since: str | None = None) -> list[tuple[int, str, str | None, str | None, int]]:
        """(account id, commodity, the entry's contract or None, day or None, scaled units) of these
        P&L accounts' postings (from `since` on, else all), summed per account, commodity and the
        contract of their entry, and per day where the commodity is not `base`: `pnl --by
        instrument` (reports/pnl_instrument.py). One statement; O(the postings it sums)."""
        statement = contract_sums_sql(self.dialect, pnl_ids, holding_ids, base, since)
        if statement is None:
            return []
        return [(account_id, commodity, contract, day, int(whole) * FACTOR + int(rest))
                for account_id, commodity, contract, day, whole, rest in self.rows(*statement)]

    def positions(self, prefix: str = "Assets:") -> dict[tuple[str, str], Decimal]:
        """Balances in contracts and shares: commodities that are not currencies (Ledger.positions)."""
        currencies = {name for name, kind, _, _ in self.commodities() if kind == "currency"}
        return {k: v for k, v in self.balances(prefix).items() if k[1] not in currencies}

    def lots(self, account: str, commodity: str) -> list[tuple[Decimal, str, dt.date | None, str | None, Decimal]]:
        """Open lots, oldest first: (cost number, cost currency, cost date, label, units) (Ledger.lots)."""
        if self.maintained:
            lots = "lot_balance" if self.dialect == "sqlite" else (  # with its deltas (store.kept_lots)
                "(SELECT account_id, commodity, cost, cost_currency, cost_date, cost_label, SUM(whole) AS whole, "
                "SUM(nanos) AS nanos, MIN(first_ts) AS first_ts FROM (SELECT * FROM lot_balance UNION ALL "
                "SELECT account_id, commodity, cost, cost_currency, cost_date, cost_label, whole, nanos, first_ts "
                "FROM lot_delta) u GROUP BY account_id, commodity, cost, cost_currency, cost_date, cost_label)")
            rows = [(*r[:5], int(r[5]) * FACTOR + int(r[6])) for r in self.rows(
                "SELECT l.cost, l.cost_currency, l.cost_date, l.cost_label, l.first_ts, l.whole, l.nanos "
                f"FROM {lots} l JOIN account a ON a.id = l.account_id WHERE a.name = ? AND l.commodity = ?",
                (account, commodity))]
        else:
            rows = [(*r[:5], int(r[5])) for r in self.rows(
                "SELECT p.cost, p.cost_currency, p.cost_date, p.cost_label, MIN(p.ts), SUM(p.units) "
                "FROM posting p JOIN account a ON a.id = p.account_id "
                "WHERE a.name = ? AND p.commodity = ? AND p.cost IS NOT NULL "
                "GROUP BY p.cost, p.cost_currency, p.cost_date, p.cost_label", (account, commodity))]
        lots = [(from_scaled(r[0]), r[1], dt.date.fromisoformat(r[2]) if r[2] else None, r[3] or None,
                 from_scaled(r[5]), r[4]) for r in rows if r[5] != 0]
        lots.sort(key=lambda lot: (lot[5], lot[3] or ""))
        return [lot[:5] for lot in lots]


def contract_sums_sql(dialect: str, pnl_ids: list[int], holding_ids: list[int], base: str,
                      since: str | None = None) -> tuple[str, tuple] | None:
    """`Reader.contract_sums`' statement and parameters (`?` placeholders), or None: no account.

    An entry's contract is the one its metadata names, else (a reversal names none) the commodity
    of its first position line, as reports/series.py's load_moves takes it."""
    if not pnl_ids:
        return None
    if dialect == "sqlite":
        named = "NULLIF(json_extract(NULLIF(t.meta, ''), '$.contract'), '')"
        by_time = " INDEXED BY ix_posting_period"  # along the account and time (_by_time); all time too: faster
    else:
        named = "NULLIF(NULLIF(t.meta, '')::json ->> 'contract', '')"
        by_time = ""
    # the first position line by id, which ix_posting_txn gives in order (an entry's lines share
    # its time: ORDER BY ts too cost a sort per posting); COALESCE looks it up only where needed
    first_line = ("(SELECT q.commodity FROM posting q WHERE q.txn_id = p.txn_id AND q.cost IS NOT NULL "
                  f"AND q.account_id IN ({', '.join('?' * len(holding_ids))}) ORDER BY q.id LIMIT 1)"
                  if holding_ids else "NULL")
    day = "CASE WHEN p.commodity = ? THEN NULL ELSE substr(p.ts, 1, 10) END"
    sql = (f"SELECT account_id, commodity, contract, day, SUM(units / {FACTOR}), SUM(units % {FACTOR}) FROM ("
           f"SELECT p.account_id, p.commodity, COALESCE({named}, {first_line}) AS contract, {day} AS day, p.units "
           f"FROM posting p{by_time} JOIN txn t ON t.id = p.txn_id "
           f"WHERE p.account_id IN ({', '.join('?' * len(pnl_ids))})" + (" AND p.ts >= ?" if since else "") +
           ") x GROUP BY account_id, commodity, contract, day")
    return sql, (*holding_ids, base, *pnl_ids, *((since,) if since else ()))


# -- opening ----------------------------------------------------------------------------------

class engine_reader:
    """A Reader on one of an SQLAlchemy engine's pooled connections, for a caller that holds an
    engine (the export): one read transaction, SQLite's page cache kept modest while it reads
    and given back as it was."""

    def __init__(self, engine):
        self.engine = engine

    def __enter__(self) -> Reader:
        self.pooled = self.engine.raw_connection()
        conn = self.pooled.driver_connection
        self.dialect = "sqlite" if self.engine.dialect.name == "sqlite" else "postgresql"
        if self.dialect == "sqlite":
            self.cache = conn.execute("PRAGMA cache_size").fetchone()[0]
            conn.execute(f"PRAGMA cache_size = -{READ_CACHE_KIB}")
            conn.execute("BEGIN")
        else:  # this transaction only: one snapshot for every query, as SQLite's read transaction
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return Reader(conn, self.dialect)

    def __exit__(self, *exc) -> bool:
        conn = self.pooled.driver_connection
        try:
            conn.rollback()
            if self.dialect == "sqlite":
                conn.execute(f"PRAGMA cache_size = {int(self.cache)}")
        finally:
            self.pooled.close()  # back to the pool
        return False


# SQLAlchemy's own pattern of a URL (sqlalchemy/engine/url.py, _parse_url), so that the parts are
# split where it splits them (a password may hold "/", "?" or ":").
_URL = re.compile(r"""
    (?P<name>[\w\+]+)://
    (?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6host>[^/\?]+)\]|(?P<ipv4host>[^/:\?]+))?(?::(?P<port>[^/\?]*))?)?
    (?:/(?P<database>[^\?]*))?
    (?:\?(?P<query>.*))?
    """, re.X)


def shown_url(url: str) -> str | None:
    """`url` as SQLAlchemy shows it with the password hidden (`make_url(url).render_as_string()`,
    what `status` prints), or None where it might show it otherwise (the full path then does).
    tests/test_reading.py holds it equal to SQLAlchemy's on many URLs."""
    m = _URL.match(url)
    if m is None:
        return None
    user, password, port, database, query = m.group("username", "password", "port", "database", "query")
    host = m.group("ipv4host") or m.group("ipv6host")
    shown = m.group("name") + "://"
    if user is not None:
        shown += quote(unquote(user), safe=" +") + (":***" if password is not None else "") + "@"
    if host is not None:
        shown += f"[{host}]" if ":" in host else host
    if port:
        if not port.isdigit():
            return None  # SQLAlchemy refuses it: the full path says so
        shown += ":" + str(int(port))
    elif port is not None:
        return None  # "host:" with no port
    if database is not None:
        shown += "/" + quote(unquote(database), safe=" +/")
    pairs = parse_qsl(query or "")  # blank values dropped, as SQLAlchemy drops them
    if len({key for key, _ in pairs}) != len(pairs):
        return None  # a key given twice: SQLAlchemy keeps a list of its values
    if pairs:
        shown += "?" + "&".join(f"{quote_plus(k)}={quote_plus(v)}" for k, v in sorted(pairs))
    return shown


def open_reader(url: str, busy_timeout_ms: int = 30000) -> Reader | None:
    """A Reader on `url` (a SQLAlchemy URL), or None when this module cannot open it as
    ledger/db.py would (the caller then takes the full path, which says what is wrong)."""
    scheme, _, rest = url.partition("://")
    if scheme in ("sqlite", "sqlite+pysqlite"):
        return _open_sqlite(rest, busy_timeout_ms)
    if scheme in ("postgresql+psycopg", "postgresql+psycopg3"):
        return _open_postgresql(url)
    return None


def _open_sqlite(rest: str, busy_timeout_ms: int) -> Reader | None:
    import sqlite3
    from pathlib import Path

    path, _, query = rest[1:].partition("?") if rest.startswith("/") else ("", "", "")
    if not path or query or path == ":memory:" or not Path(path).is_file():
        return None  # missing, in memory, or with options: the full path decides
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute(f"PRAGMA cache_size = -{READ_CACHE_KIB}")
        conn.execute("PRAGMA query_only = ON")
        conn.execute("BEGIN")  # deferred: a snapshot once the first read runs, no write lock
    except sqlite3.Error:
        conn.close()
        return None
    return Reader(conn, "sqlite")


def postgresql_params(url: str) -> dict[str, str] | None:
    """psycopg's connection keywords for a `postgresql+psycopg://` URL, as SQLAlchemy passes them."""
    parts = urlsplit(url)
    params: dict[str, str] = {}
    try:
        if parts.hostname:
            params["host"] = unquote(parts.hostname)
        if parts.port:
            params["port"] = str(parts.port)
    except ValueError:  # a port that is not a number: the full path says so
        return None
    if parts.username:
        params["user"] = unquote(parts.username)
    if parts.password is not None:
        params["password"] = unquote(parts.password)
    if parts.path.strip("/"):
        params["dbname"] = unquote(parts.path.lstrip("/"))
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in params or key in ("host", "port", "user", "password", "dbname"):
            return None  # a URL that spells a part twice: the full path decides
        params[key] = value
    return params


def _open_postgresql(url: str) -> Reader | None:
    params = postgresql_params(url)
    if params is None:
        return None
    import psycopg

    try:
        conn = psycopg.connect(**params)
    except psycopg.Error:
        return None  # unreachable or refused: the full path says so, in its words
    conn.read_only = True
    # one snapshot for every query of the command, as SQLite's read transaction gives
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    return Reader(conn, "postgresql")
