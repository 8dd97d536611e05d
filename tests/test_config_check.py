"""`tradeledger config check`: a fresh init's commented config is valid; every value in force is
printed (defaults included, daemon settlement per exchange); a mistake is one line naming the file
and the key, exit 1; the database is not needed."""

from __future__ import annotations

import json

from click.testing import CliRunner

from tradeledger.cli import main


def run(home, *args):
    return CliRunner().invoke(main, ["--home", str(home), *args], catch_exceptions=False)


def test_a_fresh_config_is_valid_and_every_value_in_force_is_shown(tmp_path):
    home = tmp_path / "home"
    assert run(home, "init").exit_code == 0
    text = (home / "paper" / "config.toml").read_text()
    assert "docs/config.md" in text and "# [strategies.trend]" in text  # commented, with examples
    with open(home / "paper" / "config.toml", "a") as f:
        f.write('\n[instruments.FESX]\ntype = "future"\ncurrency = "EUR"\nmultiplier = "10"\nexchange = "EUREX"\n'
                '\n[strategies.trend]\ninstruments = { FESX = 1 }\n')
    (home / "paper" / "tradeledger.db").unlink()  # the check reads the file only
    result = run(home, "config", "check", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["portfolio"] == {"capital": "1000000", "buffer_fraction": "0.1", "max_run_age_hours": "24"}
    assert info["strategies"][0] | {} == {"name": "trend", "kind": "trend", "capital_share": "1",
                                           "instruments": "FESX", "rules": "ewmac_16_64"}
    assert info["daemon"]["settlement_times"] == {"EUREX": "16:45 UTC"}
    assert "settle:EUREX" in info["daemon"]["jobs"]


def test_a_mistake_is_one_line_with_the_file_and_the_key(tmp_path):
    home = tmp_path / "home"
    run(home, "init")
    with open(home / "paper" / "config.toml", "a") as f:
        f.write('\n[strategies.trend]\ninstruments = { NOPE = 1 }\n')
    result = run(home, "config", "check")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "config.toml" in lines[0] and "strategies.trend.instruments" in lines[0]
    assert "NOPE" in lines[0] and "Traceback" not in result.output


def test_marks_are_never_booked_in_the_future():
    import datetime as dt

    import pytest

    from tradeledger.engine.trading.marking import settlement_booking_time

    utc = dt.timezone.utc
    before_close = dt.datetime(2026, 12, 2, 15, tzinfo=utc)
    assert settlement_booking_time(dt.date(2026, 12, 2), before_close) == before_close  # not 21:00, still ahead
    assert settlement_booking_time(dt.date(2026, 12, 1), before_close) == dt.datetime(2026, 12, 1, 21, tzinfo=utc)
    with pytest.raises(ValueError, match="after today"):
        settlement_booking_time(dt.date(2026, 12, 3), before_close)


def test_the_tables_other_commands_read_are_checked_too(tmp_path):
    home = tmp_path / "home"
    run(home, "init")
    with open(home / "paper" / "config.toml", "a") as f:
        f.write('\n[reconcile]\ncash_tolerance = "0.05"\n[health]\nport = 8765\n')
    info = json.loads(run(home, "config", "check", "--json").output)
    assert info["reconcile"] == {"cash_tolerance": "0.05"} and info["health"] == {"endpoint": "127.0.0.1:8765"}
    assert info["monitor"]["order_stuck_minutes"] == 30 and info["service"] == {"fava_port": 5000}
    for bad, key in (('[reconcile]\ncash_tolerance = "-1"\n', "cash_tolerance"),
                     ('[monitor]\nstale_price_days = 0\n', "monitor.stale_price_days"),
                     ('[health]\nhost = "0.0.0.0"\n', "health.host"),
                     ('[service]\nfava_port = 0\n', "service.fava_port")):
        other = tmp_path / key
        run(other, "init")
        with open(other / "paper" / "config.toml", "a") as f:
            f.write("\n" + bad)
        result = run(other, "config", "check")
        assert result.exit_code == 1, (key, result.output)
        line, = result.output.strip().splitlines()
        assert "config.toml" in line and key in line, line
