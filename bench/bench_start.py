"""Start-up against its ceilings, in one run: prints figures and ratios; not a test.

    python bench/bench_start.py [--home DIR] [--runs 7]

Whole processes, as a user starts them, on the demo ledger (`tradeledger demo`, made in a fresh
home unless --home names one): `tradeledger --help`, `positions --json`, `pnl --json`, and
`status` as a table (piped, and on a pseudo-terminal, where it is drawn boxed), `status --json` (the
embedded simulated broker probed) and `status --json --no-broker` (each on the read path,
engine/ops/status_quick.py), beside
beancount loading the same ledger's export (`bean-check`'s work: `loader.load_file`) and a bare
`python -c pass` (the interpreter's floor). The commands run interleaved, round after round, so
that other load falls on all alike; each figure is the median wall time, and the CPU time (user +
system) is printed beside it, which load on a shared machine inflates less.

Issue 15 targets: `--help`, `positions --json`, `pnl --json` and every form of `status` at most
250 ms and faster than beancount's load; peak RSS at most 80 MB. It also prints where the read
commands spend their imports (`python -X importtime`, top modules), and the load average before
and after (`/proc/loadavg`).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


# As a user runs an installed tradeledger: its modules' bytecode compiled once and reused (pip
# compiles it at install). A shell with PYTHONDONTWRITEBYTECODE set (this machine's sessions) would
# otherwise recompile every tradeledger module in every run, while beancount's bytecode is cached;
# the cache goes to a directory of its own, not into the source tree.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
ENV["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="tl-bench-pycache-")


def run(argv: list[str], tty: bool = False) -> tuple[float, float]:
    """Wall and CPU seconds of one process; with `tty`, its output goes to a pseudo-terminal (as a
    trader's shell runs it: a table is drawn boxed), drained as it is written."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    if tty:
        main_fd, child_fd = os.openpty()
        drain = threading.Thread(target=_drain, args=(main_fd,), daemon=True)
        drain.start()
        try:
            subprocess.run(argv, check=True, stdout=child_fd, stderr=child_fd, env={**ENV, "COLUMNS": "160"})
        finally:
            os.close(child_fd)
            drain.join()
            os.close(main_fd)
    else:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:  # the terminal's other side closed
        pass


RSS_PROBE = """
import atexit, sys
def peak():
    print([line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0], file=sys.stderr)
atexit.register(peak)
sys.argv = ["tradeledger", *sys.argv[1:]]
from tradeledger.cli import main
main()
"""


def peak_rss_mb(args: list[str]) -> float:
    """Peak RSS (VmHWM) of the CLI running `args` in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", RSS_PROBE, *args], capture_output=True, text=True, env=ENV)
    return int(proc.stderr.strip().splitlines()[-1]) / 1024


def importtime(argv: list[str], top: int = 8) -> list[tuple[int, str]]:
    proc = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, env=ENV)
    rows = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            _, cumulative, name = line[len("import time:"):].split("|")
            if cumulative.strip().isdigit() and not name.startswith("   "):  # top-level imports only
                rows.append((int(cumulative), name.strip()))
    return sorted(rows, reverse=True)[:top]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", type=Path, default=None, help="an existing home with a ledger (default: a demo)")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    exe = [sys.executable, "-m", "tradeledger.cli"]
    home = args.home
    if home is None:
        home = Path(tempfile.mkdtemp(prefix="tl-bench-start-")) / "home"
        print(f"making the demo ledger in {home} ...")
        subprocess.run([*exe, "--home", str(home), "demo", "--days", "3"], check=True, stdout=subprocess.DEVNULL)
    export = home / "paper" / "bench-start.beancount"
    subprocess.run([*exe, "--home", str(home), "export", "beancount", "--out", str(export)], check=True,
                   stdout=subprocess.DEVNULL)
    txns = sum(1 for line in export.read_text().splitlines() if line[:4].isdigit() and " * " in line)

    commands = {
        "python -c pass (floor)": [sys.executable, "-c", "pass"],
        "tradeledger --help": [*exe, "--help"],
        "tradeledger positions --json": [*exe, "--home", str(home), "positions", "--json"],
        "tradeledger pnl --json": [*exe, "--home", str(home), "pnl", "--json"],
        "tradeledger status": [*exe, "--home", str(home), "status"],
        "tradeledger status (on a terminal)": [*exe, "--home", str(home), "status"],
        "tradeledger status --json": [*exe, "--home", str(home), "status", "--json"],
        "tradeledger status --json --no-broker": [*exe, "--home", str(home), "status", "--json", "--no-broker"],
        "beancount load_file (same ledger)": [sys.executable, "-c", "import sys; from beancount import loader; "
                                              "loader.initialize(use_cache=False); loader.load_file(sys.argv[1])",
                                              str(export)],
    }
    load_before = Path("/proc/loadavg").read_text().strip()
    on_tty = {name for name in commands if "(on a terminal)" in name}
    for name, argv_ in commands.items():  # warm the file cache once
        run(argv_, name in on_tty)
    walls: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, argv_ in commands.items():
            wall, cpu = run(argv_, name in on_tty)
            walls[name].append(wall)
            cpus[name].append(cpu)
    wall = {name: statistics.median(v) for name, v in walls.items()}
    cpu = {name: statistics.median(v) for name, v in cpus.items()}
    beancount = "beancount load_file (same ledger)"
    print(f"\nstart-up on the demo ledger ({txns} transactions), median of {args.runs} interleaved runs, "
          f"on {os.cpu_count()} cpus; load before: {load_before}, after: {Path('/proc/loadavg').read_text().strip()}")
    for name in commands:
        ratio = wall[beancount] / wall[name]
        print(f"  {name:<36} wall {wall[name] * 1000:6.0f} ms   cpu {cpu[name] * 1000:6.0f} ms   "
              f"beancount's load / this: {ratio:4.2f}x")
    for name in [n for n in commands if n.startswith("tradeledger")]:
        ok = wall[name] <= 0.250 and wall[name] < wall[beancount]
        print(f"  {'met   ' if ok else 'MISSED'} {name} <= 250 ms and faster than beancount's load "
              f"(cpu {'<=' if cpu[name] <= 0.250 else '>'} 250 ms)")
    for args_ in (["--help"], ["--home", str(home), "positions", "--json"], ["--home", str(home), "pnl", "--json"],
                  ["--home", str(home), "status", "--json"], ["--home", str(home), "status", "--json", "--no-broker"]):
        print(f"  peak RSS of tradeledger {' '.join(a for a in args_ if a != str(home)).replace('--home ', '')}: "
              f"{peak_rss_mb(args_):.1f} MB (target <= 80 MB)")
    for command in (["positions", "--json"], ["pnl", "--json"], ["status", "--json", "--no-broker"]):
        print(f"\nimports of `{' '.join(command)}` (python -X importtime, cumulative, top level):")
        for micros, name in importtime(["-m", "tradeledger.cli", "--home", str(home), *command]):
            print(f"  {micros / 1000:7.1f} ms  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
