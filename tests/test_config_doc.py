"""docs/config.md cannot drift silently: its whole configs (a ```toml block that starts with
[environment]) are accepted by `tradeledger config check` in a fresh paper environment, and by the
readers of the tables the check does not cover; and every key the code reads is documented."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.engine.ops.alerts import AlertConfig
from tradeledger.engine.ops.backup import BackupConfig
from tradeledger.engine.ops.health import HealthConfig, parse_health_config
from tradeledger.engine.ops.jobs import DaemonConfig
from tradeledger.engine.ops.services import fava_port
from tradeledger.engine.setup.config import AllocationSpec, Instrument, Limits, Strategy
from tradeledger.engine.trust.monitor import Thresholds, thresholds
from tradeledger.engine.trust.reconcile import cash_tolerance

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def whole_configs() -> list[str]:
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return [b for b in blocks if re.match(r"(\s*#.*\n)*\s*\[environment\]", b)]


def test_the_docs_complete_example_passes_config_check(tmp_path):
    configs = whole_configs()
    assert configs, "docs/config.md has no whole config (a ```toml block starting with [environment])"
    for n, text in enumerate(configs):
        home = tmp_path / f"home{n}"
        runner = CliRunner()
        assert runner.invoke(main, ["--home", str(home), "init"], catch_exceptions=False).exit_code == 0
        (home / "paper" / "config.toml").write_text(text, encoding="utf-8")
        result = runner.invoke(main, ["--home", str(home), "config", "check"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        raw = tomllib.loads(text)
        assert raw["instruments"] and raw["strategies"]  # the example configures trading, not just identity
        # the tables `config check` does not read, read as their commands read them
        cash_tolerance(raw), thresholds(raw), parse_health_config(raw), fava_port(raw, "paper")


def test_a_broken_example_would_fail(tmp_path):
    """The check above can fail: the same example with a misspelt daemon key is refused."""
    home = tmp_path / "home"
    runner = CliRunner()
    runner.invoke(main, ["--home", str(home), "init"], catch_exceptions=False)
    text = whole_configs()[-1].replace("[daemon]\n", "[daemon]\nfill_sync_secs = 60\n", 1)
    (home / "paper" / "config.toml").write_text(text, encoding="utf-8")
    result = runner.invoke(main, ["--home", str(home), "config", "check"], catch_exceptions=False)
    assert result.exit_code == 1 and "fill_sync_secs" in result.output


def test_every_key_the_code_reads_is_documented():
    doc = DOC.read_text(encoding="utf-8")
    derived = {"backup_time", "alerts_seconds", "name", "account_name", "halted"}  # not keys of the file
    keys = {f.name for cls in (DaemonConfig, BackupConfig, AlertConfig, HealthConfig, Thresholds, AllocationSpec,
                               Instrument, Strategy, Limits) for f in dataclasses.fields(cls)} - derived
    keys |= {"halt", "type", "base_currency", "db_url", "host", "port", "client_id", "capital", "buffer_fraction",
             "max_run_age_hours", "commission_per_contract", "commission_per_share", "interest", "fees",
             "cash_tolerance", "fava_port", "summary_time", "every_seconds"}
    keys -= {"is_future"}
    missing = sorted(k for k in keys if f"`{k}`" not in doc)
    assert not missing, f"docs/config.md does not document: {', '.join(missing)}"
    for table in ("environment", "ib", "portfolio", "instruments.NAME", "mappings", "strategies.NAME",
                  "strategies.NAME.allocation", "rules", "limits", "limits.instruments.NAME",
                  "limits.strategies.NAME", "sim", "account_cash", "daemon", "reconcile", "monitor", "backup",
                  "alerts", "health", "service"):
        assert f"## [{table}]" in doc or f"### [{table}]" in doc, table
