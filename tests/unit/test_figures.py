"""`make figures`: intervals resample students, not rows; every figure names its command; a step run
alone keeps the other steps' figures. Nothing here simulates or trains (the command itself is slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import figures


def test_a_bootstrap_sample_takes_every_row_of_each_student_it_draws() -> None:
    keys = np.array(["a", "b", "b", "c", "c", "c"])
    for idx in figures.student_bootstrap(keys, reps=50, seed=1):
        drawn = keys[idx]
        students, rows = np.unique(drawn, return_counts=True)
        size = {"a": 1, "b": 2, "c": 3}
        assert all(r % size[s] == 0 for s, r in zip(students, rows))  # whole students, possibly repeated
        assert sum(r // size[s] for s, r in zip(students, rows)) == 3  # as many draws as students


@pytest.mark.parametrize("seed", [11, 5, 23])
def test_rows_repeated_per_student_widen_the_interval_as_a_student_bootstrap_must(seed: int) -> None:
    # Each student appears in two rounds with the same outcome: a row bootstrap would treat the two
    # rows as independent and give an interval about 1/sqrt(2) as wide as the honest one.
    rng = np.random.default_rng(seed)
    n = 3000
    y_student = (rng.uniform(size=n) < 0.2).astype(float)
    y = np.repeat(y_student, 2)
    keys = np.repeat(np.arange(n), 2)

    def width(samples: list[np.ndarray]) -> float:
        lo, hi = figures.interval([float(y[i].mean()) for i in samples])
        return hi - lo

    by_student = width(figures.student_bootstrap(keys, reps=400, seed=seed))
    by_row = width(figures.student_bootstrap(np.arange(2 * n), reps=400, seed=seed))
    assert by_student / by_row == pytest.approx(np.sqrt(2), rel=0.2)
    # and the student interval has the binomial width of n students: 2 * 1.96 * sqrt(p(1-p)/n)
    assert by_student == pytest.approx(2 * 1.96 * np.sqrt(0.2 * 0.8 / n), rel=0.2)


def test_paired_differences_get_their_own_interval_over_the_same_resamples() -> None:
    rng = np.random.default_rng(3)
    n = 4000
    y = (rng.uniform(size=n) < 0.1).astype(float)
    good = y + rng.normal(0, 0.6, n)
    worse = y + rng.normal(0, 1.2, n)
    samples = figures.student_bootstrap(np.arange(n), reps=100, seed=3)

    def metric(yy: np.ndarray, s: np.ndarray, _school: np.ndarray) -> dict[str, float]:
        from sklearn.metrics import roc_auc_score

        return {"roc_auc": float(roc_auc_score(yy, s))}

    iv = figures.bootstrap_intervals(samples, {"good": good, "worse": worse}, y, np.zeros(n), metric,
                                     {"good_minus_worse": ("good", "worse")}, ("roc_auc",))
    assert set(iv) == {"good.roc_auc", "worse.roc_auc", "good_minus_worse.roc_auc"}
    lo, hi = iv["good_minus_worse.roc_auc"]
    assert 0 < lo < hi  # the better score is ahead by a margin whose interval excludes 0


def test_every_figure_names_its_command_and_a_step_run_alone_keeps_the_others(tmp_path: Path) -> None:
    a = figures.resolve(["--quick", "--out-dir", str(tmp_path)])
    first = figures.Collected()
    first.add("ceiling.seed1.early.roc_auc", 0.91, "ews simulate --seed 1", (0.90, 0.92))
    figures.write_outputs(a, first, ["--only", "ceiling"], tmp_path)
    second = figures.Collected()
    second.add("world.S.default.model.roc_auc", 0.80, "ews train --json", (0.75, 0.85))
    figures.write_outputs(a, second, ["--only", "worlds"], tmp_path)
    doc = json.loads((tmp_path / "figures.json").read_text(encoding="utf-8"))
    assert set(doc["figures"]) == {"ceiling.seed1.early.roc_auc", "world.S.default.model.roc_auc"}
    table = (tmp_path / "FIGURES.md").read_text(encoding="utf-8")
    for fid, f in doc["figures"].items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {fid} |"))
        assert f"`{f['command']}`" in row and f"{f['low']:.4g} – {f['high']:.4g}" in row

    # each group names the run that produced it, not the last run's command
    assert doc["runs"]["ceiling"]["command"].endswith("--only ceiling")
    assert doc["runs"]["world.S"]["command"].endswith("--only worlds")
    for group, step in (("ceiling", "--only ceiling"), ("world.S", "--only worlds")):
        row = next(line for line in table.splitlines() if line.startswith(f"| {group} |"))
        assert f"{step}`" in row


def test_figures_are_grouped_by_world_or_step() -> None:
    assert figures.figure_group("world.M.default.model.roc_auc") == "world.M"
    assert figures.figure_group("notfound.seed5.precision") == "notfound.seed5"
    assert figures.figure_group("additivity.seed2.logit_r2.risk_score") == "additivity"
    assert figures.figure_group("ceiling.seed1.early.roc_auc") == "ceiling"
    assert figures.figure_group("labels.n100000.seed2.reported.model.roc_auc") == "labels.n100000.seed2"


def test_the_training_set_figures_come_from_the_manifest_ews_trainset_prints() -> None:
    doc = {"trainset": {"rows": 1200, "label_rate": 0.0125, "unlabelled_rows": 7,
                        "rounds": [{"round_id": "2563-T1-early", "rows": 600}, {"round_id": "2563-T1-mid", "rows": 600},
                                   {"round_id": "2563-T2-early", "rows": 0}]},
           "label_agreement": 0.999}
    out = figures.Collected()
    figures.trainset_figures(out, "world.S", doc, "ews trainset --json")
    got = {f.id: f.value for f in out.figures}
    assert got == {"world.S.trainset.rows": 1200, "world.S.trainset.label_rate": 0.0125,
                   "world.S.trainset.unlabelled_rows": 7, "world.S.trainset.rounds_with_rows": 2,
                   "world.S.trainset.label_agreement": 0.999}


def test_the_command_plans_every_step_without_running_anything(capsys: pytest.CaptureFixture[str]) -> None:
    figures.main(["--plan"])
    out = capsys.readouterr().out
    assert sum(line.startswith("ews simulate --out") for line in out.splitlines()) == len(figures.CEILING_SEEDS)
    assert "world S" in out and "world M" in out
    assert "ews demo --no-serve" in out
    assert sum(line.startswith("not-found list:") for line in out.splitlines()) == len(figures.NOTFOUND_WORLDS)
    assert "reasons: flagged pupils" in out
    assert sum(line.startswith("additivity:") for line in out.splitlines()) == len(figures.ADDITIVITY_WORLDS)
    assert sum(line.startswith("labels:") for line in out.splitlines()) == len(figures.LABEL_SIZES) * len(figures.LABEL_SEEDS)


def test_the_figures_ews_train_reports_keep_their_own_intervals_and_the_calibration_per_term_and_group() -> None:
    m = {"roc_auc": 0.88, "ci95_low.roc_auc": 0.87, "ci95_high.roc_auc": 0.89, "pr_auc": 0.26,
         "observable.ceiling_pr_auc": 0.30, "ci95_low.observable.ceiling_pr_auc": 0.27, "ci95_high.observable.ceiling_pr_auc": 0.33,
         "versus.grade_term_lookup.within_grade_roc_auc": 0.25,
         "calibration.oe": 1.02, "calibration.oe_lo": 0.95, "calibration.oe_hi": 1.09,
         "calibration.term.T1.oe": 0.9, "calibration.term.T1.oe_lo": 0.8, "calibration.term.T1.oe_hi": 1.0,
         "calibration.disability.disability.oe": 1.29, "calibration.disability.disability.oe_lo": 0.83,
         "calibration.disability.disability.oe_hi": 1.97, "calibration.disability.disability.students": 339.0,
         "calibration.disability.disability.observed": 26.0, "groups.disability.disability.positive_students": 13.0}
    out = figures.Collected()
    figures.reported_figures(out, "world.M.default", {"metrics": m}, "ews train --json")
    got = {f.id: (f.value, f.low, f.high) for f in out.figures}
    assert got["world.M.default.reported.model.roc_auc"] == (0.88, 0.87, 0.89)
    assert got["world.M.default.reported.observable_ceiling.pr_auc"] == (0.30, 0.27, 0.33)
    assert got["world.M.default.reported.model_minus_lookup.within_grade_roc_auc"] == (0.25, None, None)  # no interval reported
    assert got["world.M.default.calibration.oe"] == (1.02, 0.95, 1.09)
    assert got["world.M.default.calibration.term.T1.oe"] == (0.9, 0.8, 1.0)
    assert got["world.M.default.calibration.disability.disability.oe"] == (1.29, 0.83, 1.97)
    assert got["world.M.default.calibration.disability.disability.students"] == (339.0, None, None)
    assert got["world.M.default.calibration.disability.disability.dropout_students"] == (13.0, None, None)
    assert "world.M.default.calibration.students" not in got  # counts only beside a stratum
    assert got["world.M.default.reported.pr_auc_share_of_observable_ceiling"][0] == pytest.approx(0.26 / 0.30)


def test_the_additivity_figures_keep_the_benchmarks_intervals_and_name_each_difference() -> None:
    doc = {"test_rows": 40_000, "test_dropouts": 1100,
           "scores": {"p_observable": {"roc_auc": {"point": 0.91791, "ci95": [0.90, 0.93]},
                                       "pr_auc": {"point": 0.357, "ci95": [0.32, 0.39]}, "pr_auc_share_of_ceiling": 1.0},
                      "risk_score": {"roc_auc": {"point": 0.9086, "ci95": [0.89, 0.92]},
                                     "pr_auc": {"point": 0.3215, "ci95": [0.29, 0.35]}, "pr_auc_share_of_ceiling": 0.9006}},
           "differences": {"p_observable - risk_score": {"roc_auc": {"point": 0.0093, "ci95": [0.005, 0.013]},
                                                         "pr_auc": {"point": 0.0355, "ci95": [0.02, 0.05]}}},
           "logit_r2": {"risk_score": 0.8791}}
    out = figures.Collected()
    figures.additivity_figures(out, "additivity.seed2", doc, "cmd")
    got = {f.id: (f.value, f.low, f.high) for f in out.figures}
    assert got["additivity.seed2.p_observable.roc_auc"] == (0.9179, 0.90, 0.93)
    assert got["additivity.seed2.risk_score.pr_auc_share_of_ceiling"] == (0.901, None, None)
    assert got["additivity.seed2.p_observable_minus_risk_score.pr_auc"] == (0.0355, 0.02, 0.05)
    assert got["additivity.seed2.logit_r2.risk_score"] == (0.879, None, None)
    assert got["additivity.seed2.test_dropouts"] == (1100, None, None)
    assert all(f.command == "cmd" for f in out.figures)


def test_a_fifth_of_the_students_keeps_the_whole_test_fold_and_every_round_of_each_student_it_keeps(tmp_path: Path) -> None:
    import hashlib

    import pandas as pd

    from features.pointintime.trainset import LATEST, TrainsetManifest, TrainsetRound

    rounds = ["2563-T1-early", "2563-T2-early", "2564-T1-early"]
    rng = np.random.default_rng(5)
    frame = pd.DataFrame([(r, f"S{i:05d}", int(rng.random() < 0.1)) for r in rounds for i in range(2000)],
                         columns=["round_id", "student_key", "label"])
    folder = tmp_path / "ts-x"
    folder.mkdir()
    frame.to_parquet(folder / "data.parquet")
    (tmp_path / LATEST).write_text("ts-x")
    manifest = TrainsetManifest(
        name="ts-x", config={}, cutoff="2022-07-15", rows=len(frame), unlabelled_rows=0, label_rate=float(frame.label.mean()),
        rounds=[TrainsetRound(round_id=r, round_type="early", as_of="2020-07-01", rows=2000, unlabelled=0, label_rate=0.1)
                for r in rounds],
        delivery_fingerprint="f", catalogue_version="c", feature_groups={}, categorical=[], file=str(folder / "data.parquet"),
        sha256="s")
    (folder / "manifest.json").write_text(manifest.model_dump_json(), encoding="utf-8")

    name = figures.fifth_of_the_students(tmp_path, ["2564-T1-early"])
    fifth = pd.read_parquet(tmp_path / name / "data.parquet")
    written = TrainsetManifest.model_validate_json((tmp_path / name / "manifest.json").read_text(encoding="utf-8"))
    assert (tmp_path / LATEST).read_text() == "ts-x", "the parent stays the newest set"
    assert (fifth.round_id == "2564-T1-early").sum() == 2000, "every test-fold row is kept"
    kept = fifth[fifth.round_id != "2564-T1-early"].groupby("round_id").student_key.apply(frozenset)
    assert kept["2563-T1-early"] == kept["2563-T2-early"], "a kept student is kept in every round"
    assert 0.15 < len(kept["2563-T1-early"]) / 2000 < 0.25
    assert written.rows == len(fifth) and [r.rows for r in written.rounds] == fifth.round_id.value_counts()[rounds].tolist()
    assert written.sha256 == hashlib.sha256((tmp_path / name / "data.parquet").read_bytes()).hexdigest()
    assert written.label_rate == pytest.approx(fifth.label.mean(), abs=1e-5)
