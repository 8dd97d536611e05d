"""`tradeledger fava` on a demo ledger: Fava's own figures equal tradeledger's, every tradeledger page
renders, and headless Chromium loads them all without a page or console error.

Fava is a real process (started by `tradeledger fava`, itself a real process) fetched over HTTP on
127.0.0.1; its JSON API gives its balance sheet, income statement and holdings query, which are
compared with `report nav`, `pnl` and `positions --json`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from decimal import Decimal as D
from pathlib import Path

import pytest
from click.testing import CliRunner

from tradeledger.cli import main

PAGES = ("TradeledgerTargets", "TradeledgerOrders", "TradeledgerReconciliation", "TradeledgerExceptions",
         "TradeledgerStrategies")
COMPONENTS = {"trend_fast": "Trend-fast", "trend_slow": "Trend-slow", "etf_trend": "Etf-trend",
              "unattributed": "Unattributed"}


def cli(home, *args):
    result = CliRunner().invoke(main, ["--home", str(home), *args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def cli_json(home, *args):
    return json.loads(cli(home, *args, "--json"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 30) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.geturl(), response.read().decode()


def _api(base: str, endpoint: str, **params) -> dict:
    query = ("?" + urllib.parse.urlencode(params)) if params else ""
    return json.loads(_get(f"{base}/api/{endpoint}{query}")[1])["data"]


def tradeledger_command() -> list[str]:
    script = Path(sys.executable).with_name("tradeledger")
    return [str(script)] if script.exists() else [sys.executable, "-m", "tradeledger.cli"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    home = tmp_path_factory.mktemp("fava-view") / "home"
    assert "check: clean" in cli(home, "demo", "--days", "3")
    port = _free_port()
    process = subprocess.Popen(tradeledger_command() + ["--home", str(home), "fava", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                landing, _ = _get(base + "/", timeout=5)
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("tradeledger fava did not start: " + (process.stdout.read() if process.poll() is not None else ""))
                time.sleep(0.3)
        slug = urllib.parse.urlparse(landing).path.split("/")[1]
        yield home, f"{base}/{slug}", landing
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_fava_loads_the_export_and_the_extension_without_errors(served):
    home, base, landing = served
    assert _api(base, "errors") == []
    assert landing.endswith("/balance_sheet/?conversion=USD")  # the operating currency, NAV's view
    text = (home / "paper" / "ledger.beancount").read_text()
    assert 'option "operating_currency" "USD"' in text
    assert re.search(r"^\d{4}-\d\d-\d\d price EUR [\d.]+ USD$", text, re.M)
    assert re.search(r"^\d{4}-\d\d-\d\d price SPY [\d.]+ USD$", text, re.M)
    for line in re.findall(r"^\d{4}-\d\d-\d\d price (?:MES|MNQ|ZN|CL|FGBL|FESX|MBT)\w* (\S+) \w+$", text, re.M):
        assert D(line) == 0  # futures: what a contract is worth after the daily mark, never a price per unit
    assert "Equity:Deposits" in text and cli_json(home, "check")["ok"] is True


def _tree(node, out):
    out[node["account"]] = node
    for child in node["children"]:
        _tree(child, out)
    return out


def test_favas_net_worth_and_holdings_are_tradeledgers(served):
    home, base, _ = served
    sheet = _api(base, "balance_sheet", conversion="USD")
    assets = _tree(sheet["trees"][0], {})
    nav = cli_json(home, "report", "nav")
    fava_nav = D(str(assets["Assets"]["balance_children"]["USD"]))
    assert abs(fava_nav - D(nav["nav"])) < D("0.01"), (fava_nav, nav["nav"])
    net_worth = sheet["charts"][0]["data"][-1]["balance"]["USD"]
    assert abs(D(str(net_worth)) - D(nav["nav"])) < D("0.01")
    # each holder's holdings at market value: shares at the close, futures at their unsettled margin
    positions = cli_json(home, "positions")
    for strategy, component in COMPONENTS.items():
        account = ("Assets:Broker:DU1234567:Unattributed" if strategy == "unattributed"
                   else f"Assets:Broker:DU1234567:Strategy:{component}")
        mine = [p for p in positions if p["strategy"] == strategy]
        expected = sum((D(p["qty"]) * D(p["last"]) for p in mine if p["mark"] is None), D(0))
        expected += sum((D(p["unrealized"]) for p in mine if p["mark"] is not None), D(0))
        got = D(str(assets.get(account, {"balance": {}})["balance"].get("USD", 0)))
        assert abs(got - expected) < D("0.01"), (strategy, got, expected)
    # units per account and contract: Fava's holdings query equals `positions --json`
    result = _api(base, "query", query_string="SELECT account, currency, sum(number) AS units "
                                              "WHERE account ~ '^Assets:.*(Strategy|Unattributed)' GROUP BY account, currency")
    rows = {(account, ccy): D(str(units)) for account, ccy, units in result["rows"] if D(str(units)) != 0}
    expected_units = {(p["account"], p["contract"]): D(p["qty"]) for p in positions}
    assert rows == expected_units


def test_favas_income_statement_is_the_pnl(served):
    home, base, _ = served
    income = _tree(_api(base, "income_statement")["trees"][0], {})
    pnl = {r["strategy"]: r for r in cli_json(home, "pnl")["rows"]}
    for strategy, component in COMPONENTS.items():
        node = income.get(f"Income:Trading:{component}")
        for native in pnl[strategy]["native"]:
            fava = D(str(node["balance"].get(native["currency"], 0))) if node else D(0)
            assert -fava == D(native["realized"]), (strategy, native)


def test_every_tradeledger_page_shows_the_clis_figures(served):
    home, base, _ = served
    pages = {}
    for name in PAGES:
        started = time.monotonic()
        url, pages[name] = _get(f"{base}/extension/{name}/")
        assert time.monotonic() - started < 30
        assert "Traceback" not in pages[name]
    perf = cli_json(home, "report", "performance")
    for entry in perf["strategies"] + [perf["total"]]:
        row = re.search(rf'<tr data-strategy="{entry["strategy"]}">.*?data-field="pnl">([^<]*)<', pages["TradeledgerStrategies"], re.S)
        assert row and D(row.group(1)) == D(entry["stats"]["pnl"]), entry["strategy"]
    assert pages["TradeledgerStrategies"].count("src=\"data:image/png;base64,") == 3
    fills = cli_json(home, "fills", "list")
    assert pages["TradeledgerOrders"].count("<tr data-fill=") == len(fills)
    for fill in fills:
        assert f'data-fill="{fill["fill_id"]}"' in pages["TradeledgerOrders"]
    opened = cli_json(home, "exceptions", "list")
    open_count = len([e for e in opened if e["state"] in ("open", "acknowledged")])
    assert f'id="tl-open" data-count="{open_count}"' in pages["TradeledgerExceptions"]
    assert 'data-clean="yes"' in pages["TradeledgerReconciliation"]
    runs = cli_json(home, "targets", "list")
    latest = max(r["id"] for r in runs)
    assert f'data-run="{latest}"' in pages["TradeledgerTargets"]
    shown = cli_json(home, "targets", "show", str(latest))
    for line in shown["lines"]:
        cell = re.search(rf'data-strategy="{line["strategy"]}" data-contract="{line["contract"]}">.*?data-field="target">([^<]*)<',
                         pages["TradeledgerTargets"], re.S)
        assert cell and D(cell.group(1)) == D(line["target"])


def test_a_non_loopback_host_needs_public(tmp_path):
    result = CliRunner().invoke(main, ["--home", str(tmp_path), "fava", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "no authentication" in result.output
    from tradeledger.commands.fava import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("127.1.2.3") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_the_daemon_rewrites_the_export_and_fava_picks_it_up(served):
    from tradeledger.engine.ops import jobs
    from tradeledger.engine.setup.environment import open_environment
    from tradeledger.engine.setup.session import Session

    home, base, _ = served
    cli(home, "sim", "trade", "GLD", "7", "350")  # someone trades at the broker's own screen
    session = Session(open_environment(home, "paper"))
    try:
        message = jobs.run(session, jobs.parse_daemon_config({}), "fill_sync")
    finally:
        session.close()
    assert "1 fills booked" in message and "export rewritten" in message
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _api(base, "changed")  # what Fava's page polls: it reloads the file when it changed
        units = _api(base, "query", query_string="SELECT sum(number) AS units WHERE account ~ '^Assets:.*Unattributed' "
                                                 "AND currency = 'GLD'")["rows"]
        if units and units[0][0] is not None and D(str(units[0][0])) == 7:
            break
        time.sleep(0.5)
    else:
        pytest.fail("Fava did not pick up the rewritten export")
    sheet = _api(base, "balance_sheet", conversion="USD")
    fava_nav = D(str(_tree(sheet["trees"][0], {})["Assets"]["balance_children"]["USD"]))
    assert abs(fava_nav - D(cli_json(home, "report", "nav")["nav"])) < D("0.01")


# -- in a real browser ---------------------------------------------------------------------------------

def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed under CI (.ci/run installs Debian's chromium)")
        pytest.skip("chromium not installed")
    return found


def render(url: str, profile: Path, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """(the DOM after the page's scripts ran, the page's console messages)."""
    browser = _chromium()
    common = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", "--virtual-time-budget=10000"]
    done = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=180)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    if screenshot is not None:
        subprocess.run(common + ["--window-size=1400,1000", f"--screenshot={screenshot}", url],
                       capture_output=True, text=True, timeout=180)
    return done.stdout, console


def _errors(console: list[str]) -> list[str]:
    return [line for line in console if re.search(r"error|uncaught|failed|refused|exception", line, re.I)]


@pytest.mark.parametrize("page", ["balance_sheet/?conversion=USD", "income_statement/", "holdings/"]
                         + [f"extension/{name}/" for name in PAGES])
def test_every_page_renders_in_chromium_without_errors(served, page, tmp_path):
    home, base, _ = served
    dom, console = render(f"{base}/{page}", tmp_path / "profile")
    assert not _errors(console), console
    assert "<body" in dom and "Traceback" not in dom
    assert 'class="error"' not in dom and "Internal Server Error" not in dom
    if page.startswith("balance_sheet"):
        for component in ("Trend-fast", "Trend-slow", "Etf-trend"):
            assert f"Assets:Broker:DU1234567:Strategy:{component}" in dom
        nav = D(cli_json(home, "report", "nav")["nav"])
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
        shown = re.search(r"▾ Assets ([−\d,.]+) ", text)  # the tree the page's script drew
        assert shown, text[:2000]
        assert abs(D(shown.group(1).replace(",", "").replace("−", "-")) - nav) <= 1, (shown.group(1), nav)
    if page.startswith("holdings"):
        for p in cli_json(home, "positions"):
            assert p["contract"] in dom
    if page.startswith("extension/TradeledgerStrategies"):
        perf = cli_json(home, "report", "performance")
        for entry in perf["strategies"]:
            row = re.search(rf'<tr data-strategy="{entry["strategy"]}">.*?data-field="pnl">([^<]*)<', dom, re.S)
            assert row and D(row.group(1)) == D(entry["stats"]["pnl"])
