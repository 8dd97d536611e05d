"""The ledger itself: `accounts`, `export beancount` and `check` (beancount's balances vs ours)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from tradeledger.commands.common import Invocation, json_option, lazy_function, pass_ctx, result_option, said
from tradeledger.reports.render import display, emit_json, say, table

# Imported on first use (commands/common.py: lazy): starting the CLI imports no engine.
check_ledger = lazy_function("tradeledger.ledger.export", "check")
export_ledger = lazy_function("tradeledger.engine.accounting.export", "export_ledger")
verify_books = lazy_function("tradeledger.engine.accounting.holdings", "verify_books")


@click.command()
@json_option
@pass_ctx
def accounts(c: Invocation, as_json):
    """Accounts with their balances."""
    environment = c.open()
    balances = environment.ledger.balances()
    rows = []
    for account in environment.ledger.accounts():
        held = {com: units for (name, com), units in balances.items() if name == account.name}
        rows.append({"account": account.name, "open": account.open_date, "booking": account.booking,
                     "balances": held})
    if as_json:
        emit_json(rows)
    else:
        currencies = {com.name for com in environment.ledger.commodities() if com.kind == "currency"}

        def amount(units, commodity):  # money at its minor unit, positions as they are (exact in --json)
            return display(units, "amount" if commodity in currencies else "units", currency=commodity)
        table("accounts", ["account", "open", "booking", "balance"],
              [(r["account"], r["open"], r["booking"],
                ", ".join(f"{amount(v, k)} {k}" for k, v in sorted(r["balances"].items()))) for r in rows])


@click.group("export")
def export_group():
    """Export the ledger."""


@export_group.command("beancount")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Output file (default: the environment's ledger.beancount).")
@result_option
@pass_ctx
def export_beancount_cmd(c: Invocation, out, as_json):
    """Write the whole ledger as a beancount file, atomically (with prices for shares, FX and futures'
    unsettled margin, and tradeledger's Fava pages)."""
    environment = c.open()
    path = Path(out) if out else environment.ledger_path
    size = export_ledger(environment, path=path)
    said(as_json, {"file": str(path), "bytes": size}, f"wrote {path} ({size} bytes)")


@export_group.command("entries")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="Output file (JSON lines).")
@result_option
@pass_ctx
def export_entries_cmd(c: Invocation, out, as_json):
    """Write every account, commodity and entry exactly, as JSON lines, streamed (what `import entries`
    reads: moves a ledger to another environment or from SQLite to PostgreSQL)."""
    from tradeledger.engine.ops.entries_file import export_entries

    accounts, entries = export_entries(c.open(), Path(out))
    said(as_json, {"file": out, "accounts": accounts, "entries": entries}, f"wrote {out} ({accounts} accounts, {entries} entries)")


@click.command()
@click.option("--file", "path", type=click.Path(dir_okay=False), default=None,
              help="Check this file instead of a fresh export.")
@json_option
@pass_ctx
def check(c: Invocation, path, as_json):
    """Verify the database (`db verify`), then export, load with beancount, and compare every
    balance with the ledger's own."""
    environment = c.open()
    verification = verify_books(environment.ledger, environment.chart)
    if not verification.ok:  # a damaged database: its export would prove nothing
        if as_json:
            emit_json({"ok": False, "database": verification.as_json()})
        else:
            print_findings(verification)
            say(f"NOT CLEAN: the database fails verification ({len(verification.findings)} findings)")
        sys.exit(1)
    target = Path(path) if path else environment.ledger_path
    if not path:
        export_ledger(environment, path=target)
    result = check_ledger(environment.ledger, target)
    if as_json:
        emit_json(result.as_json() | {"database": verification.as_json()})
    else:
        for error in result.errors:
            say(f"beancount error: {error}")
        if result.differences:
            table("differences", ["account", "commodity", "ledger", "beancount"], result.differences)
        say(f"{'clean' if result.ok else 'NOT CLEAN'}: {result.entries} entries, "
                   f"{result.accounts} accounts, {len(result.errors)} beancount errors, "
                   f"{len(result.differences)} differences; database verified")
    if not result.ok:
        sys.exit(1)


def print_findings(verification) -> None:
    table("database verification", ["check", "finding"], [(f.check, f.detail) for f in verification.findings])


COMMANDS = [accounts, export_group, check]
