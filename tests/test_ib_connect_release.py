"""A failed IB connect releases everything it made: its event-loop thread, the loop's own file
descriptors and the socket.

The daemon retries a failed connect with backoff, each time through a new `Session.broker`, and a
broker whose connect raised is never handed to anyone who could close it. So a gateway down for an
hour must not leave a thread and a few descriptors behind per attempt. Each test makes N failed
connects with the real ib_async client -- against a port nobody listens on, a port that accepts but
never answers the handshake, and the simulated gateway withholding the start-up sync's answers --
and the count of threads and of this process's open descriptors (/proc/self/fd) is back where it
was before them.
"""

from __future__ import annotations

import gc
import os
import socket
import threading
import time

import pytest

from test_ib_faults import ACCOUNT
from test_ib_sync_incomplete import gateway  # noqa: F401 (the simulated gateway fixture, written once)
from tradeledger.broker.base import BrokerDisconnected
from tradeledger.broker.ib import IBBroker

N = 20


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settles_at_most(count, ceiling: int, seconds: float = 5) -> int:
    """`count()` once it is at most `ceiling`, or its last value after `seconds` (the gateway closes
    its end of a socket on its own thread, a moment after ours). At most, not equal: in the full
    suite a thread or socket left by an earlier test may end meanwhile; a leak only ever adds."""
    deadline = time.monotonic() + seconds
    while (value := count()) > ceiling and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def ours() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "ib-broker-61"]


def fail_to_connect(port: int, times: int, timeout: float = 0.3) -> list[str]:
    messages = []
    for _ in range(times):
        broker = IBBroker(port=port, client_id=61, account=ACCOUNT, timeout=timeout)
        with pytest.raises(BrokerDisconnected) as err:
            broker.connect()
        messages.append(str(err.value))
        # no close(): a caller whose connect raised (Session.broker) never gets the object to close
    return messages


def assert_released(port: int) -> list[str]:
    fail_to_connect(port, 1)  # what the first attempt sets up once for the process (imports, loggers)
    threads, fds = threading.active_count(), open_fds()
    gc.disable()  # released by close(), not by the garbage collector finding a dropped socket some day
    try:
        messages = fail_to_connect(port, N)
        assert settles_at_most(lambda: len(ours()), 0) == 0, ours()
        assert settles_at_most(threading.active_count, threads) <= threads, [t.name for t in threading.enumerate()]
        assert settles_at_most(open_fds, fds) <= fds
    finally:
        gc.enable()
    return messages


def test_refused_connects_leave_no_thread_or_descriptor():
    with socket.socket() as s:  # a port that was free a moment ago: connecting is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    messages = assert_released(port)
    assert all("cannot connect to IB" in m for m in messages)


def test_connects_that_time_out_leave_no_thread_or_descriptor():
    with socket.socket() as listener:  # accepts (in the kernel) and never answers the handshake
        listener.bind(("127.0.0.1", 0))
        listener.listen(4 * N)
        messages = assert_released(listener.getsockname()[1])
    assert all("TimeoutError" in m for m in messages)


def test_incomplete_start_up_syncs_leave_no_thread_or_descriptor(gateway):
    gateway.withhold_answers("completed orders")
    messages = assert_released(gateway.port)
    assert all("start-up sync is incomplete" in m for m in messages)
    assert settles_at_most(lambda: len(gateway.connected_clients()), 0) == 0
    gateway.withhold_answers()
    broker = IBBroker(port=gateway.port, client_id=61, account=ACCOUNT, timeout=2)
    try:  # and the next connect, once the gateway answers, works as ever
        broker.connect()
        assert broker.is_connected and broker.orders() == []
    finally:
        broker.close()


def test_a_failed_connect_leaves_no_reconnect_behind(gateway):
    """ib_async disconnects a connect that fails its sync and fires disconnectedEvent: that must not
    start the broker's reconnector, which would connect by itself once the gateway answers and hold
    the client id, so that the caller's next connect (the daemon's retry) is refused with 326."""
    gateway.withhold_answers("completed orders")
    with pytest.raises(BrokerDisconnected, match="start-up sync is incomplete"):
        IBBroker(port=gateway.port, client_id=61, account=ACCOUNT, timeout=0.3).connect()
    gateway.withhold_answers()  # the gateway is quick again
    time.sleep(1)  # more than the reconnector's first delay and one whole connect
    assert gateway.connected_clients() == []
    retry = IBBroker(port=gateway.port, client_id=61, account=ACCOUNT, timeout=2)
    try:
        retry.connect()
        assert retry.is_connected
    finally:
        retry.close()
