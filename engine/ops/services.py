"""Services: systemd units that run an environment's daemon and Fava unattended, and say how they are.

`units(plan)` (pure) renders, for one environment (paper or live, never both in one unit):

    tradeledger-<env>-daemon.service   `tradeledger --home H --env E daemon`, restarted on failure
    tradeledger-<env>-fava.service     Fava on 127.0.0.1 over the environment's exported ledger
    tradeledger-<env>-export.service   `tradeledger export beancount` (oneshot) ...
    tradeledger-<env>-export.timer     ... every 15 minutes, so that Fava follows the books

Each unit pins the home (`TRADELEDGER_HOME` and `--home`) and the environment (`--env`), runs in
the environment's directory with umask 077, and reads its secrets (PGPASSWORD,
TRADELEDGER_ALERT_URLS, ...) from `<home>/<env>/secrets.env`, a file of mode 0600 that
`install` creates empty (with comments) and refuses to use when others can read it. No secret is
ever written into a unit: `units` is given none.

System units (`/etc/systemd/system`) run as the owner of the home directory; `--user` units go
to `~/.config/systemd/user`. Fava listens on 127.0.0.1 at `[service] fava_port` (paper 5000,
live 5001 by default); paper and live may not share a port.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tradeledger.engine.setup.environment import ENVIRONMENTS, ConfigError, parse_settings, resolve_home

DEFAULT_FAVA_PORT = {"paper": 5000, "live": 5001}
SECRETS_TEMPLATE = """\
# Secrets of the tradeledger {env} environment, read by its systemd units (EnvironmentFile=).
# Keep this file mode 0600. One VARIABLE=value a line; never put these in config.toml or a unit.
#
# PGPASSWORD=...                     the PostgreSQL password (libpq reads it; keep it out of db_url)
# TRADELEDGER_ALERT_URLS=...         apprise URLs with their tokens, separated by spaces
"""


@dataclass(frozen=True)
class ServicePlan:
    env: str
    home: Path
    exe: str  # the tradeledger executable, absolute
    fava: tuple[str, ...]  # the command that serves Fava for this environment
    user_mode: bool
    run_as: str | None  # User= of system units
    fava_port: int

    @property
    def env_dir(self) -> Path:
        return self.home / self.env

    @property
    def secrets(self) -> Path:
        return self.env_dir / "secrets.env"

    def name(self, what: str, kind: str = "service") -> str:
        return f"tradeledger-{self.env}-{what}.{kind}"


def _arg(text: str) -> str:
    """One ExecStart argument: `%` escaped for systemd, quoted when it holds a space or a quote."""
    text = str(text).replace("%", "%%")
    if any(c in text for c in "\n\r"):
        raise ConfigError(f"a path with a line break cannot go into a systemd unit: {text!r}")
    if any(c in text for c in " \t\"'\\;$"):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _command(*args: str) -> str:
    return " ".join(_arg(a) for a in args)


def _service(plan: ServicePlan, description: str, exec_start: str, extra: list[str], restart: bool,
             install: bool = True) -> str:
    lines = ["[Unit]", f"Description={description}", "After=network-online.target postgresql.service",
             "Wants=network-online.target"]
    if restart:
        lines += ["StartLimitIntervalSec=600", "StartLimitBurst=10"]
    lines += ["", "[Service]", "Type=" + ("simple" if restart else "oneshot")]
    if not plan.user_mode and plan.run_as:
        lines.append(f"User={plan.run_as}")
    lines += [f"Environment={_arg('TRADELEDGER_HOME=' + str(plan.home))}", f"Environment=TRADELEDGER_ENV={plan.env}",
              f"EnvironmentFile={_arg(str(plan.secrets))}", f"WorkingDirectory={_arg(str(plan.env_dir))}",
              "UMask=0077", "NoNewPrivileges=yes", *extra, f"ExecStart={exec_start}"]
    if restart:
        lines += ["Restart=on-failure", "RestartSec=10"]
    if install:
        lines += ["", "[Install]", "WantedBy=" + ("default.target" if plan.user_mode else "multi-user.target")]
    return "\n".join(lines) + "\n"


def units(plan: ServicePlan) -> dict[str, str]:
    """{file name: unit text} for one environment (pure)."""
    base = (plan.exe, "--home", str(plan.home), "--env", plan.env)
    export = _command(*base, "export", "beancount")
    return {
        plan.name("daemon"): _service(
            plan, f"tradeledger daemon ({plan.env} environment)", _command(*base, "daemon"),
            ["KillSignal=SIGTERM", "TimeoutStopSec=120"], restart=True),
        plan.name("fava"): _service(
            plan, f"Fava over the tradeledger {plan.env} ledger (127.0.0.1:{plan.fava_port})",
            _command(*plan.fava), [f"ExecStartPre={export}"], restart=True),
        plan.name("export"): _service(
            plan, f"Export the tradeledger {plan.env} ledger for Fava", export, [], restart=False, install=False),
        plan.name("export", "timer"): "\n".join([
            "[Unit]", f"Description=Export the tradeledger {plan.env} ledger for Fava every 15 minutes", "",
            "[Timer]", "OnBootSec=2min", "OnUnitActiveSec=15min", f"Unit={plan.name('export')}", "",
            "[Install]", "WantedBy=timers.target", ""]),
    }


# -- the plan from an environment --------------------------------------------------------------------

def fava_port(raw: dict, env: str) -> int:
    table = raw.get("service", {})
    if not isinstance(table, dict):
        raise ConfigError("config: [service] must be a table")
    port = table.get("fava_port", DEFAULT_FAVA_PORT[env])
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ConfigError(f"config: service.fava_port must be a port number, not {port!r}")
    return port


def _executable(name: str) -> str:
    here = Path(sys.executable).parent / name  # the venv this tradeledger runs from
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise ConfigError(f"cannot find the {name} executable to put in the unit")
    return str(Path(found).absolute())


def fava_command(exe: str, home: Path, env: str, port: int, tradeledger_fava: bool) -> tuple[str, ...]:
    """`tradeledger fava` when the CLI has it, else Fava itself on the exported ledger."""
    if tradeledger_fava:
        return (exe, "--home", str(home), "--env", env, "fava", "--host", "127.0.0.1", "--port", str(port))
    return (_executable("fava"), "--host", "127.0.0.1", "--port", str(port), str(home / env / "ledger.beancount"))


def make_plan(home: str | Path | None, env: str, user_mode: bool, run_as: str | None = None,
              tradeledger_fava: bool = False) -> ServicePlan:
    """The plan for an initialised environment; refuses a Fava port the other environment uses."""
    home = resolve_home(home).absolute()
    settings = parse_settings(home / env / "config.toml", env)
    port = fava_port(settings.raw, env)
    for other in ENVIRONMENTS:
        path = home / other / "config.toml"
        if other != env and path.exists() and fava_port(parse_settings(path, other).raw, other) == port:
            raise ConfigError(f"environment {other!r} already serves Fava on port {port}: give this one its own "
                              "[service] fava_port")
    exe = _executable("tradeledger")
    if not user_mode and run_as is None:
        run_as = home.owner()
    return ServicePlan(env, home, exe, fava_command(exe, home, env, port, tradeledger_fava), user_mode, run_as, port)


def unit_dir(user_mode: bool) -> Path:
    if user_mode:
        base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return Path(base) / "systemd" / "user"
    return Path("/etc/systemd/system")


def ensure_secrets_file(plan: ServicePlan) -> bool:
    """Create the 0600 secrets file if missing (True when created); refuse one others can read."""
    path = plan.secrets
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"{path} is readable by others (mode {mode:04o}): run `chmod 600 {path}`")
        return False
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(SECRETS_TEMPLATE.format(env=plan.env))
    return True


@dataclass(frozen=True)
class Installed:
    unit_dir: Path
    files: tuple[Path, ...]
    secrets: Path
    secrets_created: bool
    commands: tuple[str, ...]  # what starts them (run when enabling)


def systemctl(user_mode: bool, *args: str) -> list[str]:
    return ["systemctl", *(["--user"] if user_mode else []), *args]


def install(plan: ServicePlan, directory: Path | None = None, enable: bool = False) -> Installed:
    """Write the units (atomically, 0644: they hold no secret) and the secrets file; optionally enable."""
    directory = directory or unit_dir(plan.user_mode)
    directory.mkdir(parents=True, exist_ok=True)
    created = ensure_secrets_file(plan)
    written = []
    for name, text in units(plan).items():
        path = directory / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.chmod(tmp, 0o644)
        tmp.replace(path)
        written.append(path)
    commands = (" ".join(systemctl(plan.user_mode, "daemon-reload")),
                " ".join(systemctl(plan.user_mode, "enable", "--now", plan.name("daemon"), plan.name("fava"),
                                   plan.name("export", "timer"))))
    if enable:
        for command in commands:
            done = subprocess.run(command.split(), capture_output=True, text=True)
            if done.returncode != 0:
                reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
                raise ConfigError(f"`{command}` failed: {reason}")
    return Installed(directory, tuple(written), plan.secrets, created, commands)


def status(plan: ServicePlan, directory: Path | None = None) -> list[dict]:
    """Per unit: installed or not, and what systemd says of it (or why it cannot be asked)."""
    directory = directory or unit_dir(plan.user_mode)
    rows = []
    for name in units(plan):
        row = {"unit": name, "installed": (directory / name).exists()}
        if shutil.which("systemctl") is None:
            row["state"] = "unknown (no systemctl)"
        else:
            done = subprocess.run(systemctl(plan.user_mode, "show", name, "--property=ActiveState,SubState,"
                                            "NRestarts,ExecMainStartTimestamp"), capture_output=True, text=True)
            if done.returncode != 0:
                reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
                row["state"] = f"unknown (systemctl: {reason})"
            else:
                props = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
                row["state"] = f"{props.get('ActiveState', '?')}/{props.get('SubState', '?')}"
                row["restarts"] = props.get("NRestarts", "")
                row["since"] = props.get("ExecMainStartTimestamp", "")
        rows.append(row)
    return rows
