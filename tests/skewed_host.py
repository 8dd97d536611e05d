"""A second host whose clock is off, played by a real process under libfaketime (shared by the
clock tests: test_lease_clock.py, test_heartbeat_clock.py; imported as `skewed_host`).

`faketime -f +600` runs a command with every clock it reads (Python's and the libraries' it loads)
ten minutes ahead, the monotonic clock left alone; the PostgreSQL server, like a real second host's
database, is not skewed. libfaketime 0.9.10 fails Python's `time.sleep` with EINVAL (an absolute
monotonic clock_nanosleep), so `tradeledger` there runs with its sleeps on an Event (`SKEWED_CLI`).
faketime runs the command as its child: `start_at` puts both in a session of their own, and
`kill_all` kills the command, which ends faketime too (killing only faketime's pid leaves the
command running; SIGKILLing faketime leaves its shared memory behind, see there).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

# `tradeledger ...` in a process under faketime, its sleeps on an Event (see above)
SKEWED_CLI = [sys.executable, "-c", "import runpy, threading, time\n"
              "time.sleep = lambda seconds: threading.Event().wait(seconds) and None\n"
              "runpy.run_module('tradeledger.cli', run_name='__main__')"]


def skewed(seconds: int) -> list[str]:
    """The command prefix that runs a process on a host whose clock is `seconds` off."""
    if shutil.which("faketime") is None:
        pytest.skip("libfaketime (faketime) is not installed: no second host's clock to play")
    return ["faketime", "-f", f"{seconds:+d}"]


def skewed_env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def tl_at(seconds: int, home, *args, timeout: float = 180) -> subprocess.CompletedProcess:
    """`tradeledger --home HOME ARGS...` on a host whose clock is `seconds` off."""
    return subprocess.run([*skewed(seconds), *SKEWED_CLI, "--home", str(home), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=skewed_env())


def start_at(seconds: int, *command) -> subprocess.Popen:
    """`command` started on a host whose clock is `seconds` off, in a process group of its own:
    faketime runs it as its child, so `kill_all` ends both."""
    return subprocess.Popen([*skewed(seconds), *map(str, command)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=skewed_env(), start_new_session=True)


def kill_all(process: subprocess.Popen) -> None:
    """SIGKILL what faketime runs, then let faketime exit by itself; its group if it does not.

    faketime removes its shared memory and semaphore (/dev/shm/faketime_shm_<pid>,
    sem.faketime_sem_<pid>) when its child ends; SIGKILLed itself it leaves them, and a later
    faketime that gets the same pid (pid_max is 32768 here) fails to start with exit status 1."""
    try:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    except OSError:  # already gone
        children = []
    for child in children:
        try:
            os.kill(int(child), signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        process.wait(timeout=10)
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def host_clock(seconds: int) -> float:
    """time.time() as a process on a host `seconds` off reads it (against the real clock, even when
    the test process's own clock is faked)."""
    return float(subprocess.run([*skewed(seconds), sys.executable, "-c", "import time; print(time.time())"],
                                capture_output=True, text=True, env=skewed_env(), check=True).stdout)


def database_now(engine):
    """PostgreSQL's clock_timestamp(): the server's clock, which no host's skew touches."""
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT clock_timestamp()").scalar()
