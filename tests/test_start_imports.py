"""Starting the CLI imports only what a command uses: `--help` imports no engine, SQLAlchemy,
pandas, alembic, rich, beancount, ib_async or Fava; `positions --json` on a ledger adds the
ledger and SQLAlchemy but still none of the others. Checked in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from tradeledger.cli import main

HEAVY = ("pandas", "numpy", "alembic", "beancount", "beanquery", "ib_async", "fava", "rich", "apscheduler")

PROBE = """
import json, sys
sys.argv = ["tradeledger", *sys.argv[1:]]
from tradeledger.cli import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules} | {name for name in sys.modules
                                                                        if name.startswith("tradeledger.")})),
      file=sys.stderr)
"""


def _modules(*args: str) -> set[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    return set(json.loads(proc.stderr.strip().splitlines()[-1]))


def test_help_imports_no_engine_and_no_heavy_library():
    loaded = _modules("--help")
    assert "tradeledger.cli" in loaded
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert "sqlalchemy" not in loaded
    assert not {m for m in loaded if m.startswith(("tradeledger.engine.", "tradeledger.ledger.store",
                                                   "tradeledger.reports.pnl"))
                and m not in ("tradeledger.engine.setup", "tradeledger.engine.trust")}


CLICKS_OWN = """
import sys
import click
from tradeledger import cli
cli.Group.format_commands = click.Group.format_commands  # click's listing: every command imported
sys.argv = ["tradeledger", "--help"]
cli.main()
"""


def test_help_imports_no_command_module_and_lists_them_as_click_would():
    loaded = _modules("--help")
    assert not {m for m in loaded if m.startswith("tradeledger.commands.") and m != "tradeledger.commands.common"}
    for width in ("60", "100", "200"):
        env = {**os.environ, "COLUMNS": width}
        lazy = subprocess.run([sys.executable, "-c", PROBE, "--help"], capture_output=True, text=True, timeout=120,
                              env=env).stdout
        full = subprocess.run([sys.executable, "-c", CLICKS_OWN], capture_output=True, text=True, timeout=120,
                              env=env).stdout
        assert lazy == full and "positions" in lazy, width


def test_the_short_help_table_is_the_commands_own():
    import importlib

    import click

    from tradeledger.cli import COMMAND_MODULES, SHORT_HELP

    names = set()
    for module in COMMAND_MODULES:
        for command in importlib.import_module(f"tradeledger.commands.{module}").COMMANDS:
            names.add(command.name)
            assert not command.hidden and not command.deprecated
            for limit in range(8, 220, 3):
                assert click.Command(command.name, help=SHORT_HELP[command.name]).get_short_help_str(limit) \
                    == command.get_short_help_str(limit), (command.name, limit)
    assert names == set(SHORT_HELP)


def test_positions_json_imports_no_heavy_library_nor_sqlalchemy(tmp_path):
    home = tmp_path / "home"
    result = CliRunner().invoke(main, ["--home", str(home), "init"])
    assert result.exit_code == 0, result.output
    loaded = _modules("--home", str(home), "positions", "--json")
    assert "tradeledger.reports.positions" in loaded
    assert not loaded & {*HEAVY, "sqlalchemy", "pydantic", "tradeledger.ledger.store", "tradeledger.reports.pnl"}
    (home / "paper" / ".config-checked").unlink()  # not vouched for: the full path, still no heavy library
    loaded = _modules("--home", str(home), "positions", "--json")
    assert {"sqlalchemy", "tradeledger.ledger.store", "tradeledger.reports.pnl"} <= loaded
    assert not loaded & set(HEAVY), loaded & set(HEAVY)


def test_status_imports_no_heavy_library_nor_sqlalchemy(tmp_path):
    home = tmp_path / "home"
    result = CliRunner().invoke(main, ["--home", str(home), "init"])
    assert result.exit_code == 0, result.output
    for args in (["status", "--json", "--no-broker"], ["status"]):
        loaded = _modules("--home", str(home), *args)
        assert "tradeledger.engine.ops.status_quick" in loaded
        assert not loaded & {*HEAVY, "sqlalchemy", "pydantic", "apprise", "tenacity", "tradeledger.ledger.store",
                             "tradeledger.engine.ops.status", "tradeledger.engine.targets.runs"}, args


def test_the_lazy_command_table_names_every_command_of_every_module():
    import importlib
    from pathlib import Path

    from tradeledger.cli import COMMAND_MODULES

    for module, names in COMMAND_MODULES.items():
        commands = importlib.import_module(f"tradeledger.commands.{module}").COMMANDS
        assert tuple(c.name for c in commands) == names, module
    found = {p.stem for p in Path(importlib.import_module("tradeledger.commands").__file__).parent.glob("*.py")}
    assert found - {"__init__", "common"} == set(COMMAND_MODULES)


def test_a_user_error_is_still_one_line_without_the_error_modules_imported_up_front(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tradeledger.cli", "--home", str(tmp_path / "none"), "status"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
