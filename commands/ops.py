"""`tradeledger` commands: running it for real: backup and restore, alerts, systemd services.

Registered on the `main` group of cli.py; each command parses, calls one engine function in
`engine/ops/` and prints (a table or, with `--json`, data). Refusals are one line and exit 1.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import click
from tradeledger.commands.common import Invocation, fail, json_option, pass_ctx, result_option, said
from tradeledger.reports.render import emit_json, table


@click.command("backup")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Backup file (default: <env>/backups/tradeledger-<env>-<account>-<time>.tar.gz).")
@json_option
@pass_ctx
def backup_cmd(c: Invocation, out, as_json):
    """A consistent online copy of the environment (database, config, manifest) in one file."""
    from tradeledger.engine.ops.backup import take_backup

    result = take_backup(c.open(), Path(out) if out else None)
    m = result.manifest
    if as_json:
        emit_json({"file": str(result.path), "bytes": result.size, "manifest": m.as_json()})
    else:
        click.echo(f"backup {result.path} ({result.size} bytes): {m.environment} {m.broker_account}, "
                   f"{m.backend} at revision {m.schema_revision}, {m.transactions} entries, {m.balances_digest}")


@click.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@json_option
@click.pass_context
def restore_cmd(ctx, file, as_json):
    """Restore a backup into a new home (--home) or new database (--db-url); never over a ledger.

    Ends with a verification: schema and identity, integrity, entry counts and the balances
    digest equal to the manifest's, and beancount's balances equal to the ledger's."""
    from tradeledger.engine.ops.backup import restore

    c: Invocation = ctx.obj
    root = ctx.find_root()
    explicit_env = root.get_parameter_source("env") == click.core.ParameterSource.COMMANDLINE
    result = restore(Path(file), c.home, c.env if explicit_env else None, c.db_url)
    if as_json:
        emit_json({"home": str(result.home), "environment": result.env, "database": result.db_url,
                   "balances_digest": result.digest, "verified": True, "entries_checked": result.check_entries,
                   "manifest": result.manifest.as_json()})
    else:
        click.echo(f"restored {result.env} ({result.manifest.broker_account}) into {result.home / result.env} "
                   f"({result.db_url})")
        click.echo(f"verified: {result.manifest.transactions} entries, balances digest {result.digest} equals the "
                   "manifest's, beancount check clean")


@click.group("alerts")
def alerts_group():
    """Alerts to the configured channels ([alerts] urls, $TRADELEDGER_ALERT_URLS)."""


@alerts_group.command("send")
@result_option
@pass_ctx
def alerts_send(c: Invocation, as_json):
    """Send what is due now (what the daemon's alerts job does); for cron when no daemon runs."""
    from tradeledger.engine.ops.alerts import run_alerts

    line = run_alerts(c.open())
    said(as_json, {"result": line}, line)


@alerts_group.command("test")
@result_option
@pass_ctx
def alerts_test(c: Invocation, as_json):
    """Send a test message to every channel now; exit 1 if any channel fails."""
    from tradeledger.engine.ops.alerts import apprise_send, channel_id, parse_alert_config

    env = c.open()
    config = parse_alert_config(env.settings.raw)
    if not config.urls:
        fail("no alert channels: set [alerts] urls in config.toml or TRADELEDGER_ALERT_URLS")
    failed, channels = 0, []
    for url in config.urls:
        error = apprise_send(url, f"[tradeledger {env.settings.env}] test",
                             f"A test message from tradeledger ({env.settings.account}) at "
                             f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC.")
        channels.append({"channel": channel_id(url), "sent": error is None, "error": error})
        if not as_json:
            click.echo(f"channel {channel_id(url)}: " + ("sent" if error is None else f"FAILED: {error}"))
        failed += error is not None
    said(as_json, {"channels": channels}, None)
    if failed:
        fail(f"{failed} of {len(config.urls)} channels failed")


@click.group("service")
def service_group():
    """systemd units for the daemon and Fava of one environment."""


def _plan(c: Invocation, user_mode: bool, run_as: str | None):
    from tradeledger.engine.ops.services import make_plan

    root = click.get_current_context().find_root().command  # `tradeledger fava`, once the CLI has it
    has_fava = isinstance(root, click.Group) and "fava" in root.commands
    return make_plan(c.home, c.env, user_mode, run_as, tradeledger_fava=has_fava)


@service_group.command("install")
@click.option("--user", "user_mode", is_flag=True, help="User units (~/.config/systemd/user), not system units.")
@click.option("--run-as", default=None, help="System units: the user they run as (default: the home's owner).")
@click.option("--unit-dir", type=click.Path(file_okay=False), default=None,
              help="Write the units here instead of systemd's directory (packaging, review).")
@click.option("--enable", is_flag=True, help="Also run systemctl daemon-reload and enable --now.")
@result_option
@pass_ctx
def service_install(c: Invocation, user_mode, run_as, unit_dir, enable, as_json):
    """Write the environment's units (daemon, Fava, export timer) and its 0600 secrets file."""
    from tradeledger.engine.ops.services import install

    done = install(_plan(c, user_mode, run_as), Path(unit_dir) if unit_dir else None, enable)
    if as_json:
        said(True, {"files": [str(p) for p in done.files], "secrets": str(done.secrets),
                    "secrets_created": done.secrets_created, "enabled": enable,
                    "commands": [] if enable else list(done.commands)}, None)
        return
    for path in done.files:
        click.echo(f"wrote {path}")
    click.echo(f"secrets: {done.secrets} (0600{', created empty' if done.secrets_created else ''})")
    if not enable:
        click.echo("start them with:\n  " + "\n  ".join(done.commands))


@service_group.command("status")
@click.option("--user", "user_mode", is_flag=True, help="User units.")
@click.option("--unit-dir", type=click.Path(file_okay=False), default=None,
              help="Read the units from here instead of systemd's directory (as installed with --unit-dir).")
@json_option
@pass_ctx
def service_status(c: Invocation, user_mode, unit_dir, as_json):
    """Each unit: installed, and its state as systemd reports it."""
    from tradeledger.engine.ops.services import status

    rows = status(_plan(c, user_mode, None), Path(unit_dir) if unit_dir else None)
    if as_json:
        emit_json(rows)
    else:
        table(f"{c.env} services", ["unit", "installed", "state", "restarts", "since"],
              [(r["unit"], "yes" if r["installed"] else "no", r["state"], r.get("restarts", ""), r.get("since", ""))
               for r in rows])


COMMANDS = [backup_cmd, restore_cmd, alerts_group, service_group]
