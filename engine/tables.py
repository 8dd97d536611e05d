"""The engine's tables, all in one place: market data, targets, orders and fills; reconciliation;
the daemon and maintenance records.

Migrations 0002-0004 created them (each migration carries a frozen copy of its tables as they
stood then); these Core objects mirror the current schema. Money, prices and quantities are BIGINT
nano-units like the ledger's (`ledger/numbers.py`); forecasts are unitless decimal text. Times
are UTC text in the ledger's format, dates ISO text. Only the engine reads and writes these
tables; the ledger's own tables (`ledger/schema.py`) are reached through `ledger.store.Ledger`.

Market data, targets, orders and fills (migration 0002):
- `price_bar`, `settlement`, `fx_rate`, `forecast`: imported or computed facts, one row per key;
- `target_run` + `target_line`: an immutable snapshot; only the run's review state moves, once,
  from pending to approved or rejected;
- `broker_order` (+ `order_alloc`, `internal_cross`): recorded before anything is sent; its
  state follows the broker's reports;
- `fill` (+ `fill_alloc`): one row per execution (keyed by account and the execution id without
  its correction suffix), with the ledger entries that booked it;
- `position_mark`: the price each holder's position in a contract was last marked at, written in
  the same database transaction as the ledger entry that moved it.

Reconciliation (migration 0003):
- `broker_snapshot` (+ `snapshot_position`, `snapshot_cash`, `snapshot_order`): what the broker
  said at one moment, written once. A failed snapshot is a row with status `failed` and its
  error and no positions: it is never read as "flat".
- `reconciliation`: one row per reconciliation, with the snapshot it compared and its result
  as JSON (the same JSON `tradeledger reconcile --json` prints). `run_at` is the environment's
  clock (the simulated exchange's on sim); `written_at` (migration 0016) the database's clock at
  the insert, what the health endpoint measures the reconciliation's age by.
- `tl_exception`: typed exceptions with a lifecycle open -> acknowledged -> resolved; at most
  one open (or acknowledged) row per dedupe key, enforced by a partial unique index.
- `instrument_lock`: a lock per (instrument or contract, exception); active while
  `unlocked_at` is NULL. Orders for a locked key are refused with the lock's reason.

The daemon and maintenance (migration 0004):
- `daemon_lease`: at most one row per environment. The daemon that holds it (owner, pid, host)
  renews `expires_at` while it runs; a second daemon is refused while the lease has not expired,
  and takes it over once it has (the first one died without releasing it). Its times, like the
  trading lease's, are the database's clock (`ledger/dbclock.py`), the one every host sees.
- `daemon_heartbeat`: one row per environment, rewritten after every job and on every renewal;
  `at` and `started_at` are the database's clock (ledger/dbclock.py), like the leases' times.
- `adjustment`: one row per maintenance entry booked by `tradeledger adjust ...`: what was done,
  to what, why, by whom, the ledger entry that records it, and the marks the contract's holders
  had before (so that the entry can be reversed with the mark chain intact).
  The APScheduler job store lives in the same database (`tl_apscheduler_jobs`, its own table).

The opening (migration 0007):
- `opening`: at most one row per broker account: when tradeledger first reached the broker, the
  snapshot it took, the one ledger entry that booked what the account held (NULL if nothing),
  and a JSON summary of positions and cash as held and as booked. No order is sent without it.

Alerts (migration 0009):
- `alert_outbox`: one row per (alert, channel), written once (the deduplication), sent outside
  any transaction and its outcome recorded: sent, retried with backoff, failed, or dropped.

Never trade twice (migration 0010):
- `trading_lease`: at most one row per environment, held by the one process that plans, sends
  and books orders (`engine/trading/lease.py`); taken over once expired or once its process is
  gone from this host.
- `run_plan`: one row per (run, contract) written in the transaction that records the run's
  plan: what the run decided for that contract (an order, a cross, nothing, refused or clipped by
  a limit) and why, so that a run is planned once and a resubmission says why a line sends nothing.
- `target_run.unattended`: 1 when the run was approved by `cycle --unattended`, i.e. no person
  reviewed it.

The trader's curves (migration 0015):
- `series_checkpoint`: per grouping, the daily series' replay state at the end of a past day and
  the series to it (reports/series_checkpoint.py); `price_change`: a log of the dates whose price,
  settlement or FX rate moved, appended to by triggers, that tells a checkpoint it is stale; its
  rows on or before the oldest checkpoint's day are folded into one that stands for them (`n`,
  migration 0017).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text, UniqueConstraint

metadata = MetaData()

# -- market data, targets, orders and fills (0002) ------------------------------------------

price_bar = Table(
    "price_bar", metadata,
    Column("instrument", String(64), primary_key=True),
    Column("date", String(10), primary_key=True),
    Column("close", BigInteger, nullable=False),
)

settlement = Table(
    "settlement", metadata,
    Column("contract", String(64), primary_key=True),
    Column("date", String(10), primary_key=True),
    Column("price", BigInteger, nullable=False),
)

fx_rate = Table(
    "fx_rate", metadata,
    Column("currency", String(16), primary_key=True),
    Column("date", String(10), primary_key=True),
    Column("rate", BigInteger, nullable=False),  # base currency per one unit of `currency`
)

forecast = Table(
    "forecast", metadata,
    Column("strategy", String(64), primary_key=True),
    Column("instrument", String(64), primary_key=True),
    Column("date", String(10), primary_key=True),
    Column("value", String(40), nullable=False),
    Column("source", String(16), nullable=False),  # rule | import
)

target_run = Table(
    "target_run", metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", String(26), nullable=False),
    Column("as_of", String(10), nullable=False),
    Column("state", String(16), nullable=False),  # pending | approved | rejected
    Column("reviewed_at", String(26)),
    Column("reviewed_by", String(64)),
    Column("review_note", Text),
    Column("inputs", Text, nullable=False),  # JSON: config and prices the run was computed from
    Column("unattended", Integer, nullable=False, server_default="0"),  # 1: approved with no person's review (0010)
)

target_line = Table(
    "target_line", metadata,
    Column("run_id", Integer, primary_key=True),
    Column("strategy", String(64), primary_key=True),
    Column("instrument", String(64), primary_key=True),
    Column("contract", String(64), nullable=False),
    Column("current", BigInteger, nullable=False),
    Column("target", BigInteger, nullable=False),
    Column("explain", Text, nullable=False),  # JSON: every figure the target came from
)

broker_order = Table(
    "broker_order", metadata,
    Column("id", Integer, primary_key=True),
    Column("order_ref", String(64), nullable=False, unique=True),
    Column("run_id", Integer),
    Column("contract", String(64), nullable=False),
    Column("contract_spec", Text, nullable=False),  # JSON of the broker Contract sent
    Column("side", String(4), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("order_type", String(8), nullable=False),
    Column("limit_price", BigInteger),
    Column("state", String(16), nullable=False),  # planned, sent, partial, filled, cancelled, rejected
    Column("filled", BigInteger, nullable=False, server_default="0"),
    Column("broker_order_id", BigInteger),
    Column("perm_id", BigInteger),
    Column("reason", Text),
    Column("created_at", String(26), nullable=False),
    Column("sent_at", String(26)),
)

order_alloc = Table(
    "order_alloc", metadata,
    Column("order_id", Integer, primary_key=True),
    Column("holder", String(64), primary_key=True),  # a strategy's account component ("" unattributed)
    Column("quantity", BigInteger, nullable=False),  # the strategy's share of the order, unsigned
)

internal_cross = Table(
    "internal_cross", metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", Integer, nullable=False),
    Column("contract", String(64), nullable=False),
    Column("seller", String(64), nullable=False),
    Column("buyer", String(64), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("txn_id", BigInteger),
)

fill = Table(
    "fill", metadata,
    Column("id", Integer, primary_key=True),
    Column("account", String(32), nullable=False),
    Column("exec_key", String(96), nullable=False),  # execution id without its correction suffix
    Column("exec_id", String(96), nullable=False),  # the version booked
    Column("order_id", Integer),
    Column("order_ref", String(64), nullable=False, server_default=""),
    Column("contract", String(64), nullable=False),
    Column("side", String(4), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("time", String(26), nullable=False),
    Column("commission", BigInteger),  # NULL while pending
    Column("commission_currency", String(16)),
    Column("txn_id", BigInteger, nullable=False),
    Column("commission_txn_id", BigInteger),
    Column("superseded_by", Integer),  # a corrected execution's replacement fill
)

fill_alloc = Table(
    "fill_alloc", metadata,
    Column("fill_id", Integer, primary_key=True),
    Column("holder", String(64), primary_key=True),  # strategy component, or "" for unattributed
    Column("quantity", BigInteger, nullable=False),  # signed
)

position_mark = Table(
    "position_mark", metadata,
    Column("holder", String(64), primary_key=True),
    Column("contract", String(64), primary_key=True),
    Column("price", BigInteger, nullable=False),
    Column("time", String(26), nullable=False),
)


# -- reconciliation (0003) ---------------------------------------------------------------

broker_snapshot = Table(
    "broker_snapshot", metadata,
    Column("id", Integer, primary_key=True),
    Column("account", String(32), nullable=False),
    Column("taken_at", String(26), nullable=False),  # the broker's time (our clock if it failed)
    Column("recorded_at", String(26), nullable=False),
    Column("status", String(8), nullable=False),  # ok | failed
    Column("error", Text),
    Column("positions", Integer, nullable=False, server_default="0"),
)

snapshot_position = Table(
    "snapshot_position", metadata,
    Column("snapshot_id", Integer, primary_key=True),
    Column("contract", String(64), primary_key=True),
    Column("contract_spec", Text, nullable=False),  # JSON of the broker Contract
    Column("quantity", BigInteger, nullable=False),
    Column("avg_cost", BigInteger, nullable=False),
)

snapshot_cash = Table(
    "snapshot_cash", metadata,
    Column("snapshot_id", Integer, primary_key=True),
    Column("currency", String(16), primary_key=True),
    Column("cash", BigInteger, nullable=False),
    Column("unsettled", BigInteger, nullable=False),
)

snapshot_order = Table(
    "snapshot_order", metadata,
    Column("snapshot_id", Integer, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("order_ref", String(64), nullable=False),
    Column("broker_order_id", BigInteger),
    Column("contract", String(64), nullable=False),
    Column("side", String(4), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("filled", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
)

reconciliation = Table(
    "reconciliation", metadata,
    Column("id", Integer, primary_key=True),
    Column("snapshot_id", Integer),
    Column("run_at", String(26), nullable=False),  # the environment's clock (the exchange's on sim)
    Column("clean", Integer, nullable=False),  # 1 clean, 0 not
    Column("breaks", Integer, nullable=False),
    Column("result", Text, nullable=False),  # JSON
    Column("written_at", String(26)),  # the database's clock at the insert (0016): what its age is measured by
)

tl_exception = Table(
    "tl_exception", metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("severity", String(8), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("detail", Text, nullable=False),
    Column("dedupe_key", String(250), nullable=False),
    Column("state", String(16), nullable=False),  # open | acknowledged | resolved
    Column("first_seen", String(26), nullable=False),
    Column("last_seen", String(26), nullable=False),
    Column("count", Integer, nullable=False),
    Column("acknowledged_at", String(26)),
    Column("acknowledged_by", String(64)),
    Column("acknowledged_why", Text),
    Column("resolved_at", String(26)),
    Column("resolved_by", String(64)),
    Column("resolved_why", Text),
)
# The migration also makes dedupe_key unique among exceptions not resolved (a partial index,
# ux_exception_open_key). It is not mirrored here: its dialect options would import both SQL
# dialects on every start, and no query names it.
Index("ix_exception_state", tl_exception.c.state)

instrument_lock = Table(
    "instrument_lock", metadata,
    Column("id", Integer, primary_key=True),
    Column("lock_key", String(64), nullable=False),  # instrument name or contract code
    Column("reason", Text, nullable=False),
    Column("exception_id", Integer),
    Column("locked_at", String(26), nullable=False),
    Column("unlocked_at", String(26)),
    Column("unlocked_by", String(64)),
    Column("unlock_why", Text),
)
Index("ix_lock_active", instrument_lock.c.lock_key, instrument_lock.c.unlocked_at)


# -- the daemon and maintenance (0004) -----------------------------------------------------

daemon_lease = Table(
    "daemon_lease", metadata,
    Column("env", String(16), primary_key=True),
    Column("owner", String(128), nullable=False),  # host:pid:random, unique per daemon process
    Column("pid", Integer, nullable=False),
    Column("host", String(128), nullable=False),
    Column("acquired_at", String(26), nullable=False),
    Column("expires_at", String(26), nullable=False),
)

daemon_heartbeat = Table(
    "daemon_heartbeat", metadata,
    Column("env", String(16), primary_key=True),
    Column("pid", Integer, nullable=False),
    Column("owner", String(128), nullable=False),
    Column("started_at", String(26), nullable=False),
    Column("at", String(26), nullable=False),
    Column("last_job", String(64)),
    Column("last_result", Text),  # "ok: ...", "failed: ...", "skipped: ..."
    Column("state", String(16), nullable=False, server_default="running"),  # running | stopped
)

adjustment = Table(
    "adjustment", metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),  # attribute adopt transfer manual-close reverse cash
    Column("subject", String(128), nullable=False),  # exec key, contract, entry id or currency
    Column("contract", String(64)),
    Column("from_holder", String(64)),  # "" for unattributed
    Column("to_holder", String(64)),
    Column("quantity", BigInteger),  # signed, nano-units
    Column("price", BigInteger),
    Column("reason", Text, nullable=False),
    Column("who", String(64), nullable=False),
    Column("created_at", String(26), nullable=False),
    Column("txn_id", BigInteger, nullable=False),
    Column("marks_before", Text),  # JSON {holder: price} of the contract's futures marks
    Column("resolved", Text),  # JSON list of exception dedupe keys this entry resolved
)

Index("ix_adjustment_subject", adjustment.c.kind, adjustment.c.subject)


# -- corporate actions and the account's cash events (0005) ------------------------------------

# One row per dividend or split, from an imported file, IB's Flex statement or the simulated
# broker; keyed by `key` (ticker, date and the source's id). The ledger entries that booked it are
# recorded here, in the same transaction as the entries: `ex_txn_id` (dividend at the ex-date, or
# the split) and `pay_txn_id` (the dividend's cash at the pay date).
corporate_action = Table(
    "corporate_action", metadata,
    Column("id", Integer, primary_key=True),
    Column("key", String(128), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # dividend | split
    Column("ticker", String(64), nullable=False),
    Column("ex_date", String(10), nullable=False),  # the split's effective date for splits
    Column("pay_date", String(10)),
    Column("amount", BigInteger),  # per share, nano-units
    Column("currency", String(16)),
    Column("withholding", String(40)),  # fraction withheld, decimal text
    Column("ratio_new", BigInteger),
    Column("ratio_old", BigInteger),
    Column("source", String(16), nullable=False),  # import | flex | sim
    Column("ref", String(96), nullable=False, server_default=""),
    Column("created_at", String(26), nullable=False),
    Column("ex_txn_id", BigInteger),
    Column("pay_txn_id", BigInteger),
)


# Imported target weights of allocation strategies: one set per (strategy, date), facts.
target_weight = Table(
    "target_weight", metadata,
    Column("strategy", String(64), primary_key=True),
    Column("date", String(10), primary_key=True),
    Column("ticker", String(64), primary_key=True),
    Column("weight", String(40), nullable=False),  # decimal text in [0, 1]
)


# -- the opening (0007) ----------------------------------------------------------------------

opening = Table(
    "opening", metadata,
    Column("id", Integer, primary_key=True),
    Column("account", String(64), nullable=False, unique=True),  # one opening per broker account
    Column("taken_at", String(26), nullable=False),  # the opening snapshot's time (the broker's)
    Column("recorded_at", String(26), nullable=False),
    Column("snapshot_id", BigInteger, nullable=False),
    Column("txn_id", BigInteger),  # the opening entry; NULL when the account held nothing to book
    Column("source", String(32), nullable=False),  # init | reconcile | submit | ...
    Column("held", Text, nullable=False),  # JSON: what the broker held and what was booked
)


# -- futures through their life (0008) ----------------------------------------------------------
# roll_state: a user's pinned roll state per instrument (engine/futures/rolls.py);
# contract_detail: the broker's own dates per contract (IB contract details), the truth over the rule;
# order_leg: the legs of a spread order (broker_order row), each with its filled quantity;
# contract_bar: daily closes per contract; roll_event: the roll dates actually used;
# adjusted_price: the back-adjusted (Panama) series per instrument, each row explained by its raw
# close, contract and cumulative adjustment.

roll_state = Table(
    "roll_state", metadata,
    Column("instrument", String(64), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("set_by", String(64), nullable=False),
    Column("set_at", String(26), nullable=False),
    Column("note", Text),
)

contract_detail = Table(
    "contract_detail", metadata,
    Column("code", String(64), primary_key=True),
    Column("instrument", String(64), nullable=False),
    Column("last_trade_date", String(10)),
    Column("real_expiration", String(10)),
    Column("con_id", BigInteger),
    Column("source", String(16), nullable=False),
    Column("fetched_at", String(26), nullable=False),
)

order_leg = Table(
    "order_leg", metadata,
    Column("order_id", Integer, primary_key=True),
    Column("contract", String(64), primary_key=True),
    Column("side", String(4), nullable=False),
    Column("ratio", Integer, nullable=False),
    Column("filled", BigInteger, nullable=False, server_default="0"),
    Column("contract_spec", Text, nullable=False),
)

contract_bar = Table(
    "contract_bar", metadata,
    Column("contract", String(64), primary_key=True),
    Column("date", String(10), primary_key=True),
    Column("close", BigInteger, nullable=False),
)

roll_event = Table(
    "roll_event", metadata,
    Column("instrument", String(64), primary_key=True),
    Column("old", String(64), primary_key=True),
    Column("new", String(64), nullable=False),
    Column("date", String(10), nullable=False),
    Column("run_id", Integer),
)

adjusted_price = Table(
    "adjusted_price", metadata,
    Column("instrument", String(64), primary_key=True),
    Column("date", String(10), primary_key=True),
    Column("price", BigInteger, nullable=False),
    Column("contract", String(64), nullable=False),
    Column("raw", BigInteger, nullable=False),
    Column("adjustment", BigInteger, nullable=False),
)

# -- alerts (0009) ------------------------------------------------------------------------------

# The alerts' outbox (engine/ops/alerts.py): one row per (alert, channel), so that an alert is
# sent once per channel however often it is found, a channel that is down is retried with
# backoff without repeating the others, and the rate limit counts what was sent.
alert_outbox = Table(
    "alert_outbox", metadata,
    Column("id", Integer, primary_key=True),
    Column("alert_key", String(250), nullable=False),  # exception:<id>:<severity>, summary:<date>
    Column("channel", String(16), nullable=False),  # sha256 of the channel's URL, 12 hex digits
    Column("severity", String(8), nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("state", String(8), nullable=False),  # pending | sent | failed | dropped
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", String(26), nullable=False),
    Column("next_at", String(26), nullable=False),  # not before: a failure's backoff, a claim's lease
    Column("sent_at", String(26)),  # when sent; on a pending row, its last claim (a send in flight)
    Column("last_error", Text),
    UniqueConstraint("alert_key", "channel", name="ux_alert_outbox_key_channel"),
)
Index("ix_alert_outbox_due", alert_outbox.c.state, alert_outbox.c.next_at)


# -- never trade twice (0010) ----------------------------------------------------------------

trading_lease = Table(
    "trading_lease", metadata,
    Column("env", String(16), primary_key=True),
    Column("owner", String(128), nullable=False),  # host:pid:random, unique per trading process
    Column("pid", Integer, nullable=False),
    Column("host", String(128), nullable=False),
    Column("what", String(200), nullable=False),  # the command that holds it
    Column("acquired_at", String(26), nullable=False),
    Column("expires_at", String(26), nullable=False),
)

run_plan = Table(
    "run_plan", metadata,
    Column("run_id", Integer, primary_key=True),
    Column("contract", String(64), primary_key=True),
    Column("outcome", String(16), nullable=False),  # order | cross | unchanged | refused | clipped
    Column("detail", Text, nullable=False),  # what was decided and why, in words
    Column("planned_at", String(26), nullable=False),
)


# -- the trader's curves resume from a checkpoint (0015) ------------------------------------------

series_checkpoint = Table(
    "series_checkpoint", metadata,
    Column("series_by", String(16), primary_key=True),  # total | strategy | instrument
    Column("day", String(10), nullable=False),
    Column("format", Integer, nullable=False),
    Column("entries", BigInteger, nullable=False),
    Column("price_changes", BigInteger, nullable=False),
    Column("payload", Text, nullable=False),
    Column("written_at", String(26), nullable=False),
)

price_change = Table(  # appended to by triggers on price_bar, settlement and fx_rate; pruned (0017)
    "price_change", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("day", String(10), nullable=False),
    Column("n", BigInteger, nullable=False, server_default="1"),  # the changes the row stands for
)
Index("ix_price_change_day_n", price_change.c.day, price_change.c.n)
