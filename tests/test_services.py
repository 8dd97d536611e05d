"""systemd units that pass `systemd-analyze verify`, secrets kept out of them, and the compose file's
paper/live separation; plus backup and restore through the CLI."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.engine.ops.services import install, make_plan, units
from tradeledger.engine.setup.environment import ConfigError, init_environment

REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cret-pw"


def cli(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *args], catch_exceptions=False)


def verify(directory: Path) -> subprocess.CompletedProcess:
    files = sorted(str(p) for p in directory.iterdir())
    return subprocess.run(["systemd-analyze", "verify", *files], capture_output=True, text=True)


needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None and not os.environ.get("CI"),
                                   reason="systemd-analyze is not installed (.ci/run installs it)")


@needs_systemd
@pytest.mark.parametrize("user_mode", [False, True])
def test_units_verify_and_hold_no_secret(tmp_path, user_mode):
    home = tmp_path / "home"
    init_environment(home, "paper", "sim", None)
    (home / "paper" / "config.toml").write_text(
        (home / "paper" / "config.toml").read_text() + "\n[alerts]\nurls = []\n")
    result = cli(home, "service", "install", *(["--user"] if user_mode else []), "--unit-dir", str(tmp_path / "units"))
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "units").iterdir())
    assert names == ["tradeledger-paper-daemon.service", "tradeledger-paper-export.service",
                     "tradeledger-paper-export.timer", "tradeledger-paper-fava.service"]
    checked = verify(tmp_path / "units")
    assert checked.returncode == 0 and checked.stderr.strip() == "", checked.stderr
    daemon = (tmp_path / "units" / "tradeledger-paper-daemon.service").read_text()
    assert f"--home {home.absolute()} --env paper daemon" in daemon
    assert "Restart=on-failure" in daemon and f"Environment=TRADELEDGER_HOME={home.absolute()}" in daemon
    assert f"EnvironmentFile={home.absolute() / 'paper' / 'secrets.env'}" in daemon
    assert ("User=" in daemon) is (not user_mode)
    assert ("WantedBy=default.target" in daemon) is user_mode
    fava = (tmp_path / "units" / "tradeledger-paper-fava.service").read_text()
    assert "--host 127.0.0.1 --port 5000" in fava and "export beancount" in fava
    secrets = home / "paper" / "secrets.env"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
    for unit in (tmp_path / "units").iterdir():
        assert stat.S_IMODE(unit.stat().st_mode) == 0o644


@needs_systemd
def test_a_broken_unit_fails_verification(tmp_path):
    """The check above can fail: a unit whose program is missing does not verify."""
    home = tmp_path / "home"
    init_environment(home, "paper", "sim", None)
    plan = make_plan(home, "paper", user_mode=True)
    broken = plan.__class__(**{**plan.__dict__, "exe": str(tmp_path / "no-such-tradeledger")})
    (tmp_path / "units").mkdir()
    for name, text in units(broken).items():
        (tmp_path / "units" / name).write_text(text)
    assert verify(tmp_path / "units").returncode != 0


def test_secrets_stay_out_of_units_and_a_readable_secrets_file_is_refused(tmp_path):
    home = tmp_path / "home"
    init_environment(home, "paper", "sim", None)
    config = home / "paper" / "config.toml"
    config.write_text(config.read_text().replace('base_currency = "USD"', 'base_currency = "USD"\n'
                                                 f'db_url = "postgresql+psycopg://tl:{SECRET}@127.0.0.1:1/x"'))
    plan = make_plan(home, "paper", user_mode=True)
    assert all(SECRET not in text for text in units(plan).values())
    secrets = home / "paper" / "secrets.env"
    secrets.write_text(f"PGPASSWORD={SECRET}\n")
    os.chmod(secrets, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        install(plan, tmp_path / "units")
    result = cli(home, "service", "install", "--user", "--unit-dir", str(tmp_path / "units"))
    assert result.exit_code == 1 and "chmod 600" in result.output
    os.chmod(secrets, 0o600)
    install(plan, tmp_path / "units")
    assert all(SECRET not in p.read_text() for p in (tmp_path / "units").iterdir())


def test_paper_and_live_units_never_share_a_name_or_port(tmp_path):
    home = tmp_path / "home"
    init_environment(home, "paper", "sim", None)
    init_environment(home, "live", "ib", "U7654321", ib_port=4001, ib_client_id=2)
    paper, live = make_plan(home, "paper", True), make_plan(home, "live", True)
    assert not set(units(paper)) & set(units(live))
    assert (paper.fava_port, live.fava_port) == (5000, 5001)
    assert "--env live daemon" in units(live)["tradeledger-live-daemon.service"]
    config = home / "live" / "config.toml"
    config.write_text(config.read_text() + "\n[service]\nfava_port = 5000\n")
    with pytest.raises(ConfigError, match="already serves Fava on port 5000"):
        make_plan(home, "live", True)


def test_compose_keeps_paper_and_live_apart():
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    by_env = {env: {name: s for name, s in services.items() if env in s.get("profiles", [])}
              for env in ("paper", "live")}
    assert set(by_env["paper"]) | set(by_env["live"]) == set(services)  # every container belongs to one
    assert not set(by_env["paper"]) & set(by_env["live"])
    seen = {}
    for env, group in by_env.items():
        assert {n.split("-")[0] for n in group} == {"db", "daemon", "fava"}
        volumes = {v.split(":")[0] for s in group.values() for v in s.get("volumes", [])}
        networks = {n for s in group.values() for n in s.get("networks", [])}
        settings = [s["environment"] for s in group.values() if "TL_ENV" in s.get("environment", {})]
        assert {e["TL_ENV"] for e in settings} == {env}
        urls = {e["TL_DB_URL"] for e in settings}
        client_ids = {e["TL_IB_CLIENT_ID"] for e in settings}
        assert len(urls) == 1 and f"@db-{env}:" in next(iter(urls))
        assert "@" in next(iter(urls)) and ":" not in next(iter(urls)).split("//")[1].split("@")[0]  # no password
        ports = {p.split(":")[0] for s in group.values() for p in s.get("ports", [])}
        assert ports == {"127.0.0.1"}  # Fava on the host's loopback only
        seen[env] = (volumes, networks, urls, client_ids, {s["env_file"][0] for s in group.values()})
    for a, b in zip(seen["paper"], seen["live"]):
        assert not a & b, (a, b)
    entrypoint = (REPO / "deploy" / "entrypoint.sh").read_text()
    assert subprocess.run(["sh", "-n", str(REPO / "deploy" / "entrypoint.sh")]).returncode == 0
    assert "--ib-client-id" in entrypoint and "--db-url" in entrypoint


def test_backup_and_restore_through_the_cli(tmp_path):
    home = tmp_path / "home"
    assert cli(home, "init").exit_code == 0
    assert cli(home, "adjust", "cash", "USD", "1000", "--kind", "deposit", "--reason", "seed", "--yes").exit_code == 0
    out = tmp_path / "b.tar.gz"
    made = cli(home, "backup", "--out", str(out))
    assert made.exit_code == 0 and "1 entries" in made.output, made.output
    result = cli(tmp_path / "new", "restore", str(out))
    assert result.exit_code == 0, result.output
    assert "verified: 1 entries" in result.output
    again = cli(tmp_path / "new", "restore", str(out))
    assert again.exit_code == 1 and "refusing to overwrite an existing ledger" in again.output
    assert len(again.output.strip().splitlines()) == 1
    live = cli(tmp_path / "other", "--env", "live", "restore", str(out))
    assert live.exit_code == 1 and "of the paper environment, not live" in live.output


@needs_systemd
def test_fava_unit_uses_tradeledger_fava_when_the_cli_has_it(tmp_path):
    home = tmp_path / "home"
    init_environment(home, "paper", "sim", None)
    plain, own = make_plan(home, "paper", True), make_plan(home, "paper", True, tradeledger_fava=True)
    assert plain.fava[0].endswith("/fava") and plain.fava[-1].endswith("paper/ledger.beancount")
    assert own.fava[0] == own.exe and own.fava[1:] == ("--home", str(home.absolute()), "--env", "paper", "fava",
                                                       "--host", "127.0.0.1", "--port", "5000")
    install(own, tmp_path / "units")
    checked = verify(tmp_path / "units")
    assert checked.returncode == 0 and checked.stderr.strip() == "", checked.stderr
