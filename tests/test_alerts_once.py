"""An alert is sent once however many deliver it at the same moment (engine/ops/alerts.py, `claim`).

The daemon's alerts job and `tradeledger alerts send` (cron, perhaps on another host sharing the
PostgreSQL database) deliver from one outbox. Before, two deliverers that read the same due row at
the same moment both sent it: the trader got the alert twice. Now each row is claimed, in one
UPDATE the database decides, before it is sent, and only the deliverer whose claim took it sends it.

The deliverers are real processes (`tradeledger alerts send`) started together against one
environment; the channel is a webhook on loopback in this process that counts each alert's
arrivals and answers after 0.3 s, so that the deliverers' sends overlap. A deliverer killed while
it sends leaves its claimed row to the next deliverer, once the claim's lease is over (`ahead`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tradeledger.engine.ops.alerts import CLAIM_SECONDS, run_alerts
from test_alerts import T0, make_env, outbox, raise_one

CLI = [sys.executable, "-m", "tradeledger.cli"]
DELIVERERS = 4


class SlowWebhook:
    """An HTTP receiver on 127.0.0.1 that counts arrivals per title and answers after `delay`
    seconds; while `hold` is set, it does not answer until released (a send under way)."""

    def __init__(self, delay: float = 0.3):
        self.arrivals: Counter[str] = Counter()
        self.hold = False
        self.released = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.arrivals[body["title"]] += 1
                if hook.hold:
                    hook.released.wait(60)
                else:
                    time.sleep(delay)
                try:
                    self.send_response(200)
                    self.end_headers()
                except OSError:  # the sender was killed while it waited
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook():
    hook = SlowWebhook()
    yield hook
    hook.close()


def send(home) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "--home", str(home), "alerts", "send", "--json"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def deliver_at_once(home, n: int = DELIVERERS) -> list[str]:
    """`tradeledger alerts send` in `n` processes started together: their one-line results."""
    processes = [send(home) for _ in range(n)]
    results = []
    for p in processes:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        results.append(json.loads(out)["result"])
    return results


def sent_by(results: list[str]) -> int:
    return sum(int(line.split(" sent")[0].split()[-1]) for line in results)


def test_deliverers_at_the_same_moment_send_each_alert_once(tmp_path, webhook, db_url):
    """Eight due alerts, four deliverers at once, each send 0.3 s: every alert arrives exactly once.
    Before, each deliverer sent every row it had read as due: most arrived two to four times."""
    env = make_env(tmp_path, [webhook.url], db_url=db_url)
    for n in range(8):
        raise_one(env, "order_stuck", f"r{n}", "error")
    results = deliver_at_once(tmp_path / "home")
    assert sorted(webhook.arrivals) == sorted(f"[tradeledger paper] error: order_stuck r{n}" for n in range(8))
    assert set(webhook.arrivals.values()) == {1}, webhook.arrivals
    assert sent_by(results) == 8, results
    assert [r.state for r in outbox(env)] == ["sent"] * 8
    env.engine.dispose()


def test_deliverers_at_the_same_moment_keep_the_hourly_limit(tmp_path, webhook, db_url):
    """Six due alerts, `max_per_hour = 2`, four deliverers at once: two arrive, once each (on
    PostgreSQL claims for one channel committed at the same instant do not see each other: at most
    one more per other deliverer). Before, each deliverer sent its own two."""
    env = make_env(tmp_path, [webhook.url], extra="max_per_hour = 2\n", db_url=db_url)
    for n in range(6):
        raise_one(env, "order_stuck", f"r{n}", "error")
    results = deliver_at_once(tmp_path / "home")
    assert set(webhook.arrivals.values()) == {1}, webhook.arrivals
    bound = 2 if db_url.startswith("sqlite") else 2 + DELIVERERS - 1
    assert 2 <= sum(webhook.arrivals.values()) <= bound, webhook.arrivals
    assert sent_by(results) == sum(webhook.arrivals.values())
    env.engine.dispose()


def test_a_deliverer_killed_while_it_sends_leaves_the_row_to_the_next_after_the_lease(tmp_path, webhook,
                                                                                      db_url):
    """A deliverer claims the row and is killed while the channel has not answered: the row stays
    pending, and no other deliverer sends it while the claim's lease lasts (it may be under way);
    when the lease is over the next sends it (at least once: here it arrives twice). Before, the
    next deliverer sent it at once, while the first's send was under way."""
    env = make_env(tmp_path, [webhook.url], db_url=db_url)
    raise_one(env, "job_failed", "fill_sync", "error")
    webhook.hold = True
    first = send(tmp_path / "home")
    deadline = time.monotonic() + 60
    while not webhook.arrivals and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.05)
    assert sum(webhook.arrivals.values()) == 1, first.communicate()
    first.kill()
    first.communicate(timeout=30)
    webhook.hold = False
    [row] = outbox(env)
    assert row.state == "pending" and row.attempts == 0

    assert run_alerts(env, T0, ahead=0).endswith("0 new, 0 sent, 0 failed (will retry), 0 given up, 1 waiting")
    assert run_alerts(env, T0, ahead=CLAIM_SECONDS - 30).endswith("0 sent, 0 failed (will retry), 0 given up, "
                                                                  "1 waiting")
    assert sum(webhook.arrivals.values()) == 1
    assert "0 new, 1 sent" in run_alerts(env, T0, ahead=CLAIM_SECONDS + 1)
    assert list(webhook.arrivals.values()) == [2]
    [row] = outbox(env)
    assert row.state == "sent" and row.attempts == 1
    env.engine.dispose()

