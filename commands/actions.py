"""Corporate actions, the account's interest and fees, allocation weights, and IB's Flex statement.

    tradeledger actions import FILE        dividends and splits (kind,ticker,ex_date,pay_date,amount,...)
    tradeledger actions list               every stored action and its state (due, receivable, paid, booked)
    tradeledger actions book [--date D]    book what is due (reconcile does this too)
    tradeledger actions interest|fee AMOUNT CURRENCY --date D --reason TEXT [--ref R]
                                           booked once: by R (IB's transaction id) as `import flex` and
                                           `adjust cash --ref R` book it; without R an equal movement
                                           that day is refused unless --again
    tradeledger weights import FILE        target weights of allocation strategies (date,strategy,ticker,weight)
    tradeledger import flex FILE           IB's Flex statement: missed trades, dividends, interest, fees,
                                           corporate actions, futures expiries
"""

from __future__ import annotations

import sys

import click
from tradeledger.commands.common import Invocation, SIGNED, currency_and_amount, json_option, parse_date, pass_ctx, reason_option, result_option, said
from tradeledger.ledger.numbers import to_decimal
from tradeledger.reports.render import emit_json, say, table


@click.group("actions")
def actions_group():
    """Dividends and splits (imported, booked once when due), and the account's interest and fees."""


@actions_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@json_option
@pass_ctx
def actions_import(c: Invocation, file, as_json):
    """Import dividends and splits from a CSV (kind,ticker,ex_date,pay_date,amount,currency,withholding,ratio).
    Any bad row: every one reported by line, nothing stored. The same action again is a no-op."""
    from tradeledger.engine.accounting.actions import import_actions_csv

    report = import_actions_csv(c.open(), file)
    if as_json:
        emit_json(report.as_json())
    else:
        say(f"{file}: {len(report.added)} new, {len(report.unchanged)} already stored; "
                   f"`tradeledger actions book` (or reconcile) books them when due")


@actions_group.command("sync")
@json_option
@pass_ctx
def actions_sync(c: Invocation, as_json):
    """Store the dividends the broker announces through its API (the simulated broker; IB: `import flex`)."""
    from tradeledger.commands.common import open_session
    from tradeledger.engine.accounting.actions import sync_from_broker

    with open_session(c) as session:
        report = sync_from_broker(session, session.broker)
    if as_json:
        emit_json(report.as_json())
    else:
        say(f"{len(report.added)} new, {len(report.unchanged)} already stored")


@actions_group.command("list")
@json_option
@pass_ctx
def actions_list(c: Invocation, as_json):
    """Every stored corporate action with its state: due, receivable, paid (dividends) or booked (splits)."""
    from tradeledger.engine.accounting.actions import list_actions

    rows = list_actions(c.open())
    if as_json:
        emit_json(rows)
    elif not rows:
        say("no corporate actions")
    else:
        table("corporate actions", ["kind", "ticker", "ex/date", "pay date", "amount", "withholding", "ratio",
                                    "source", "state"],
              [(r["kind"], r["ticker"], r["ex_date"], r["pay_date"] or "", f"{r['amount']} {r['currency']}"
                if r["amount"] else "", r["withholding"] or "", r["ratio"] or "", r["source"], r["state"])
               for r in rows])


@actions_group.command("book")
@click.option("--date", "date", default=None, help="Book what is due on or before this date (default: today).")
@json_option
@pass_ctx
def actions_book(c: Invocation, date, as_json):
    """Book every stored action that is due: a dividend at its ex-date and pay date, a split at its date."""
    from tradeledger.engine.accounting.actions import book_due

    env = c.open()
    day = parse_date(date, "--date") or env.now().date()  # the environment's today (the exchange's on sim)
    report = book_due(env, day)
    if as_json:
        emit_json(report.as_json())
    else:
        for line in report.booked:
            say(f"booked {line}")
        for line in report.in_opening:
            say(f"in the opening's cash (not booked again): {line}")
        for line in report.refused:
            click.echo(f"refused {line}", err=True)
        if not report.booked and not report.refused and not report.in_opening:
            say(f"nothing due on or before {day}")
    if report.refused:
        sys.exit(1)


def _account_cash(c: Invocation, kind: str, amount: str, currency: str, date: str, reason: str, ref: str | None,
                  again: bool, as_json: bool):
    """Booked once: with the broker's reference R keyed by R as `adjust cash --ref` and `import flex`
    key it (cash_moves.claim_ref: a movement R stands for already is a replay, exit 0; another one
    refused); without, refused when an equal movement stands that day (the same command again is a
    replay), unless --again (cash_moves.book_account_cash_plain)."""
    from tradeledger.engine.accounting.corporate import AccountCash
    from tradeledger.engine.trust import cash_moves

    if not reason.strip():
        raise click.BadParameter("give a reason", param_hint="--reason")
    if ref is not None and again:
        raise click.UsageError("--again is for a movement without --ref: a reference already says which one it is")
    value = to_decimal(amount, "AMOUNT")
    day = parse_date(date, "--date")
    currency = currency.upper()
    if ref is not None:
        item = AccountCash(kind, day, value, currency, reason, cash_moves.normal_ref(ref))
        book = cash_moves.book_account_cash_by_ref
    else:
        item = AccountCash(kind, day, value, currency, reason,
                           cash_moves.plain_ref(cash_moves.Movement(kind, currency, value, day)))
        book = lambda ctx, item: cash_moves.book_account_cash_plain(ctx, item, again)  # noqa: E731
    try:
        entry_id, created = book(c.open(), item), True
    except cash_moves.Replay as replay:
        entry_id, created = replay.entry, False
    if as_json:
        emit_json({"entry": entry_id, "booked": created, "replay": not created, "ref": item.ref})
    elif created:
        say(f"booked: {kind} {value} {currency} on {day} (entry {entry_id}, ref {item.ref})")
    else:
        say(f"already booked as entry {entry_id}: {kind} {value} {currency} on {day}, ref {item.ref}; nothing booked")


_again_option = click.option(
    "--again", is_flag=True, help="Book it though an equal movement (same currency, amount and day) is booked "
    "already: a real second one (without --ref such a run is refused; the same command again books nothing).")


@actions_group.command("interest", context_settings=SIGNED)
@click.argument("amount")
@click.argument("currency")
@click.option("--date", "date", required=True, help="The day the broker credited or charged it.")
@reason_option(help="What it is, e.g. 'USD credit interest for November'.")
@click.option("--ref", default=None, help="The broker's reference (IB: the transaction id on the statement, "
              "9006 or flex-9006): booked once under it, by hand or by `import flex`; another amount under it "
              "is refused.")
@_again_option
@json_option
@pass_ctx
def actions_interest(c: Invocation, amount, currency, date, reason, ref, again, as_json):
    """Book interest on the account: AMOUNT signed as it moved cash (earned > 0, paid < 0; CURRENCY AMOUNT works too)."""
    currency, amount = currency_and_amount(currency, amount)
    _account_cash(c, "interest", amount, currency, date, reason, ref, again, as_json)


@actions_group.command("fee", context_settings=SIGNED)
@click.argument("amount")
@click.argument("currency")
@click.option("--date", "date", required=True, help="The day the broker charged it.")
@reason_option(help="What it is, e.g. 'NYSE market data, November'.")
@click.option("--ref", default=None, help="The broker's reference (IB: the transaction id on the statement, "
              "9006 or flex-9006): booked once under it, by hand or by `import flex`; another amount under it "
              "is refused.")
@_again_option
@json_option
@pass_ctx
def actions_fee(c: Invocation, amount, currency, date, reason, ref, again, as_json):
    """Book a fee on the account: AMOUNT as it moved cash (a fee is negative, a refund positive; CURRENCY AMOUNT works too)."""
    currency, amount = currency_and_amount(currency, amount)
    _account_cash(c, "fee", amount, currency, date, reason, ref, again, as_json)


@click.group("weights")
def weights_group():
    """Target weights of allocation strategies whose rule is `file`."""


@weights_group.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@result_option
@pass_ctx
def weights_import(c: Invocation, file, as_json):
    """Import target weights (date,strategy,ticker,weight): each in [0, 1], a day's set summing to at most 1,
    only the strategy's own ETFs. Any bad row: every one reported by line, nothing stored."""
    from tradeledger.engine.targets.allocation import import_weights_csv
    from tradeledger.engine.targets.prices import trading_config

    env = c.open()
    added = import_weights_csv(env, file, trading_config(env))
    said(as_json, {"file": file, "new_weight_sets": added}, f"{file}: {added} new weight sets")


@click.group("import")
def import_group():
    """Broker statements, and ledger entries in bulk."""


@import_group.command("entries")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@json_option
@pass_ctx
def import_entries_cmd(c: Invocation, file, as_json):
    """Book a JSON-lines file of accounts, commodities and entries (what `export entries` writes) in one
    transaction: every rule checked over the whole set, all or nothing; entries already booked (same key,
    same content) are skipped, so importing a file twice books it once."""
    from tradeledger.engine.ops.entries_file import import_entries

    result = import_entries(c.open(), file)
    if as_json:
        emit_json({"booked": result.booked, "replays": result.replays, "postings": result.postings})
    else:
        say(f"{file}: {result.booked} entries booked ({result.postings} postings), "
                   f"{result.replays} already booked")


@import_group.command("flex")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--tz", default="America/New_York", show_default=True, help="The time zone of the statement's times.")
@json_option
@pass_ctx
def import_flex_cmd(c: Invocation, file, tz, as_json):
    """Read an IB Flex statement: book missed trades, dividends, interest, fees, splits (cash in lieu included)
    and futures expiries once; propose deposits; raise every difference from the ledger, and what it cannot
    book, as an exception (exit 1)."""
    from tradeledger.engine.trust.flex import import_flex

    report = import_flex(c.open(), file, tz=tz)
    if as_json:
        emit_json(report.as_json())
    else:
        say(f"trades: {len(report.trades_booked)} booked, {report.trades_known} already booked; "
                   f"dividends: {len(report.dividends)}; interest and fees: {len(report.account_cash_booked)} booked, "
                   f"{report.account_cash_known} already booked")
        if report.corporate_actions or report.expiries_booked or report.expiries_known:
            say(f"corporate actions: {len(report.corporate_actions)} stored or linked; futures expiries: "
                       f"{len(report.expiries_booked)} booked, {report.expiries_known} already booked")
        for line in report.account_cash_already:
            say(f"already booked: {line}")
        for line in report.in_opening:
            say(f"in the opening's cash (not booked again): {line}")
        for line in report.booked_actions:
            say(f"booked {line}")
        for line in report.expiries_booked:
            say(f"booked expiry {line}")
        for command in report.proposed:
            say(f"not booked (a cash movement to confirm): {command}")
        for line in report.to_do:
            click.echo(f"not booked: {line}", err=True)
        for line in report.differences:
            click.echo(f"difference: {line}", err=True)
    if report.differences or report.to_do:
        sys.exit(1)


COMMANDS = [actions_group, weights_group, import_group]
