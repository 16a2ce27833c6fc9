"""The monitoring report is one typed artefact: saved and loaded at the one path the home gives it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from features.calendar import parse_round
from features.home import EwsHome
from monitoring.config import MonitorConfig
from monitoring.outcomes import Outcomes
from monitoring.report import MonitoringReport, Verdict, read_report, write_report

ROUND = parse_round("2568-T1-mid")


def _report() -> MonitoringReport:
    return MonitoringReport(
        round=ROUND, as_of=dt.date(2025, 8, 20), snapshot_hash="0123456789abcdef", model_version="4", trainset="ts",
        reference_rounds=["2567-T1-mid"], reference_rows=10, current_rows=12, scored_rows=11, config=MonitorConfig(),
        quality=[], drift=[], outcomes=Outcomes(matured=False, note="not yet"),
        verdict=Verdict(alert=False, retrain_recommended=False, summary="No threshold breached: keep the model.",
                        reasons=[], breaches=[]),
        generated_at="2025-08-21T00:00:00+00:00",
    )


def test_a_written_report_reads_back_equal_from_the_homes_path(tmp_path: Path) -> None:
    home = EwsHome(root=tmp_path)
    paths = write_report(home, _report())
    assert paths == {"json": home.monitoring_report(ROUND, "json"), "html": home.monitoring_report(ROUND, "html")}
    assert paths["json"] == tmp_path / "monitoring" / "2568-T1-mid" / "report.json" and paths["html"].is_file()
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["round_id"] == "2568-T1-mid"  # plain readers of the JSON still find the round id
    assert read_report(home, ROUND) == _report()


def test_a_schema_1_report_naming_only_its_round_id_still_loads(tmp_path: Path) -> None:
    home = EwsHome(root=tmp_path)
    data = json.loads(_report().model_dump_json())
    del data["round"]
    data["schema_version"] = 1
    path = home.monitoring_report(ROUND, "json")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    got = read_report(home, ROUND)
    assert got.round == ROUND and got.schema_version == 1 and got.round_id == "2568-T1-mid"
