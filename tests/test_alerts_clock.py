"""The alert outbox between hosts whose clocks disagree: due and the hour are the database's clock's.

The daemon's alerts job and `tradeledger alerts send` (cron, perhaps on another host sharing the
PostgreSQL database) deliver from one outbox. Whether a row is due after a failed try's backoff
(`next_at`) and how many a channel was sent in the last hour (`sent_at`) used to be judged by the
clock of the host that delivers, against times other hosts stamped by theirs: a host 20 minutes
ahead sent over `max_per_hour` and retried a channel before its backoff ended; a host 20 minutes
behind held back an alert the hour allowed and one whose backoff had ended. Now the outbox's times
are stamped and compared by the database's clock (ledger/dbclock.py).

The second host is `tradeledger alerts send` in a real process under libfaketime
(tests/skewed_host.py). The outbox's history (a send 50 minutes ago, a backoff ending in 5 minutes)
is written as the database's clock would have written it, with `dbclock.now(dialect, seconds)`;
the channel is a webhook on loopback in this process. PostgreSQL only: a SQLite file has one host,
whose clock the database's clock is.
"""

from __future__ import annotations

import json

import pytest

from tradeledger.engine.ops.alerts import CLAIM_SECONDS, channel_id
from tradeledger.engine.tables import alert_outbox
from tradeledger.ledger import dbclock
from skewed_host import tl_at
from test_alerts import Webhook, make_env, outbox, raise_one

SKEW = 20 * 60


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.close()


def write_row(env, url: str, key: str, state: str, **seconds_from_now) -> None:
    """An outbox row as the database's clock stamped it, its times `seconds` from that clock's now."""
    with env.engine.begin() as conn:
        times = {column: dbclock.now(conn.dialect.name, s) for column, s in seconds_from_now.items()}
        conn.execute(alert_outbox.insert().values(
            alert_key=key, channel=channel_id(url), severity="error", title=f"earlier {key}", body="earlier",
            state=state, attempts=1, **times))


def send_at(skew: int, home) -> str:
    """`tradeledger alerts send` on a host `skew` seconds off: its one-line result."""
    result = tl_at(skew, home, "alerts", "send", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["result"]


def titles(webhook) -> list[str]:
    return [b["title"] for b in webhook.bodies]


def test_a_host_twenty_minutes_ahead_keeps_the_hourly_limit(pg_url, tmp_path, webhook):
    """One a channel was sent 50 minutes ago (max_per_hour = 1): a new alert waits. Before, the host
    ahead took its hour from 40 minutes ago and sent it: two in an hour."""
    env = make_env(tmp_path, [webhook.url], extra="max_per_hour = 1\n", db_url=pg_url)
    write_row(env, webhook.url, "summary:earlier", "sent", created_at=-3000, next_at=-3000, sent_at=-3000)
    raise_one(env, "job_failed", "fill_sync", "error")
    assert send_at(SKEW, tmp_path / "home").endswith("1 new, 0 sent, 0 failed (will retry), 0 given up, 1 waiting")
    assert titles(webhook) == []
    assert [r.state for r in outbox(env)] == ["sent", "pending"]
    env.engine.dispose()


def test_a_host_twenty_minutes_behind_sends_what_the_hour_allows(pg_url, tmp_path, webhook):
    """The channel's one send of the hour was 70 minutes ago: the new alert goes. Before, the host
    behind took its hour from 80 minutes ago, counted that send and held the alert back."""
    env = make_env(tmp_path, [webhook.url], extra="max_per_hour = 1\n", db_url=pg_url)
    write_row(env, webhook.url, "summary:earlier", "sent", created_at=-4200, next_at=-4200, sent_at=-4200)
    raise_one(env, "job_failed", "fill_sync", "error")
    assert "1 new, 1 sent" in send_at(-SKEW, tmp_path / "home")
    assert len(titles(webhook)) == 1 and "job_failed fill_sync" in titles(webhook)[0]
    env.engine.dispose()


def test_a_host_twenty_minutes_ahead_waits_out_a_backoff(pg_url, tmp_path, webhook):
    """A failed try's backoff ends in 5 minutes by the database's clock: not tried yet. Before, the
    host ahead found it due 15 minutes ago and sent it."""
    env = make_env(tmp_path, [webhook.url], db_url=pg_url)
    write_row(env, webhook.url, "exception:99:error", "pending", created_at=-60, next_at=300)
    assert send_at(SKEW, tmp_path / "home").endswith("0 new, 0 sent, 0 failed (will retry), 0 given up, 1 waiting")
    assert titles(webhook) == []
    [row] = outbox(env)
    assert row.state == "pending" and row.attempts == 1
    env.engine.dispose()


def test_a_host_twenty_minutes_behind_retries_when_the_backoff_is_over(pg_url, tmp_path, webhook):
    """A failed try's backoff ended 5 minutes ago: sent now. Before, the host behind found it due only
    in 15 minutes."""
    env = make_env(tmp_path, [webhook.url], db_url=pg_url)
    write_row(env, webhook.url, "exception:99:error", "pending", created_at=-600, next_at=-300)
    assert "0 new, 1 sent" in send_at(-SKEW, tmp_path / "home")
    assert titles(webhook) == ["earlier exception:99:error"]
    [row] = outbox(env)
    assert row.state == "sent" and row.attempts == 2
    env.engine.dispose()


def test_the_outbox_is_stamped_by_the_database_clock(pg_url, tmp_path, webhook):
    """What a host ahead writes (a new row, its send) is the database's time, not 20 minutes ahead of it:
    the daemon's host, on time, judges those rows by the same clock."""
    env = make_env(tmp_path, [webhook.url], db_url=pg_url)
    raise_one(env, "job_failed", "fill_sync", "error")
    assert "1 new, 1 sent" in send_at(SKEW, tmp_path / "home")
    with env.engine.connect() as conn:
        now = dbclock.read(conn)
    [row] = outbox(env)
    for stamp in (row.created_at, row.sent_at):
        assert stamp <= now and stamp > dbclock_text(env, -120), (stamp, now)
    # its claim's lease ended `CLAIM_SECONDS` after the claim, by the database's clock too
    assert dbclock_text(env, CLAIM_SECONDS - 120) < row.next_at <= dbclock_text(env, CLAIM_SECONDS)
    env.engine.dispose()


def dbclock_text(env, seconds: float) -> str:
    with env.engine.connect() as conn:
        return dbclock.read(conn, seconds)
