"""Every table of config.toml refuses a key it does not know (naming the file, the table and the
key, with the closest known spelling); `[limits.*.NAME]` names configured things; switches are TOML
booleans and whole-number keys TOML integers. A command refuses the first mistake (and says how
many more); `config check` lists them all. docs/config.md documents exactly the keys of each table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.engine.setup.config_keys import FREE, KEYS, problems

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"
BASE = """
[instruments.MES]
type = "future"
currency = "USD"
multiplier = "5"
exchange = "CME"

[strategies.trend_slow]
instruments = { MES = 1 }
"""


def run(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *args])


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    assert run(home, "init").exit_code == 0
    return home


def _write(home, extra: str) -> None:
    with open(home / "paper" / "config.toml", "a", encoding="utf-8") as fh:
        fh.write(BASE + extra)


@pytest.mark.parametrize("extra, expected", [
    ("[portfolio]\ncapitol = 5\n", "[portfolio] unknown key 'capitol' (did you mean 'capital'?"),
    ("[limits.instruments.MES]\nmax_postion = 3\n",
     "[limits.instruments.MES] unknown key 'max_postion' (did you mean 'max_position'?"),
    ("[limits]\nmax_order_qtty = 3\n", "[limits] unknown key 'max_order_qtty' (did you mean 'max_order_qty'?"),
    ("[limits.instruments.MESS]\nmax_position = 3\n",
     "[limits.instruments.MESS] unknown instrument 'MESS' (did you mean 'MES'?; known: MES)"),
    ("[limits.strategies.trend_slwo]\nhalt = true\n",
     "[limits.strategies.trend_slwo] unknown strategy 'trend_slwo' (did you mean 'trend_slow'?"),
    ("[limits.strategies.trend_slow]\nhalt = \"yes\"\n", "limits.strategies.trend_slow.halt must be true or false"),
    ("[limits.instruments.MES]\nreduce_only = 1\n", "limits.instruments.MES.reduce_only must be true or false"),
    ("[sim]\ncommission_per_contrct = \"1\"\n", "[sim] unknown key 'commission_per_contrct'"),
    ("[trading]\nlease_wait = 3\n", "[trading] unknown key 'lease_wait' (did you mean 'lease_wait_seconds'?"),
    ("[reconcile]\ncash_tolerence = \"0.05\"\n", "[reconcile] unknown key 'cash_tolerence'"),
    ("[monitor]\nstale_price = 3\n", "[monitor] unknown key 'stale_price'"),
    ("[service]\nfava = 5000\n", "[service] unknown key 'fava'"),
    ("[account_cash]\ninterests = \"capital\"\n", "[account_cash] unknown key 'interests' (did you mean 'interest'?"),
    ("[deamon]\nfill_sync_seconds = 60\n", "unknown table '[deamon]' (did you mean '[daemon]'?"),
])
def test_a_mistake_is_refused_by_every_command_and_named(home, extra, expected):
    _write(home, extra)
    for args in (["config", "check"], ["positions"], ["status"]):
        result = run(home, *args)
        assert result.exit_code == 1, (args, result.output)
        assert "config.toml" in result.output and expected in result.output, (args, result.output)
        assert "Traceback" not in result.output and "internal error" not in result.output


def test_instrument_whole_numbers_are_integers(home):
    home_text = BASE.replace('exchange = "CME"', 'exchange = "CME"\nexpiry_day = "15"\nforce_days = 1.5\n'
                                                   'carry_offset = "2"')
    with open(home / "paper" / "config.toml", "a", encoding="utf-8") as fh:
        fh.write(home_text)
    result = run(home, "config", "check")
    assert result.exit_code == 1
    for key in ("expiry_day", "force_days", "carry_offset"):
        assert f"instruments.MES.{key} must be a whole number" in result.output, result.output


def test_config_check_lists_every_mistake_and_a_command_the_first(home):
    _write(home, "[portfolio]\ncapitol = 5\n\n[limits.instruments.MES]\nmax_postion = 3\nhalt = \"no\"\n"
                 "\n[limits.strategies.nobody]\nhalt = true\n")
    checked = run(home, "config", "check")
    lines = [line for line in checked.stderr.splitlines() if line.strip()]
    assert checked.exit_code == 1 and len(lines) == 4, checked.output
    assert all("config.toml" in line for line in lines)
    one = run(home, "positions")
    assert one.exit_code == 1 and len(one.stderr.strip().splitlines()) == 1
    assert "(and 3 more: `tradeledger config check` lists them)" in one.stderr


def test_a_clean_config_has_no_problems_and_the_checker_can_fail():
    import tomllib

    raw = tomllib.loads(BASE)
    assert problems(raw) == []
    raw["limits"] = {"instruments": {"MES": {"hlat": True}}}
    assert problems(raw) == ["[limits.instruments.MES] unknown key 'hlat' (did you mean 'halt'?; known: clip, halt, "
                             "max_daily_qty, max_notional, max_order_notional, max_order_qty, max_position, "
                             "reduce_only)"]


def _doc_sections() -> dict[str, set[str]]:
    """docs/config.md: each `## [table]` / `### [table]` section's documented keys (its table rows)."""
    text = DOC.read_text(encoding="utf-8")
    sections = {}
    for match in re.finditer(r"^#{2,3} \[([^\]]+)\]\n(.*?)(?=^#{1,3} |\Z)", text, re.M | re.S):
        sections[match.group(1)] = set(re.findall(r"^\| `([a-z_]+)` \|", match.group(2), re.M))
    return sections


def test_docs_config_md_documents_exactly_the_keys_of_each_table():
    sections = _doc_sections()
    for table, keys in KEYS.items():
        if keys is FREE:
            continue
        name = table.replace("*", "NAME")
        assert name in sections, f"docs/config.md has no section [{name}]"
        sub_tables = {k for k in keys if f"{table}.{k}" in KEYS}  # a key holding a sub-table of its own
        assert sections[name] | sub_tables >= set(keys) - sub_tables, \
            f"[{name}]: undocumented {sorted(set(keys) - sub_tables - sections[name])}"
        assert sections[name] <= set(keys), f"[{name}]: documented but unknown {sorted(sections[name] - set(keys))}"
