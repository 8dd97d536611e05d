"""What the daemon survives, and what it cannot: transient failures retried with backoff.

A daemon lives for weeks; in that time the database will be busy (another process holding
SQLite's write lock longer than the busy timeout), restarted, or its connections terminated
(a PostgreSQL failover, an administrator's `pg_terminate_backend`), and the broker will drop its
socket. None of these is a reason to stop: they heal. So every job and every heartbeat runs
under `retrying`: a transient failure is logged, the engine's pooled connections are dropped
(the next attempt reconnects) and the call is tried again with exponential backoff, within a
time budget. A job that still fails becomes a `job_failed` exception, raised once per outage
(a failure of the database itself is one `job_failed: database`, whichever jobs met it), and
the daemon goes on.

What cannot heal ends the daemon, saying which (`Fatal`): its lease was taken by another
daemon (so two would run), or the database's schema is no longer the one this code was built
for (someone upgraded it under a running daemon).

`is_transient` is a pure classification of an exception; `retrying` is the only loop.
"""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay, wait_exponential

TRANSIENT_TEXT = ("database is locked", "database table is locked", "terminating connection",
                  "server closed the connection", "connection refused", "could not connect", "connection reset",
                  "the database system is starting up", "the database system is shutting down",
                  "consuming input failed", "connection is lost", "no connection to the server", "ssl syscall", "broken pipe")


class Fatal(RuntimeError):
    """A failure that does not heal by waiting: the daemon stops and says why."""


def is_transient(exc: BaseException) -> bool:
    """A failure that may heal by itself: a busy or unreachable database, a dropped connection,
    a broker that disconnected. Anything else (a bug, a refusal, bad data) is not retried."""
    from tradeledger.broker.base import BrokerDisconnected

    if isinstance(exc, Fatal):
        return False
    if isinstance(exc, (BrokerDisconnected, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.PendingRollbackError,
                        sa.exc.DisconnectionError, sa.exc.TimeoutError)):
        return True
    text = str(getattr(exc, "orig", exc)).lower()
    return isinstance(exc, sa.exc.DBAPIError) and any(t in text for t in TRANSIENT_TEXT)


def is_database_failure(exc: BaseException) -> bool:
    """A transient failure of the database (not of the broker)."""
    return isinstance(exc, (sa.exc.SQLAlchemyError,)) and is_transient(exc)


def reason(exc: BaseException) -> str:
    """One line: the driver's own message, not SQLAlchemy's wrapping (nor a PendingRollbackError)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(getattr(exc, 'orig', None) or exc).__name__}: {text[0] if text else ''}".strip()


def retrying(call, *, engine, log: logging.Logger, what: str, budget_seconds: float,
             stop_event: threading.Event | None = None, first_wait: float = 0.5, max_wait: float = 15.0,
             on_retry=None):
    """`call()` retried on transient failures with exponential backoff for up to `budget_seconds`;
    between attempts the engine's pool is dropped so that the next attempt reconnects, and
    `on_retry(exc)` hears of each failure. The last failure is raised when the budget is spent
    (or the daemon is stopping)."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception()
        if on_retry is not None:
            on_retry(exc)
        log.warning("%s: %s; retrying in %.1f s (attempt %d)", what, reason(exc), state.next_action.sleep,
                    state.attempt_number)
        try:
            engine.dispose()  # connections of a dead server are dropped; the next use reconnects
        except Exception:  # noqa: BLE001 - disposing a broken pool must never fail the retry
            pass

    def stopping(state: RetryCallState) -> bool:
        return bool(stop_event is not None and stop_event.is_set())

    sleep = (lambda seconds: stop_event.wait(seconds)) if stop_event is not None else None
    kwargs = dict(sleep=sleep) if sleep is not None else {}
    for attempt in Retrying(retry=retry_if_exception(is_transient), reraise=True, before_sleep=before_sleep,
                            stop=stop_after_delay(budget_seconds) | stopping,
                            wait=wait_exponential(multiplier=first_wait, max=max_wait), **kwargs):
        with attempt:
            return call()
    raise AssertionError("unreachable")  # pragma: no cover
