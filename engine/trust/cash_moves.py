"""One cash movement, one entry: what keeps a deposit, interest or a fee from being booked twice.

A cash movement (a deposit, a withdrawal, interest, a fee, an adjustment) is *what* moved: its
kind, currency, signed amount and the day it moved (`Movement`). It reaches the ledger by hand
(`adjust cash`, `actions interest|fee`) or from IB's Flex statement (`import flex`), and every one
of these keys a movement that has the broker's reference R by one function, `claim_ref` (under
R's lock: what stands for R, and the key a new booking takes), so that whichever comes first
books it and the others find it. `adjust cash` books it in one of two ways, decided here before
the dry run and again inside the booking's write transaction:

* **with the broker's reference** (`--ref R`: IB's transaction id, the `transactionID` of the
  Flex statement's cash line) the entry's idempotency key is derived from the account and R
  (`ref_key`), so the ledger's unique key index books R at most once, whoever runs it, however
  often, in however many processes at once. The key is the one `import flex` books a statement's
  interest and fees under (`{interest|fee}:<Acct>:flex-R`, entries.account_cash_entry), and
  `cash:<Acct>:flex-R` for the other kinds, whose Flex lines are proposed, not booked
  (flex.unbooked_moves meets them by R): the hand and the statement name one movement alike.
  Run again, R is found (`booked_by_ref`, under any kind's key): the same movement is a
  *replay* (nothing booked, `Replay`), another one (amount, currency, kind, or a `--date` that
  differs) is refused naming the entry. Only an entry that stands counts: once it is reversed
  (`adjust reverse N`), R may be booked again, under `…:flex-R:2`, then `:3`.
* **without a reference** the key is a fresh one per run, and an equal movement (same kind,
  currency and amount, dated the same day) already booked refuses the run (`equal_on_day`),
  unless the trader says `--again` (a real second deposit of that amount that day) or gives R.
  "The same day" is the movement's day: today's date without `--date`, else that date; a
  backdated movement is equal only to one booked for the same date.

A replay without `--date` matches whatever day R was booked for: the trader said nothing about
the day (a script retried after midnight is the same movement); with `--date` the day counts.
The reason is kept with the entry but is no part of the movement: a reworded retry is a replay.

`actions interest|fee --ref R` (`book_account_cash_by_ref`) is the same decision with the day
always given: R standing for this movement is a replay, for another one refused; the entry is
the statement's kind of entry (allocated by `[account_cash]`), with R (not `flex-R`) in its meta,
which tells it from the statement's own (`from_statement`). Before R was normalised that command
booked R as typed, under `{interest|fee}:<Acct>:R` (`legacy_keys`): such entries are found by R
too, so a ledger booked then is not booked again now. A ledger that old keying already booked
twice (R under the old key and the statement's) is found by `booked_twice`, which `db verify`
reports with the reversal that repairs it; nothing here reverses it.

`actions interest|fee` without `--ref` (`book_account_cash_plain`) is `adjust cash`'s decision
without a reference, keyed by the movement itself (`plain_ref`: kind, currency, amount, day, never
the reason) under the currency's day's lock (`lock_day`, taken by `adjust cash` without R too): an
equal movement standing refuses the run unless `--again`; the very same command again (the equal
entry has its reason) is a `Replay`. `import flex` counts a standing entry booked by hand without a
reference for the very movement of a statement's line as that line (`by_hand_without_ref`), one
line each: reconciliation once proposed interest without the broker's id.

Every way in by hand first asks the opening's cut-off (`cutoff.decide_by_hand`): a movement the
opening's cash holds (its reference one the opening recorded, or its day before the opening's) is
refused, since booking it would count it twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tradeledger.engine.accounting.corporate import AccountCash
from tradeledger.engine.trust import cutoff
from tradeledger.errors import AdjustError
from tradeledger.ledger.accounts import Chart
from tradeledger.ledger.model import Transaction

REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")
FLEX = "flex-"  # how `import flex` names IB's transaction id in its keys (flex.read_flex)
STATEMENT_KINDS = ("interest", "fee")  # booked by `import flex` itself, under its own key
ENTRY_KINDS = ("cash-adjust", "interest", "fee")  # the ledger kinds of entries that move cash so


class Replay(AdjustError):
    """The movement is already booked, exactly as asked: nothing to book (not a failure)."""

    def __init__(self, entry: int, ref: str | None, movement: Movement):
        super().__init__(f"already booked as entry {entry}")
        self.entry, self.ref, self.movement = entry, ref, movement


@dataclass(frozen=True)
class Movement:
    kind: str  # a CASH_KIND: deposit, withdrawal, interest, fee, adjustment
    currency: str
    amount: Decimal  # signed as it moved the broker's cash
    day: dt.date

    def said(self) -> str:
        return f"{self.kind} {self.amount} {self.currency} on {self.day.isoformat()}"


@dataclass(frozen=True)
class Earlier:
    """A booked entry that moved cash, as a movement; `ref` when it was booked under one."""

    entry: int
    movement: Movement
    narration: str
    ref: str | None = None

    def as_json(self) -> dict:
        return {"entry": self.entry, "kind": self.movement.kind, "currency": self.movement.currency,
                "amount": self.movement.amount, "date": self.movement.day, "ref": self.ref,
                "narration": self.narration}


def normal_ref(ref: str) -> str:
    """The broker's reference as the trader may type it (`9006`, or `flex-9006` as a statement's
    exception shows it): IB's transaction id. Refused when it cannot be part of a key."""
    ref = ref.strip()
    if ref.startswith(FLEX):
        ref = ref[len(FLEX):]
    if not REF.fullmatch(ref):
        raise AdjustError(f"--ref {ref!r}: the broker's reference is letters, digits and . _ / - (up to 64), "
                          "e.g. IB's transaction id 1234567890")
    return ref


def ref_key(account: str, kind: str, ref: str, n: int = 1) -> str:
    """The idempotency key of the movement R, booked as `kind`; n > 1 after the earlier ones were reversed."""
    prefix = kind if kind in STATEMENT_KINDS else "cash"
    return f"{prefix}:{account}:{FLEX}{ref}" + (f":{n}" if n > 1 else "")


def legacy_keys(account: str, ref: str) -> tuple[str, ...]:
    """The keys `actions interest|fee --ref R` booked R under before R was normalised (R as typed,
    without `flex-`; typed `flex-R` it took `ref_key`'s own). Read, never written any more."""
    return tuple(f"{kind}:{account}:{ref}" for kind in STATEMENT_KINDS)


def lock_ref(conn: Connection, account: str, ref: str) -> None:
    """Serialise the bookings of one broker reference until this transaction ends (PostgreSQL; SQLite
    has one writer): a hand booking and a statement's, or two kinds of one R, keyed apart
    (`ref_key`), cannot both book it."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                     {"key": f"tl:cashref:{account}:{ref}"})


def ref_of_key(account: str, key: str | None) -> str | None:
    """R when `key` is one of `ref_key`'s (by hand or from a statement), else None."""
    for prefix in ("cash",) + STATEMENT_KINDS:
        head = f"{prefix}:{account}:{FLEX}"
        if key and key.startswith(head):
            return key[len(head):].split(":", 1)[0]
    return None


def movement_of(chart: Chart, txn: Transaction) -> Movement:
    """What an entry moved: its kind (an `adjust cash` entry says it in its meta), the currency
    and amount it posted to the broker's cash, its day."""
    kind = dict(txn.meta).get("adjust", "adjustment") if txn.kind == "cash-adjust" else txn.kind
    cash = [p for p in txn.postings if p.account == chart.cash]
    currency = cash[0].commodity if cash else ""
    return Movement(kind, currency, sum((p.units for p in cash), Decimal(0)), txn.date)


def _earlier(conn: Connection, ledger, chart: Chart, ids) -> list[Earlier]:
    """The entries `ids` that stand (none reverses them), as movements, in booking order."""
    reversed_ = ledger.reversals(ids, conn)
    out = []
    for entry in sorted(set(ids) - set(reversed_)):
        txn = ledger.get(entry, conn)
        out.append(Earlier(entry, movement_of(chart, txn), txn.narration, ref_of_key(chart.broker_account, txn.key)))
    return out


def booked_by_ref(conn: Connection, ledger, chart: Chart, ref: str) -> tuple[Earlier | None, dict[str, int]]:
    """The entry that stands for R (None when none does), and every key R was ever booked under
    (the reversed ones too: the next booking takes the next number)."""
    account, n = chart.broker_account, 1
    found = ledger.ids_by_key(legacy_keys(account, ref), conn)  # a ledger booked before R was normalised
    while True:  # a reference is rebooked only after a reversal: rarely more than once
        batch = [ref_key(account, kind, ref, i) for kind in ("cash",) + STATEMENT_KINDS for i in range(n, n + 16)]
        hits = ledger.ids_by_key(batch, conn)
        found.update(hits)
        if not hits:
            break
        n += 16
    standing = _earlier(conn, ledger, chart, found.values())
    return (standing[0] if standing else None), found


def next_ref_key(account: str, kind: str, ref: str, found: dict[str, int]) -> str:
    """The key a new booking of R as `kind` takes: the first number not taken."""
    n = 1
    while ref_key(account, kind, ref, n) in found:
        n += 1
    return ref_key(account, kind, ref, n)


@dataclass(frozen=True)
class Claim:
    """What R stands for, under R's lock (`claim_ref`)."""

    standing: Earlier | None  # the entry that stands for R, None when none does
    taken: dict[str, int]  # every key R was ever booked under (reversed ones, the old form's)
    key: str  # the key a new booking of R takes


def claim_ref(conn: Connection, ledger, chart: Chart, kind: str, ref: str) -> Claim:
    """The one keying of a movement by the broker's reference R (normal_ref'd), as `kind`, for
    every entry point (adjust cash, actions interest|fee, import flex): R locked until the
    caller's transaction ends, the entry that stands for R, and the key a new booking takes."""
    lock_ref(conn, chart.broker_account, ref)
    standing, taken = booked_by_ref(conn, ledger, chart, ref)
    return Claim(standing, taken, next_ref_key(chart.broker_account, kind, ref, taken))


def from_statement(txn: Transaction) -> bool:
    """Whether `import flex` booked the entry: its interest and fees carry `flex-R` in their meta,
    those booked by hand R itself (an `adjust cash` entry is the trader's)."""
    return txn.kind in STATEMENT_KINDS and dict(txn.meta).get("ref", "").startswith(FLEX)


def book_account_cash_by_ref(ctx, item: AccountCash) -> int:
    """`actions interest|fee --ref R` (`item.ref` is R, normal_ref'd): the interest or fee booked
    under R's key, unless R stands for an entry already: this very movement (kind, currency,
    amount and day) is a `Replay`, another one is refused naming the entry (`decide_ref`).
    Returns the entry booked; one transaction."""
    from tradeledger.engine.accounting.actions import book_account_cash  # accounting books; trust decides

    asked = Movement(item.kind, item.currency, item.amount, item.date)
    with ctx.engine.begin() as conn:
        claim = claim_ref(conn, ctx.ledger, ctx.chart, item.kind, item.ref)
        cutoff.decide_by_hand(cutoff.opening_cut(conn, ctx.chart.broker_account), item.date, item.ref, asked.said())
        decide_ref(claim.standing, asked, True, item.ref)
        entry, created = book_account_cash(ctx, item, conn, key=claim.key)
        if not created:  # the key was taken meanwhile by a process that took no lock (an older one)
            booked = ctx.ledger.get(entry, conn)
            decide_ref(Earlier(entry, movement_of(ctx.chart, booked), booked.narration, item.ref), asked, True,
                       item.ref)
        return entry


def lock_day(conn: Connection, account: str, currency: str, day: dt.date) -> None:
    """Serialise the bookings of movements without a reference in one currency on one day until
    this transaction ends (PostgreSQL, whose writers read committed: the second sees the first's
    entry; SQLite has one writer): two runs at once cannot both find no equal movement and book."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                     {"key": f"tl:cashday:{account}:{currency}:{day.isoformat()}"})


def plain_ref(movement: Movement) -> str:
    """The reference of a movement booked by hand without the broker's (`actions interest|fee`
    without `--ref`): derived from the movement alone, never from its reason (pure)."""
    amount = format(movement.amount.normalize(), "f")  # 12.340 and 12.34 are one amount
    text = f"{movement.kind}|{movement.day.isoformat()}|{amount}|{movement.currency}"
    return "manual-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _first_free(conn: Connection, ledger, head: str) -> str:
    """`head`, else `head:2`, `head:3`...: the first key no entry is booked under."""
    n = 1
    while True:
        batch = [head if i == 1 else f"{head}:{i}" for i in range(n, n + 16)]
        taken = ledger.ids_by_key(batch, conn)
        free = next((k for k in batch if k not in taken), None)
        if free is not None:
            return free
        n += 16


def book_account_cash_plain(ctx, item: AccountCash, again: bool = False) -> int:
    """`actions interest|fee` without `--ref`: refused when an equal movement (kind, currency,
    amount, day) stands already, unless `again` (`decide_plain`); the same command run again (an
    equal entry with the same reason) is a `Replay`. Keyed by the movement (`plain_ref`, then `:2`,
    `:3` for each real second one), under the day's lock: two runs at once book once. Returns
    the entry booked; one transaction."""
    from tradeledger.engine.accounting.actions import book_account_cash  # accounting books; trust decides

    chart = ctx.chart
    asked = Movement(item.kind, item.currency, item.amount, item.date)
    with ctx.engine.begin() as conn:
        lock_day(conn, chart.broker_account, item.currency, item.date)
        cutoff.decide_by_hand(cutoff.opening_cut(conn, chart.broker_account), item.date, None, asked.said())
        equal = equal_on_day(conn, ctx.ledger, chart, asked)
        same = next((e for e in equal if e.narration == item.description), None)
        if same is not None and not again:
            raise Replay(same.entry, same.ref, same.movement)
        decide_plain(equal, asked, again)
        key = _first_free(conn, ctx.ledger, f"{item.kind}:{chart.broker_account}:{item.ref}")
        entry, created = book_account_cash(ctx, item, conn, key=key)
        if not created:  # cannot happen under the day's lock; never say booked when it was not
            raise AdjustError(f"already booked as entry {entry}")
        return entry


def ref_of_any_key(account: str, key: str) -> str | None:
    """R of a key any way in ever booked R under (pure): `ref_key`'s (`…:flex-R`, `…:flex-R:n`) and
    the old form of `actions interest|fee --ref R` (`{interest|fee}:<Acct>:R`, `legacy_keys`). A
    movement booked without a reference (`plain_ref`'s `manual-…`) has none."""
    ref = ref_of_key(account, key)
    if ref is not None:
        return ref
    for kind in STATEMENT_KINDS:
        head = f"{kind}:{account}:"
        if key.startswith(head):
            tail = key[len(head):]
            if not tail.startswith("manual-") and ":" not in tail and REF.fullmatch(tail):
                return tail
    return None


@dataclass(frozen=True)
class Twice:
    """One broker reference R that more than one standing entry was booked for: the old bug's
    double booking (the hand's entry under `interest:<Acct>:R`, the statement's under `…:flex-R`)."""

    ref: str
    entries: tuple[Earlier, ...]  # in booking order
    keep: int  # the entry to keep: the statement's (the record), else the first
    keys: dict[int, str]

    def said(self) -> str:
        """The finding, naming every entry and the reversal that repairs it (not run: a person decides)."""
        shown = "; ".join(f"entry {e.entry} ({e.movement.said()}, key {self.keys[e.entry]})" for e in self.entries)
        drop = [e.entry for e in self.entries if e.entry != self.keep]
        same = len({e.movement for e in self.entries}) == 1
        return (f"ref {self.ref} is booked {len(self.entries)} times: {shown}; "
                + ("the same movement: " if same else "they differ: check which is right, then ")
                + "; ".join(f'`tradeledger adjust reverse {n} --reason "booked twice: ref {self.ref} stands as '
                            f'entry {self.keep}"`' for n in drop))


def booked_twice(conn: Connection, ledger, chart: Chart) -> list[Twice]:
    """Every broker reference that more than one standing entry was booked for (`db verify`): a
    ledger booked before the keying was one (`claim_ref`) may hold a movement under the old key and
    the statement's. Read only: nothing is reversed here."""
    account = chart.broker_account
    keys = ledger.keys_of_kind(ENTRY_KINDS, conn)
    by_ref: dict[str, list[int]] = {}
    for entry, key in keys.items():
        ref = ref_of_any_key(account, key)
        if ref is not None:
            by_ref.setdefault(ref, []).append(entry)
    out = []
    for ref, ids in sorted(by_ref.items()):
        if len(ids) < 2:
            continue
        standing = _earlier(conn, ledger, chart, ids)
        if len(standing) < 2:
            continue
        statement = [e.entry for e in standing if from_statement(ledger.get(e.entry, conn))]
        out.append(Twice(ref, tuple(standing), (statement or [standing[0].entry])[0],
                         {e.entry: keys[e.entry] for e in standing}))
    return out


def refs_of_entries(conn: Connection, ledger, account: str, ids) -> dict[int, str]:
    """Entry id -> the broker's reference R it was booked under (`adjust list`), for those of `ids`
    that have one; a reversal names the R of the entry it reverses."""
    out = {}
    for entry in ids:
        txn = ledger.get(entry, conn)
        if txn.reverses is not None:
            txn = ledger.get(txn.reverses, conn)
        ref = ref_of_key(account, txn.key)
        if ref is not None:
            out[entry] = ref
    return out


def equal_on_day(conn: Connection, ledger, chart: Chart, movement: Movement) -> list[Earlier]:
    """Standing entries that moved the same amount of the same currency, as the same kind, on the
    movement's day: `adjust cash` entries, and the interest and fees booked from statements."""
    kinds = ENTRY_KINDS if movement.kind in STATEMENT_KINDS else ("cash-adjust",)
    ids = ledger.entry_ids_on(movement.day, kinds, conn)
    return [e for e in _earlier(conn, ledger, chart, ids) if e.movement == movement]


def unreferenced(txn: Transaction) -> bool:
    """Whether the entry was booked by hand without the broker's reference: an `adjust cash` entry
    not keyed by one, an `actions interest|fee` entry keyed by its movement (`plain_ref`)."""
    if txn.kind == "cash-adjust":
        return "ref" not in dict(txn.meta)  # cash_entry: booked with the broker's reference, it says it
    return txn.kind in STATEMENT_KINDS and dict(txn.meta).get("ref", "").startswith("manual-")


def by_hand_without_ref(conn: Connection, ledger, chart: Chart, movement: Movement, taken: set[int]) -> Earlier | None:
    """A standing entry booked by hand without a reference for this very movement (kind, currency,
    amount, day), not among `taken` (those another line of the statement stands for already): what
    a statement's line is, when the trader booked it before the statement came (as reconciliation
    proposed it, without the id). None when there is none."""
    for earlier in equal_on_day(conn, ledger, chart, movement):
        if earlier.ref is None and earlier.entry not in taken and unreferenced(ledger.get(earlier.entry, conn)):
            return earlier
    return None


def differs(booked: Movement, asked: Movement, dated: bool, by: str = "asked") -> list[str]:
    """What of the asked movement differs from the booked one (pure): the day only when `dated`;
    `by` says who asks (a statement)."""
    out = [f"{name} {getattr(booked, name)} ({by} {getattr(asked, name)})"
           for name in ("kind", "currency", "amount") if getattr(booked, name) != getattr(asked, name)]
    if dated and booked.day != asked.day:
        out.append(f"date {booked.day.isoformat()} ({by} {asked.day.isoformat()})")
    return out


def decide_ref(earlier: Earlier | None, asked: Movement, dated: bool, ref: str) -> None:
    """With a reference: nothing when R stands for no entry (book it); `Replay` when it stands for
    this very movement; refused, naming the entry and what differs, when for another (pure)."""
    if earlier is None:
        return
    what = differs(earlier.movement, asked, dated)
    if not what:
        raise Replay(earlier.entry, ref, earlier.movement)
    raise AdjustError(f"ref {ref} is already booked as entry {earlier.entry} with another movement: "
                      f"{', '.join(what)}; if the booked one is wrong, `adjust reverse {earlier.entry}` first, "
                      "then run this again")


def decide_plain(equal: list[Earlier], asked: Movement, again: bool) -> None:
    """Without a reference: refused when an equal movement stands on the day, unless `again` (pure)."""
    if equal and not again:
        first = equal[0]
        raise AdjustError(f"an equal {asked.said()} is already booked as entry {first.entry}"
                          + (f" (ref {first.ref})" if first.ref else "")
                          + ": if this is that one, nothing to do; give --ref REF (the broker's id of this "
                          "movement) or --again if it is a second one")


def replay_or_refuse(conn: Connection, ledger, chart: Chart, entry: int, txn: Transaction, ref: str) -> None:
    """R's key was booked by another run between this run's look-up and its booking (the unique key
    index refused this one): a `Replay` when it booked this movement, else refused. Always raises."""
    booked = ledger.get(entry, conn)
    decide_ref(Earlier(entry, movement_of(chart, booked), booked.narration, ref), movement_of(chart, txn), True, ref)
