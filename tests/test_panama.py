"""The back-adjusted (Panama) series, by hand and from a demo's contract closes and roll dates."""

import datetime as dt
import json
from decimal import Decimal as D

import pytest
from click.testing import CliRunner

from tradeledger.cli import main
from tradeledger.engine.futures.panama import panama


def test_panama_by_hand():
    d = [dt.date(2026, 12, day) for day in (14, 15, 16, 17)]
    closes = {("MESZ26", d[0]): D(6000), ("MESZ26", d[1]): D(6010), ("MESZ26", d[2]): D(6020),
              ("MESH27", d[1]): D(6060), ("MESH27", d[2]): D(6075), ("MESH27", d[3]): D(6080)}
    # rolled on the 15th: the gap there is 6060 - 6010 = 50, added to every earlier price
    rows = panama(closes, [(d[0], "MESZ26"), (d[1], "MESH27")])
    assert [(r.date, r.contract, r.raw, r.adjustment, r.price) for r in rows] == [
        (d[0], "MESZ26", D(6000), D(50), D(6050)),
        (d[1], "MESH27", D(6060), D(0), D(6060)),
        (d[2], "MESH27", D(6075), D(0), D(6075)),
        (d[3], "MESH27", D(6080), D(0), D(6080)),
    ]
    # the adjusted series moves exactly as the contracts did, day by day, with no jump at the roll
    assert rows[1].price - rows[0].price == D(6060) - D(6050)
    with pytest.raises(ValueError, match="need both closes"):
        panama(closes, [(d[0], "MESZ26"), (d[3], "MESH27")])


def test_the_demo_series_is_stored_and_explained(tmp_path):
    home = tmp_path / "home"
    assert CliRunner().invoke(main, ["--home", str(home), "demo", "--days", "14"]).exit_code == 0
    out = CliRunner().invoke(main, ["--home", str(home), "data", "adjusted", "MES", "--last", "200", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    contracts = [r["contract"] for r in rows]
    assert "MESZ26" in contracts and "MESH27" in contracts
    for r in rows:
        assert D(str(r["adjusted"])) == D(str(r["raw"])) + D(str(r["adjustment"]))
    assert D(str(rows[-1]["adjustment"])) == 0  # the latest part is the current contract's own closes
