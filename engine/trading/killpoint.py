"""Named points of the order path where a test may kill or pause this process.

`TRADELEDGER_KILL_AT=name[:n]` sends SIGKILL to this process the n-th time (default the first)
it reaches the point `name`; `TRADELEDGER_PAUSE_AT=name:seconds` sleeps there, and
`TRADELEDGER_PAUSE_AT=name:@FILE` waits there until FILE exists (ten minutes at most), having
made FILE.reached (so a test knows the process is there). Unset (always, in
normal use), `reach` does nothing but count. The points: synced, settled, positions_read (the
planner has read the ledger's positions, not yet the orders in flight), planned (a run's plan
computed, not yet recorded), recorded, placed (an
order accepted by the broker, not yet recorded as sent), marked (recorded as sent), waited,
fill_chunk (a chunk of fills written, not yet committed), correction (an execution correction or a
changed commission written, not yet committed), checkpoint_written (the daily series' checkpoints
written, not yet committed: reports/series_checkpoint.py).
The crash tests use them to prove that a rerun after a kill at any point sends nothing twice.
"""

from __future__ import annotations

import os
import signal
import time

_counts: dict[str, int] = {}


def reach(name: str) -> None:
    _counts[name] = _counts.get(name, 0) + 1
    kill = os.environ.get("TRADELEDGER_KILL_AT")
    if kill:
        point, _, nth = kill.partition(":")
        if point == name and _counts[name] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
    pause = os.environ.get("TRADELEDGER_PAUSE_AT")
    if pause:
        point, _, seconds = pause.partition(":")
        if point == name and seconds.startswith("@"):
            with open(f"{seconds[1:]}.reached", "w"):  # the test waiting for this point learns it is here
                pass
            deadline = time.monotonic() + 600
            while not os.path.exists(seconds[1:]) and time.monotonic() < deadline:
                time.sleep(0.05)
        elif point == name:
            time.sleep(float(seconds or 1))
