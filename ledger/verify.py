"""`tradeledger db verify`: is the database still the ledger it should be?

The database refuses bad writes (migrations 0001, 0005), but a file can still rot on disk, be
restored from a bad copy, or be written by something that bypassed the rules. Verification
reads everything again, by a second road, and compares:

1. **storage**: SQLite's own `PRAGMA integrity_check` (pages, indexes), and on both backends
   postings whose header or account is missing (written with the rules switched off);
2. **entries**: every entry re-summed in Python from its posting rows: it has postings, they
   carry its time, and their weights are zero per currency;
3. **balances**: every (account, commodity) balance re-derived in Python from the posting
   rows and compared with what the ledger's own balance query answers (`Ledger.balances`, which
   reads the maintained balances), and every maintained lot re-summed from its postings
   (`maintained.verify_balances`);
4. **links**: every reversal names an existing entry that is not itself a reversal, at most
   once, and its postings are exactly the original's negated;
5. **checkpoints**: every stored checkpoint of the trader's curves (reports/series_checkpoint.py)
   still finds in the price-change log at least the changes on or before its day it counted
   there: the log only grows, and its prune folds rows without losing one, so a smaller sum
   means rows it needs were pruned (and a later change could go unseen).

Each problem is one `Finding` (which check, what); `Verification.ok` is whether there are none.
A database so damaged that it cannot be read is one finding, not a traceback.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa

from tradeledger.ledger.db import read_connection
from tradeledger.ledger.numbers import from_scaled

CHECKS = ("storage", "entries", "balances", "links", "checkpoints")
_SHOWN = 20  # findings per check, beyond which they are counted


@dataclass(frozen=True)
class Finding:
    check: str
    detail: str


@dataclass(frozen=True)
class Verification:
    findings: tuple[Finding, ...]
    entries: int
    postings: int

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_json(self) -> dict:
        return {"ok": self.ok, "entries": self.entries, "postings": self.postings,
                "findings": [{"check": f.check, "detail": f.detail} for f in self.findings]}


def verify(ledger) -> Verification:
    findings: list[Finding] = []
    counts = [0, 0]
    for check in (_storage, _entries_and_balances, _lots, _links, _checkpoints):
        try:
            check(ledger, findings, counts)
        except sa.exc.DBAPIError as exc:  # a damaged file: say so, and what it said
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            findings.append(Finding(check.__name__.strip("_").split("_")[0], f"cannot be read: {reason}"))
    return Verification(tuple(_capped(findings)), counts[0], counts[1])


def _capped(findings: list[Finding]) -> list[Finding]:
    shown: dict[str, int] = defaultdict(int)
    out = []
    for finding in findings:
        shown[finding.check] += 1
        if shown[finding.check] <= _SHOWN:
            out.append(finding)
    for check, n in shown.items():
        if n > _SHOWN:
            out.append(Finding(check, f"... and {n - _SHOWN} more"))
    return out


def _storage(ledger, findings: list[Finding], counts) -> None:
    with read_connection(ledger.engine) as c:
        if c.dialect.name == "sqlite":
            for (line,) in c.exec_driver_sql("PRAGMA integrity_check"):
                if line != "ok":
                    findings.append(Finding("storage", f"integrity_check: {line}"))
        for (pid, txn_id) in c.exec_driver_sql(
                "SELECT p.id, p.txn_id FROM posting p LEFT JOIN txn t ON t.id = p.txn_id WHERE t.id IS NULL"):
            findings.append(Finding("storage", f"posting {pid} names a missing entry {txn_id}"))
        for (pid, account_id) in c.exec_driver_sql(
                "SELECT p.id, p.account_id FROM posting p LEFT JOIN account a ON a.id = p.account_id "
                "WHERE a.id IS NULL"):
            findings.append(Finding("storage", f"posting {pid} names a missing account {account_id}"))


def _entries_and_balances(ledger, findings: list[Finding], counts) -> None:
    derived: dict[tuple[int, str], int] = defaultdict(int)
    with read_connection(ledger.engine) as c:
        names = dict(c.exec_driver_sql("SELECT id, name FROM account").all())
        headers = dict(c.exec_driver_sql("SELECT id, ts FROM txn").all())
        rows = c.execution_options(yield_per=20000).exec_driver_sql(
            "SELECT txn_id, ts, account_id, commodity, units, weight, weight_currency FROM posting ORDER BY txn_id")
        current, weights, with_postings = None, defaultdict(int), set()

        def close(txn_id) -> None:
            unbalanced = {ccy: w for ccy, w in weights.items() if w}
            if unbalanced:
                what = ", ".join(f"{from_scaled(w)} {ccy}" for ccy, w in sorted(unbalanced.items()))
                findings.append(Finding("entries", f"entry {txn_id} does not balance: {what}"))

        for txn_id, ts, account_id, commodity, units, weight, weight_ccy in rows:
            counts[1] += 1
            if txn_id != current:
                if current is not None:
                    close(current)
                current, weights = txn_id, defaultdict(int)
                with_postings.add(txn_id)
            weights[weight_ccy] += weight
            derived[(account_id, commodity)] += units
            if txn_id in headers and headers[txn_id] != ts:
                findings.append(Finding("entries", f"entry {txn_id} has a posting at {ts}, not at its time"))
        if current is not None:
            close(current)
        counts[0] = len(headers)
        for txn_id in sorted(set(headers) - with_postings):
            findings.append(Finding("entries", f"entry {txn_id} has no postings"))
        try:
            queried = ledger.balances(conn=c)
        except KeyError as exc:  # a posting's account is gone (reported under storage)
            findings.append(Finding("balances", f"the balance query fails: no account {exc}"))
            return
    expected = {(names.get(a, f"#{a}"), com): from_scaled(v) for (a, com), v in derived.items() if v}
    for key in sorted(set(expected) | set(queried)):
        have, want = queried.get(key, Decimal(0)), expected.get(key, Decimal(0))
        if have != want:
            findings.append(Finding("balances", f"{key[0]} {key[1]}: the ledger answers {have}, its postings "
                                                f"sum to {want}"))


def _lots(ledger, findings: list[Finding], counts) -> None:
    from tradeledger.ledger.maintained import verify_balances

    for difference in verify_balances(ledger.engine):
        if difference.table == "lot_balance":  # the balances themselves are compared above
            findings.append(Finding("balances", str(difference)))


def _links(ledger, findings: list[Finding], counts) -> None:
    with read_connection(ledger.engine) as c:
        kinds = dict(c.exec_driver_sql("SELECT id, reverses_id FROM txn").all())
        reversals = [(i, r) for i, r in kinds.items() if r is not None]
        seen: dict[int, int] = {}
        for txn_id, original in sorted(reversals):
            if original not in kinds:
                findings.append(Finding("links", f"entry {txn_id} reverses entry {original}, which does not exist"))
                continue
            if kinds[original] is not None:
                findings.append(Finding("links", f"entry {txn_id} reverses entry {original}, itself a reversal"))
            if original in seen:
                findings.append(Finding("links", f"entry {original} is reversed twice ({seen[original]}, {txn_id})"))
            seen[original] = txn_id
        legs: dict[int, dict] = defaultdict(lambda: defaultdict(int))
        wanted = set(seen) | set(seen.values())
        if not wanted:
            return
        ids = sorted(wanted)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            query = sa.text("SELECT txn_id, account_id, commodity, units, weight_currency, weight FROM posting "
                            "WHERE txn_id IN :ids").bindparams(sa.bindparam("ids", expanding=True))
            for txn_id, account_id, commodity, units, wccy, weight in c.execute(query, {"ids": chunk}):
                legs[txn_id][(account_id, commodity, wccy)] += units
                legs[txn_id][("weight", wccy, None)] += weight
    for original, reversal in seen.items():
        negated = {k: -v for k, v in legs[original].items() if v}
        if {k: v for k, v in legs[reversal].items() if v} != negated:
            findings.append(Finding("links", f"entry {reversal} does not exactly undo entry {original}"))


def _checkpoints(ledger, findings: list[Finding], counts) -> None:
    with read_connection(ledger.engine) as c:
        for by, day, counted, now in c.exec_driver_sql(
                "SELECT s.series_by, s.day, s.price_changes, (SELECT COALESCE(SUM(p.n), 0) FROM price_change p "
                "WHERE p.day <= s.day) FROM series_checkpoint s ORDER BY s.series_by"):
            if int(now) < int(counted):
                findings.append(Finding("checkpoints", f"the checkpoint of {by} at {day} counted {counted} price "
                                                       f"changes on or before its day, the log holds {now}: "
                                                       "rows it needs were pruned"))
