"""Fava serves the exported ledger over HTTP: no errors, and the strategies' accounts are there."""

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tradeledger.engine.setup.demo import run_demo
from tradeledger.ledger.export import export_beancount


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=10) as response:  # follows redirects
        return response.geturl(), response.read().decode()


@pytest.fixture(scope="module")
def fava_url(tmp_path_factory):
    home = tmp_path_factory.mktemp("fava") / "home"
    session = run_demo(home, days=2)
    path = Path(session.ledger_path)
    export_beancount(session.ledger, path, title="tradeledger demo")
    session.close()
    port = _free_port()
    from tradeledger.commands.fava import fava_command  # this interpreter's Fava, script or not

    process = subprocess.Popen(fava_command(path, "127.0.0.1", port), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                landing, _ = _get(base + "/")
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("fava did not start")
                time.sleep(0.3)
        yield landing.rsplit("/", 2)[0]  # http://host:port/<ledger slug>
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_fava_reports_no_errors(fava_url):
    _, body = _get(fava_url + "/api/errors")
    assert json.loads(body)["data"] == []


def test_the_balance_sheet_shows_every_holder(fava_url):
    _, page = _get(fava_url + "/balance_sheet/")
    for component in ("Trend-fast", "Trend-slow", "Etf-trend", "Unattributed", "DU1234567"):
        assert component in page


def test_a_strategy_account_journal_lists_its_fills_and_settlements(fava_url):
    _, body = _get(fava_url + "/api/account_report?a=Income:Trading:Trend-slow&r=journal")
    journal = json.loads(body)["data"]["journal"]
    assert "Settle " in journal
    assert "BUY " in journal or "SELL " in journal or "Cross " in journal


def _chromium() -> str | None:
    import os
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed under CI (.ci/run installs Debian's chromium)")
        pytest.skip("chromium not installed")
    return found


def test_the_balance_sheet_renders_in_a_real_browser(fava_url, tmp_path):
    """Fava draws its account tree with JavaScript: headless Chromium runs it, and the rendered
    page links every strategy's holdings account (the raw HTML has none of these links)."""
    browser = _chromium()
    page = subprocess.run(
        [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=8000", "--dump-dom",
         fava_url + "/balance_sheet/"],
        capture_output=True, text=True, timeout=120).stdout
    slug = fava_url.rsplit("/", 1)[1]
    for strategy in ("Trend-fast", "Trend-slow", "Etf-trend"):
        assert f'href="/{slug}/account/Assets:Broker:DU1234567:Strategy:{strategy}/' in page, strategy
    _, raw = _get(fava_url + "/balance_sheet/")
    assert "Assets:Broker:DU1234567:Strategy:Trend-fast/\"" not in raw  # it really was the script
