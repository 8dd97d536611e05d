"""`tradeledger fava`: export the ledger atomically and serve it with Fava and tradeledger's pages.

Fava runs as a child process (`python -m fava`-style, with this interpreter, so the extension
imports this tradeledger) in read-only mode: the file is generated, an edit in Fava would be
lost at the next export. It binds to loopback unless `--public` says otherwise, and then it
warns: Fava has no authentication. The daemon rewrites the export after each job that books, and
Fava reloads the file when it changes.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time

import click
from tradeledger.commands.common import Invocation, pass_ctx


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def fava_command(path, host: str, port: int) -> list[str]:
    """Fava's own CLI with this interpreter (its console script may not be on PATH)."""
    return [sys.executable, "-c", "import sys; from fava.cli import main; sys.exit(main())",
            str(path), "--host", host, "--port", str(port), "--read-only"]


def _wait_until_listening(host: str, port: int, process: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection((host.strip("[]"), port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False


@click.command("fava")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (loopback unless --public).")
@click.option("--port", default=5000, type=int, show_default=True, help="Port to serve on.")
@click.option("--public", is_flag=True, help="Allow a non-loopback --host (Fava has no authentication).")
@click.option("--no-export", is_flag=True, help="Serve the existing file without exporting first.")
@pass_ctx
def fava_cmd(c: Invocation, host, port, public, no_export):
    """Export the ledger and serve it in Fava with the Targets, Orders and fills, Reconciliation,
    Exceptions and Strategies pages (Ctrl-C stops it)."""
    from tradeledger.engine.accounting.export import export_ledger
    from tradeledger.reports.fava_ext import DB_URL_VARIABLE

    if not is_loopback(host):
        if not public:
            raise click.UsageError(f"--host {host} is not a loopback address: Fava has no authentication, "
                                   "so anyone who reaches it reads the whole ledger; add --public to mean it")
        click.echo(f"warning: serving on {host}:{port} without authentication: anyone who reaches this "
                   "address sees the whole ledger", err=True)
    environment = c.open()
    path = environment.ledger_path
    if not no_export or not path.exists():
        size = export_ledger(environment)
        click.echo(f"exported {path} ({size} bytes)")
    env = dict(os.environ)
    if c.db_url:
        env[DB_URL_VARIABLE] = c.db_url
    process = subprocess.Popen(fava_command(path, host, port), env=env)

    def stop(signum, _frame):
        process.send_signal(signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    if _wait_until_listening(host, port, process, timeout=120):
        shown = f"[{host}]" if ":" in host else host
        click.echo(f"Fava serving {path.name} at http://{shown}:{port}/ (tradeledger pages under Extensions); "
                   "Ctrl-C stops it")
        sys.stdout.flush()
    code = process.wait()
    if code not in (0, -signal.SIGTERM, -signal.SIGINT):
        click.echo(f"error: fava exited with status {code}", err=True)
        sys.exit(1)


COMMANDS = [fava_cmd]
