"""`make figures`: regenerate every figure the documents quote, with intervals, in one command.

    python -m benchmarks.figures [--only ceiling|worlds|demo ...] [--quick] [--reps 200] [--out-dir figures]

README.md, training/DECISIONS.md and simulator/PROCESS.md quote figures measured on simulated worlds;
this is the one command that produces them, and each quote names it. It runs the project's own CLI
stages as child processes, exactly as an analyst would (`ews simulate`, `ews ingest`, `ews link`,
`ews trainset`, `ews train --truth --json`, `ews demo`), so when a stage's metrics change the figures
follow; point estimates are the ones `ews train --json` reports. Statistics get 95% intervals from a
bootstrap by student (every row of a resampled student comes along: the early and mid rows of a term
are one pupil's, not independent draws), computed on the trained version's test fold after the run.

Steps:
  ceiling  simulator/PROCESS.md §3: the ceiling against realised dropouts on 10,000 x 3 worlds, seeds
           1, 2, 3 (`ews simulate`, then truth/rounds.parquet): rows, dropouts, mean p, realised rate,
           z, exact ROC-AUC with its interval; the observable ceiling (`p_observable`, PROCESS.md §3b)
           on the same rows and the full ceiling's paired lead over it.
  worlds   training/DECISIONS.md: world S (3,000 x 3, seed 1), world M (20,000 x 4, seed 2) and world D
           (3,000 x 4, seed 7: the small demo's world), each
           simulated, ingested, linked, made a training set and trained with the default config and
           `--variants`; on world M also the alternatives DECISIONS.md weighs (isotonic calibration,
           a two-round calibration fold, two other tree sizes), each `ews train --config FILE`.
  reported training/DECISIONS.md's tables from the trainings a worlds step logged (what `ews train --json`
           reports with its own intervals: observable ceiling, lookup, school-only model, within-grade
           metrics, O/E per term); part of the worlds step, alone with --only reported.
  notfound README.md: the not-found list's precision and recall against the simulator's truth on the
           test worlds (seeds 11, 5, 23) and world M (`ews notfound build`, `ews notfound show --truth`).
  demo     README.md: wall time and peak memory of `ews demo --no-serve` (embedded defaults).
  additivity training/DECISIONS.md ("Where the model's shortfall comes from"): the observable ceiling,
           its flexible, tree and additive projections, the model and logistic regression on the test
           fold of 20,000 x 4 worlds, seeds 2, 23, 31 (`python -m benchmarks.additivity`), with the
           paired differences and the R^2 of the ceiling's logit.
  labels   training/DECISIONS.md ("The label count, measured"): the default model against the observable
           ceiling, logistic regression and the lookup on worlds of 20,000 x 4 and 100,000 x 4 pupils,
           seeds 2, 23, 31 (`ews train --truth --json`, its own intervals): does the gap close, and does
           LightGBM pull ahead of logistic regression, with five times the labels? Each 100,000-pupil
           world is also trained on a fifth of its students (same world and test fold, a 20,000-pupil
           world's label count). Slow: 13-21 min a 100,000-pupil world on 2 cores, about an hour in all
           (measured in session 21);
           --labels-size / --labels-seed pick some.
  reasons  serving/reasons.py: the share of flagged pupils of the small demo's published rounds
           (`ews demo --students 3000 --years 4 --no-serve`) with no material reason, and with an empty
           reasons cell (--reasons-home HOME reads another home's rounds).

Writes OUT/figures.json (every figure, machine-readable: id, value, interval, command) and
OUT/FIGURES.md (the same as a table). The worlds are built under --work-dir (large; default
bench-out/figures-work, git-ignored); a rerun reuses a world already prepared there.
`--quick` shrinks every world to prove the chain; its figures measure little.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

STEPS = ("ceiling", "worlds", "reported", "notfound", "demo", "reasons", "additivity", "labels")
CEILING_SEEDS = (1, 2, 3)


@dataclass(frozen=True)
class World:
    """A simulated world whose trained figures DECISIONS.md quotes."""

    name: str
    students: int
    years: int
    seed: int
    # alternative training configs measured on this world: name -> partial TrainConfig (JSON)
    alternatives: Mapping[str, dict[str, Any]] = field(default_factory=dict)


# The alternatives DECISIONS.md weighs against the default (training/config.py holds the defaults).
ALTERNATIVES: dict[str, dict[str, Any]] = {
    "isotonic": {"calibration": {"method": "isotonic"}},
    "calibration_rounds_2": {"split": {"calibration_rounds": 2}},
    "leaves_31": {"model": {"num_leaves": 31, "min_child_samples": 100, "learning_rate": 0.05, "early_stopping_rounds": 50}},
    "leaves_15": {"model": {"num_leaves": 15, "min_child_samples": 200, "learning_rate": 0.03, "early_stopping_rounds": 100}},
}
# D: the small demo's world, which DECISIONS.md's second table quotes: `ews demo` simulates 3,000 x 4,
# seed 7 (four years at least: a training year, a calibration year, a test term and a round after it).
WORLDS = (World("S", 3000, 3, 1), World("M", 20000, 4, 2, ALTERNATIVES), World("D", 3000, 4, 7))
QUICK_WORLDS = (World("S", 1500, 3, 1, {"isotonic": ALTERNATIVES["isotonic"]}),)
# Metrics of `training.metrics.score_metrics` given an interval (the rest are reported as points).
INTERVAL_METRICS = ("roc_auc", "pr_auc", "ece", "brier", "mean_score", "precision_at_10pct", "recall_at_10pct",
                    "school_precision_at_10pct")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", choices=STEPS, help="Run only these steps (repeat); default: all.")
    ap.add_argument("--world", action="append", choices=[w.name for w in WORLDS],
                    help="Only these worlds in the worlds step (repeat); default: all.")
    ap.add_argument("--quick", action="store_true", help="Small worlds and few replicates: proves the chain.")
    ap.add_argument("--reps", type=int, default=None, help="Bootstrap replicates (default 200; 50 with --quick).")
    ap.add_argument("--ceiling-students", type=int, default=None, help="Students per ceiling world (default 10000).")
    ap.add_argument("--out-dir", type=Path, default=Path("figures"), help="Where figures.json and FIGURES.md go.")
    ap.add_argument("--work-dir", type=Path, default=Path("bench-out/figures-work"), help="Simulated worlds and homes.")
    ap.add_argument("--reuse", action="store_true",
                    help="Reuse worlds already simulated, ingested, linked and made a training set under --work-dir, "
                         "and trainings already logged there (only when that code has not changed).")
    ap.add_argument("--notfound-world", action="append", choices=[w[0] for w in NOTFOUND_WORLDS],
                    help="Only these worlds in the notfound step (repeat); default: all.")
    ap.add_argument("--reasons-home", type=Path, default=None,
                    help="Home whose published rounds the reasons step reads (default: the demo step's, under --work-dir).")
    ap.add_argument("--labels-size", action="append", type=int, choices=LABEL_SIZES,
                    help="Only these world sizes in the labels step (repeat); default: all.")
    ap.add_argument("--labels-seed", action="append", type=int, choices=LABEL_SEEDS,
                    help="Only these seeds in the labels step (repeat); default: all.")
    ap.add_argument("--plan", action="store_true", help="Print the commands that would run, and exit.")
    return ap


def resolve(argv: list[str] | None = None) -> argparse.Namespace:
    a = parser().parse_args(argv)
    a.only = list(a.only or STEPS)
    # MLflow's artifact root is a file URI of the home: the homes under it must be absolute paths.
    a.work_dir = a.work_dir.resolve()
    a.reps = a.reps or (50 if a.quick else 200)
    a.ceiling_students = a.ceiling_students or (2000 if a.quick else 10_000)
    a.worlds = [w for w in (QUICK_WORLDS if a.quick else WORLDS) if not a.world or w.name in a.world]
    return a


# ------------------------------------------------------------------------------------------------
# running the CLI


def ews_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "ews", *args]


def command_text(argv: list[str]) -> str:
    """The command as a reader types it (`ews ...` for the venv's entry point)."""
    return shlex.join(["ews", *argv[3:]] if argv[1:3] == ["-m", "ews"] else argv)


def run_cli(argv: list[str], log: Path, ok_codes: tuple[int, ...] = (0,)) -> str:
    """Run one stage; its stdout is returned, stdout and stderr kept in `log`; stop with the log's tail
    on failure (a figure from a failed stage would be a wrong figure)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"== {command_text(argv)}", flush=True)
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    log.write_text(f"$ {command_text(argv)}\n{proc.stdout}\n--- stderr\n{proc.stderr}", encoding="utf-8")
    if proc.returncode not in ok_codes:
        raise RuntimeError(f"`{command_text(argv)}` exited {proc.returncode}; see {log}:\n{proc.stderr[-2000:]}")
    return proc.stdout


def json_of(stdout: str) -> Any:
    """The JSON document a `--json` command printed (anything before it is a progress line)."""
    return json.loads(stdout[stdout.index("{"):])


# ------------------------------------------------------------------------------------------------
# intervals


def student_bootstrap(keys: np.ndarray, reps: int, seed: int) -> list[np.ndarray]:
    """Row indices of `reps` bootstrap samples that resample students, each with all of its rows."""
    codes = np.unique(keys, return_inverse=True)[1]
    order = np.argsort(codes, kind="stable")  # rows grouped by student
    counts = np.bincount(codes)
    starts = np.cumsum(counts) - counts
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(reps):
        picked = rng.integers(0, len(counts), len(counts))
        lens = counts[picked]
        within = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        out.append(order[np.repeat(starts[picked], lens) + within])
    return out


def interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) < 10:
        return None
    lo, hi = np.quantile(v, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def bootstrap_intervals(samples: list[np.ndarray], scores: Mapping[str, np.ndarray], y: np.ndarray,
                        school: np.ndarray, metric_fn: Callable[..., Mapping[str, float]],
                        differences: Mapping[str, tuple[str, str]],
                        names: tuple[str, ...] = INTERVAL_METRICS) -> dict[str, tuple[float, float]]:
    """95% intervals of each score's metrics (`<score>.<metric>`) and of paired differences
    (`<name>.<metric>` = first score's metric minus the second's), over the same resamples."""
    draws: dict[str, list[float]] = {}
    for idx in samples:
        per = {name: metric_fn(y[idx], s[idx], school[idx]) for name, s in scores.items()}
        for name, m in per.items():
            for k in names:
                if k in m:
                    draws.setdefault(f"{name}.{k}", []).append(m[k])
        for dname, (a, b) in differences.items():
            for k in names:
                if k in per[a] and k in per[b]:
                    draws.setdefault(f"{dname}.{k}", []).append(per[a][k] - per[b][k])
    return {k: iv for k, v in draws.items() if (iv := interval(v)) is not None}


# ------------------------------------------------------------------------------------------------
# the figures


@dataclass
class Figure:
    id: str
    value: float | int | str | None
    command: str
    low: float | None = None
    high: float | None = None
    note: str = ""


@dataclass
class Collected:
    figures: list[Figure] = field(default_factory=list)
    sections: dict[str, Any] = field(default_factory=dict)

    def add(self, fid: str, value: Any, command: str, iv: tuple[float, float] | None = None, note: str = "") -> None:
        self.figures.append(Figure(fid, value, command, *(iv or (None, None)), note=note))


def ceiling_step(a: argparse.Namespace, work: Path, out: Collected) -> None:
    """PROCESS.md §3: the ceiling against the realised dropouts, per seed and round type."""
    import pyarrow.parquet as pq
    from sklearn.metrics import roc_auc_score

    rows = []
    for seed in CEILING_SEEDS:
        sim = work / f"ceiling-{seed}"
        argv = ews_argv("simulate", "--out", str(sim), "--students", str(a.ceiling_students), "--years", "3",
                        "--seed", str(seed))
        if not (sim / "truth" / "rounds.parquet").exists():
            run_cli(argv, work / f"ceiling-{seed}.log")
        cmd = f"{command_text(argv)}; python -m benchmarks.figures --only ceiling"
        r = pq.read_table(sim / "truth" / "rounds.parquet",
                          columns=["person_id", "round_type", "p_dropout", "p_observable", "dropout"]).to_pandas()
        for kind in ("early", "mid"):
            k = r[r.round_type == kind]
            p, y = k.p_dropout.to_numpy(float), k.dropout.to_numpy(float)
            z = float((y.sum() - p.sum()) / np.sqrt((p * (1 - p)).sum()))
            samples = student_bootstrap(k.person_id.to_numpy(), a.reps, seed)
            auc = roc_auc_score(y, p)
            auc_iv = interval([roc_auc_score(y[i], p[i]) for i in samples])
            ratio_iv = interval([p[i].sum() / y[i].sum() for i in samples])
            row = {"seed": seed, "round_type": kind, "rows": len(k), "dropouts": int(y.sum()), "mean_p": float(p.mean()),
                   "realised": float(y.mean()), "z": z, "roc_auc": float(auc), "roc_auc_interval": auc_iv,
                   "mean_p_over_realised": float(p.sum() / y.sum()), "mean_p_over_realised_interval": ratio_iv}
            rows.append(row)
            fid = f"ceiling.seed{seed}.{kind}"
            out.add(f"{fid}.roc_auc", round(auc, 4), cmd, auc_iv)
            out.add(f"{fid}.rows", len(k), cmd)
            out.add(f"{fid}.dropouts", int(y.sum()), cmd)
            out.add(f"{fid}.mean_p", round(float(p.mean()), 5), cmd)
            out.add(f"{fid}.realised", round(float(y.mean()), 5), cmd)
            out.add(f"{fid}.z", round(z, 2), cmd, note="(Σ dropout − Σ p) / √Σ p(1−p): N(0, 1) under a correct ceiling")
            out.add(f"{fid}.mean_p_over_realised", round(row["mean_p_over_realised"], 3), cmd, ratio_iv)
            # §3b: the observable ceiling on the same rows, and the full one's lead over it (paired)
            q = k.p_observable.to_numpy(float)
            obs_auc = roc_auc_score(y, q)
            obs_iv = interval([roc_auc_score(y[i], q[i]) for i in samples])
            lead_iv = interval([roc_auc_score(y[i], p[i]) - roc_auc_score(y[i], q[i]) for i in samples])
            zq = float((y.sum() - q.sum()) / np.sqrt((q * (1 - q)).sum()))
            out.add(f"{fid}.observable.roc_auc", round(obs_auc, 4), cmd, obs_iv)
            out.add(f"{fid}.full_minus_observable.roc_auc", round(auc - obs_auc, 4), cmd, lead_iv,
                    note="paired difference of ROC-AUC, full ceiling minus observable")
            out.add(f"{fid}.observable.mean_p_over_realised", round(float(q.sum() / y.sum()), 3), cmd,
                    interval([q[i].sum() / y[i].sum() for i in samples]))
            out.add(f"{fid}.observable.z", round(zq, 2), cmd, note="(Σ dropout − Σ p_observable) / √Σ p(1−p)")
    out.sections["ceiling"] = {"students": a.ceiling_students, "years": 3, "rows": rows}


def _write_config(path: Path, partial: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(partial, indent=2) + "\n", encoding="utf-8")
    return path


def world_step(a: argparse.Namespace, world: World, work: Path, out: Collected) -> None:
    """One world through the CLI, trained with the default config (and --variants) and each alternative."""
    w = work / f"world-{world.name}"
    sim, home = w / "sim", w / "home"
    h = ["--home", str(home)]
    trainset_doc, prep = _prepare_world(a, world, w)
    section: dict[str, Any] = {"world": world.__dict__ | {"alternatives": list(world.alternatives)},
                               "trainset": trainset_doc, "prepare": prep, "runs": {}}
    wid = f"world.{world.name}"
    trainset_figures(out, wid, trainset_doc, prep)

    configs: dict[str, dict[str, Any] | None] = {"default": None, **world.alternatives}
    for name, partial in configs.items():
        argv = ews_argv("train", "--truth", str(sim / "truth"), "--json", *h)
        if partial is None:
            argv.insert(-2, "--variants")
        else:
            argv[-2:-2] = ["--config", str(_write_config(w / "configs" / f"{name}.json", partial))]
        log = w / f"train-{name}.log"
        summary = _earlier_summary(log) if a.reuse else None
        summary = summary or json_of(run_cli(argv, log))
        cmd = f"{prep} && {command_text(argv)}"
        ivs = _version_intervals(a, home, sim, summary, partial)
        section["runs"][name] = {"command": command_text(argv), "config": partial, "summary": summary, "intervals": ivs}
        _train_figures(out, f"{wid}.{name}", summary, ivs, cmd)
        reported_figures(out, f"{wid}.{name}", summary, cmd)
    out.sections[f"world_{world.name}"] = section


def _prepare_world(a: argparse.Namespace, world: World, w: Path) -> tuple[dict[str, Any], str]:
    """World `world` simulated, ingested, linked and made a training set under folder `w` (rebuilt
    unless --reuse): the trainset stage's JSON and the chain as a reader types it."""
    chain = _prepare_chain(world, w)
    done = w / "prepared.json"
    if not a.reuse and w.exists():  # figures of changed code need a world built by that code
        shutil.rmtree(w)
    if not done.exists():  # with --reuse, a rerun after a failed training reuses the prepared home
        # `ews ingest` exits 1 when it refused a delivery: the simulator's malformed files are meant to be
        # refused (and are counted in its JSON), so that is a success here.
        outputs = [run_cli(argv, w / f"{i}-{argv[3]}.log", (0, 1) if argv[3] == "ingest" else (0,))
                   for i, argv in enumerate(chain)]
        done.write_text(json.dumps(json_of(outputs[-1]), default=str), encoding="utf-8")
    return json.loads(done.read_text(encoding="utf-8")), " && ".join(command_text(x) for x in chain)


def _prepare_chain(world: World, w: Path) -> list[list[str]]:
    """The stages that make world `world` a training set under folder `w` (sim/ and home/)."""
    sim, h = w / "sim", ["--home", str(w / "home")]
    return [ews_argv("simulate", "--out", str(sim), "--students", str(world.students), "--years", str(world.years),
                     "--seed", str(world.seed)),
            ews_argv("ingest", str(sim / "deliveries"), "--json", *h), ews_argv("link", "--json", *h),
            ews_argv("trainset", "--truth", str(sim / "truth"), "--json", *h)]


def trainset_figures(out: Collected, wid: str, doc: Mapping[str, Any], cmd: str) -> None:
    """The training set's size and label rate (`ews trainset --json`: the manifest under "trainset")."""
    m = doc.get("trainset", doc)
    for key in ("rows", "label_rate", "unlabelled_rows"):
        if key in m:
            out.add(f"{wid}.trainset.{key}", m[key], cmd)
    rounds = [r for r in m.get("rounds", []) if isinstance(r, dict)]
    if rounds:
        out.add(f"{wid}.trainset.rounds_with_rows", sum(1 for r in rounds if r.get("rows")), cmd)
    if doc.get("label_agreement") is not None:
        out.add(f"{wid}.trainset.label_agreement", doc["label_agreement"], cmd, note="labels against the simulator's truth")


def _earlier_summary(log: Path) -> dict[str, Any] | None:
    """With --reuse: the `ews train --json` summary an earlier run of the same command logged, if any."""
    try:
        stdout = log.read_text(encoding="utf-8").split("\n--- stderr", 1)[0].split("\n", 1)[1]
        return json_of(stdout)
    except (OSError, IndexError, ValueError):
        return None


def _train_figures(out: Collected, fid: str, s: Mapping[str, Any], ivs: Mapping[str, tuple[float, float]], cmd: str) -> None:
    m = s.get("metrics", {})
    out.add(f"{fid}.trees", s.get("best_iteration"), cmd)
    out.add(f"{fid}.test_rounds", ", ".join(s.get("split", {}).get("test", [])), cmd)
    out.add(f"{fid}.calibration_rounds", ", ".join(s.get("split", {}).get("calibration", [])), cmd)
    out.add(f"{fid}.test_rows", m.get("rows"), cmd)
    out.add(f"{fid}.test_dropouts", m.get("positives"), cmd)
    for k in INTERVAL_METRICS:
        if m.get(k) is not None:
            out.add(f"{fid}.model.{k}", m[k], cmd, ivs.get(f"model.{k}"))
        if m.get(f"ceiling_{k}") is not None:
            out.add(f"{fid}.ceiling.{k}", m[f"ceiling_{k}"], cmd, ivs.get(f"ceiling.{k}"))
        if m.get(f"gap_{k}") is not None:
            # the gap in the metric's bad direction (training.metrics.ceiling_and_gap): ceiling - model
            # when greater is better, model - ceiling otherwise (the interval flips with it)
            from training.metrics import greater_is_better

            iv = ivs.get(f"ceiling_minus_model.{k}")
            if iv is not None and not greater_is_better(k):
                iv = (-iv[1], -iv[0])
            out.add(f"{fid}.gap.{k}", m[f"gap_{k}"], cmd, iv)
        if m.get(f"baselines.logistic.{k}") is not None:
            out.add(f"{fid}.logistic.{k}", m[f"baselines.logistic.{k}"], cmd, ivs.get(f"logistic.{k}"))
        if ivs.get(f"model_minus_logistic.{k}") is not None:
            out.add(f"{fid}.model_minus_logistic.{k}", None, cmd, ivs[f"model_minus_logistic.{k}"],
                    note="paired difference: interval only")
    if m.get("mean_score") and m.get("label_rate"):
        out.add(f"{fid}.model.observed_to_expected", m["label_rate"] / m["mean_score"], cmd, ivs.get("model.observed_to_expected"))
    th = s.get("thresholds") or {}
    for g in ("problem", "at_risk"):
        if g in th:
            out.add(f"{fid}.threshold.{g}", th[g], cmd)
            obs = (th.get("observed") or {}).get(g) or {}
            if "dropout_rate" in obs:
                out.add(f"{fid}.threshold.{g}.dropout_rate", obs["dropout_rate"], cmd)
    out.add(f"{fid}.fairness_failures", len(s.get("fairness_failures") or []), cmd,
            note="; ".join(s.get("fairness_failures") or []))
    for v in s.get("variants") or []:
        name = f"{'monotone' if v.get('monotone') else 'unconstrained'}.{'per_round_type' if v.get('per_round_type') else 'one_model'}"
        for k in ("roc_auc", "pr_auc", "precision_at_10pct", "ece"):
            if v.get(k) is not None and np.isfinite(v[k]):
                out.add(f"{fid}.variant.{name}.{k}", v[k], cmd)
        if v.get("note"):
            out.add(f"{fid}.variant.{name}", None, cmd, note=v["note"])


# The scores `ews train --json` reports with their own 95% intervals (`ci95_low.*`, `ci95_high.*`:
# training/bootstrap.py, by student), as DECISIONS.md's tables quote them: figure name -> metric prefix.
REPORTED_SCORES = {"model": "", "ceiling": "ceiling_", "observable_ceiling": "observable.ceiling_",
                   "logistic": "baselines.logistic.", "lookup": "baselines.grade_term_lookup.",
                   "school_model": "baselines.school_model.", "gap": "gap_", "observable_gap": "observable.gap_",
                   "model_minus_logistic": "versus.logistic.", "model_minus_lookup": "versus.grade_term_lookup.",
                   "model_minus_school_model": "versus.school_model."}
REPORTED_METRICS = ("roc_auc", "pr_auc", "within_grade_roc_auc", "within_grade_pr_auc")


def reported_figures(out: Collected, fid: str, s: Mapping[str, Any], cmd: str) -> None:
    """The figures `ews train --json` reports with intervals (`<fid>.reported.<score>.<metric>`), and
    the calibration the release gate judges: O/E overall and per term, round type, grade band and
    fairness group, slope, equal-mass ECE (`<fid>.calibration.*`, intervals `_lo`/`_hi` as reported;
    beside a stratum its students, `.students`, and for a fairness group its students who dropped out,
    `.dropout_students`: the counts that say whether the gate judges the group, GateConfig's minimums)."""
    m = s.get("metrics", {})
    for name, prefix in REPORTED_SCORES.items():
        for k in REPORTED_METRICS:
            key = f"{prefix}{k}"
            if m.get(key) is None:
                continue
            lo, hi = m.get(f"ci95_low.{key}"), m.get(f"ci95_high.{key}")
            out.add(f"{fid}.reported.{name}.{k}", m[key], cmd, None if lo is None or hi is None else (lo, hi))
    strata = [""] + sorted({k[len("calibration."):-len(".oe")] + "." for k in m
                            if k.startswith("calibration.") and k.endswith(".oe") and k != "calibration.oe"})
    for st in strata:
        if st and m.get(f"calibration.{st}students") is not None:
            out.add(f"{fid}.calibration.{st}students", m[f"calibration.{st}students"], cmd)
        if st and m.get(f"groups.{st}positive_students") is not None:
            out.add(f"{fid}.calibration.{st}dropout_students", m[f"groups.{st}positive_students"], cmd)
        for k in ("oe", "slope", "ece"):
            key = f"calibration.{st}{k}"
            if m.get(key) is not None:
                lo, hi = m.get(f"{key}_lo"), m.get(f"{key}_hi")
                out.add(f"{fid}.calibration.{st}{k}", m[key], cmd, None if lo is None or hi is None else (lo, hi))
    if m.get("pr_auc") is not None and m.get("observable.ceiling_pr_auc"):
        out.add(f"{fid}.reported.pr_auc_share_of_observable_ceiling", m["pr_auc"] / m["observable.ceiling_pr_auc"], cmd,
                note="model PR-AUC / observable ceiling PR-AUC (issue 12 goal: at least 0.90)")


def reported_step(a: argparse.Namespace, work: Path, out: Collected) -> None:
    """`reported_figures` of every training a worlds step already logged (no simulation, no training)."""
    recorded = set(_previous(a.out_dir / "figures.json").get("figures", {}))
    for world in a.worlds:
        w = work / f"world-{world.name}"
        prepared = (w / "prepared.json").exists()
        for name in ("default", *world.alternatives):
            s = _earlier_summary(w / f"train-{name}.log")
            if not prepared or s is None:
                print(f"   (world {world.name} {name}: no logged training under {w}; run the worlds step)", flush=True)
                continue
            train = (w / f"train-{name}.log").read_text(encoding="utf-8").split("\n", 1)[0].removeprefix("$ ")
            prep = " && ".join(command_text(x) for x in _prepare_chain(world, w))
            # points of the summary as the worlds step records them, where that step has not recorded
            # them with its own bootstrap intervals; then the figures `ews train --json` reports
            points = Collected()
            _train_figures(points, f"world.{world.name}.{name}", s, {}, f"{prep} && {train}")
            out.figures += [f for f in points.figures if f.id not in recorded]
            reported_figures(out, f"world.{world.name}.{name}", s, f"{prep} && {train}")


def _version_intervals(a: argparse.Namespace, home: Path, sim: Path, summary: Mapping[str, Any],
                       partial: Mapping[str, Any] | None) -> dict[str, tuple[float, float]]:
    """Bootstrap-by-student intervals on the version's test fold: the model, the ceiling, the logistic
    baseline, and the paired differences ceiling - model and model - logistic."""
    from ews.cli import _simulator_truth
    from features.evaluation import install_truth_evaluator
    from features.home import EwsHome
    from training.baselines import baseline_scores
    from training.config import TrainConfig
    from training.data import load_trainset
    from training.metrics import score_metrics
    from training.pipeline import learned_rows, split_trainset
    from training.registry import load_model
    from training.train import truth_for_test

    install_truth_evaluator(_simulator_truth)
    h = EwsHome(root=home)
    cfg = TrainConfig.model_validate(partial or {})
    ts = load_trainset(h, summary["trainset"])
    _, folds = split_trainset(ts, cfg)
    test, train = folds["test"].reset_index(drop=True), learned_rows(folds, cfg)
    model = load_model(h, version=summary["version"]).model
    y = test["label"].to_numpy(dtype=float)
    school = test["school_code"].astype(str).to_numpy()
    scores = {"model": model.risk_score(test)}
    truth = truth_for_test(h, sim / "truth", ts, cfg)
    joined = test[["student_key", "round_id"]].astype(str).merge(
        truth.astype({"student_key": str, "round_id": str}), on=["student_key", "round_id"], how="left")
    differences: dict[str, tuple[str, str]] = {}
    if joined["p_true"].notna().all():
        scores["ceiling"] = joined["p_true"].to_numpy(dtype=float)
        differences["ceiling_minus_model"] = ("ceiling", "model")
    try:
        scores["logistic"] = baseline_scores(test, train, train["label"].to_numpy(), cfg.model.seed,
                                             cfg.logistic_max_rows)["logistic"]
        differences["model_minus_logistic"] = ("model", "logistic")
    except (TypeError, KeyError) as exc:  # baselines changed shape: the model's intervals still stand
        print(f"   (no logistic interval: {type(exc).__name__}: {exc})", flush=True)

    def metrics(yy: np.ndarray, s: np.ndarray, sch: np.ndarray) -> dict[str, float]:
        m = dict(score_metrics(yy, s, sch, cfg.capacities))
        m["observed_to_expected"] = float(yy.sum() / s.sum()) if s.sum() else float("nan")
        return m

    samples = student_bootstrap(test["student_key"].astype(str).to_numpy(), a.reps, seed=cfg.model.seed % 2**32)
    return bootstrap_intervals(samples, scores, y, school, metrics, differences,
                               (*INTERVAL_METRICS, "observed_to_expected"))


def demo_step(a: argparse.Namespace, work: Path, out: Collected) -> None:
    """README: the demo's wall time and peak memory (`ews demo --no-serve` on embedded defaults)."""
    home = work / "demo-home"
    argv = ews_argv("demo", "--home", str(home), "--no-serve", *(["--students", "3000", "--years", "3"] if a.quick else []))
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    run_cli(argv, work / "demo.log")
    seconds = time.perf_counter() - t0
    # ru_maxrss of waited-for children: the largest process of the demo (kB on Linux), as /usr/bin/time -v reports
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 / 1024
    cmd = command_text(argv) + "   (python -m benchmarks.figures --only demo)"
    out.add("demo.wall_seconds", round(seconds, 1), cmd, note=f"load average {load:.1f} at the start")
    out.add("demo.peak_rss_gb", round(peak_gb, 2), cmd, note="largest single process (ru_maxrss of children)")
    out.sections["demo"] = {"command": command_text(argv), "seconds": seconds, "peak_rss_gb": peak_gb, "load_at_start": load}


# The not-found list's worlds README quotes: the test worlds of tests/support/worlds.py and world M.
NOTFOUND_WORLDS = (("seed11", 1500, 4, 11), ("seed5", 1000, 4, 5), ("seed23", 1000, 4, 23), ("M", 20000, 4, 2))
NOTFOUND_CENSUS = "2024-06-10"


def notfound_step(a: argparse.Namespace, work: Path, out: Collected) -> None:
    """README (the not-found list): precision and recall of every census's list with complete
    evidence against the simulator's truth (`ews notfound show --truth --json`, 95% intervals by
    student), overall and per nationality. World M's home is reused when the worlds step prepared it
    (the same `ews simulate` arguments)."""
    worlds = [w for w in NOTFOUND_WORLDS if not a.notfound_world or w[0] in a.notfound_world]
    worlds = worlds if not a.quick else worlds[:1]
    for name, students, years, seed in worlds:
        sim_argv = ews_argv("simulate", "--out", "SIM", "--students", str(students), "--years", str(years), "--seed", str(seed))
        w = work / f"world-{name}"
        prepared = name == "M" and (w / "prepared.json").exists()  # ingested and linked by the worlds step
        if not prepared:
            w = work / f"notfound-{name}"
        sim, home = w / "sim", w / "home"
        h = ["--home", str(home)]
        sim_argv[sim_argv.index("SIM")] = str(sim)
        chain = [sim_argv, ews_argv("ingest", str(sim / "deliveries"), "--json", *h), ews_argv("link", "--json", *h)]
        if not prepared and not (a.reuse and (w / "linked.json").exists()):
            if w.exists():  # figures of changed code need a world built by that code
                shutil.rmtree(w)
            for i, argv in enumerate(chain):
                run_cli(argv, w / f"{i}-{argv[3]}.log", (0, 1) if argv[3] == "ingest" else (0,))
            (w / "linked.json").write_text("{}", encoding="utf-8")
        build = ews_argv("notfound", "build", "--census", NOTFOUND_CENSUS, "--json", *h)
        show = ews_argv("notfound", "show", "--census", NOTFOUND_CENSUS, "--truth", str(sim / "truth"), "--json", *h)
        run_cli(build, w / "notfound-build.log")
        doc = json_of(run_cli(show, w / "notfound-show.log"))
        cmd = " && ".join(command_text(x) for x in (*chain, build, show))
        q = doc["quality"]
        fid = f"notfound.{name}"
        o = q["overall"]
        for key in ("precision", "recall"):
            x = o[key]
            out.add(f"{fid}.{key}", x["value"], cmd, None if x.get("low") is None else (x["low"], x["high"]))
        for key in ("listed", "truly_out", "rows", "base_rate"):
            out.add(f"{fid}.{key}", o.get(key), cmd)
        out.add(f"{fid}.censuses", len(q.get("censuses", [])), cmd)
        for value, x in (q.get("per_group", {}).get("nationality") or {}).items():
            for key in ("precision", "recall"):
                v = x[key]
                out.add(f"{fid}.nationality.{value}.{key}", v["value"], cmd,
                        None if v.get("low") is None else (v["low"], v["high"]),
                        note="" if x.get("judged") else "too few to judge")
        mu = q.get("moved_up_caveat") or {}
        if mu:
            out.add(f"{fid}.moved_up_caveat.listed", mu["listed"], cmd, note="cases listed with the moved-up caveat")
            v = mu["precision"]
            out.add(f"{fid}.moved_up_caveat.precision", v["value"], cmd,
                    None if v.get("low") is None else (v["low"], v["high"]), note="of the cases with that caveat")
        out.sections[f"notfound_{name}"] = {"command": cmd, "quality": q}


# The worlds training/DECISIONS.md's additivity tables quote: world M's size, three seeds.
ADDITIVITY_WORLDS = tuple(World(f"A{seed}", 20000, 4, seed) for seed in (2, 23, 31))
QUICK_ADDITIVITY_WORLDS = (World("A2", 1500, 4, 2),)
# The label-count worlds: the additivity seeds at the size and at five times it.
LABEL_SIZES = (20_000, 100_000)
LABEL_SEEDS = (2, 23, 31)


def additivity_figures(out: Collected, fid: str, doc: Mapping[str, Any], cmd: str) -> None:
    """`benchmarks.additivity --json`'s points with their intervals (`<fid>.<score>.<metric>`), the
    paired differences (`<fid>.<a>_minus_<b>.<metric>`) and the R^2 of the ceiling's logit."""
    out.add(f"{fid}.test_rows", doc["test_rows"], cmd)
    out.add(f"{fid}.test_dropouts", doc["test_dropouts"], cmd)
    for name, metrics in doc["scores"].items():
        for m in ("roc_auc", "pr_auc"):
            out.add(f"{fid}.{name}.{m}", round(metrics[m]["point"], 4), cmd, tuple(metrics[m]["ci95"]))
        out.add(f"{fid}.{name}.pr_auc_share_of_ceiling", round(metrics["pr_auc_share_of_ceiling"], 3), cmd,
                note="PR-AUC / observable ceiling's PR-AUC")
    for key, d in doc["differences"].items():
        for m in ("roc_auc", "pr_auc"):
            out.add(f"{fid}.{key.replace(' - ', '_minus_')}.{m}", round(d[m]["point"], 4), cmd, tuple(d[m]["ci95"]),
                    note="paired difference")
    for name, r2 in doc["logit_r2"].items():
        out.add(f"{fid}.logit_r2.{name}", round(r2, 3), cmd, note="share of the ceiling's log-odds variance on the test fold")


def additivity_step(a: argparse.Namespace, work: Path, out: Collected) -> None:
    """DECISIONS.md: what the features, the model's family, additivity and the labels each cost
    (`benchmarks.additivity` on a world prepared by the CLI stages; points and intervals as it prints)."""
    for world in (QUICK_ADDITIVITY_WORLDS if a.quick else ADDITIVITY_WORLDS):
        w = work / f"additivity-{world.seed}"
        _, prep = _prepare_world(a, world, w)
        argv = [sys.executable, "-m", "benchmarks.additivity", "--home", str(w / "home"), "--truth",
                str(w / "sim" / "truth"), "--threads", "2", "--json"]
        doc = json_of(run_cli(argv, w / "additivity.log"))
        cmd = f"{prep} && {shlex.join(['python', *argv[1:]])}"
        additivity_figures(out, f"additivity.seed{world.seed}", doc, cmd)
        out.sections[f"additivity_{world.seed}"] = doc


def label_worlds(a: argparse.Namespace) -> list[World]:
    """The worlds of the labels step (one per size and seed asked for; --quick: one small world)."""
    if a.quick:
        return [World("L1500s2", 1500, 4, 2)]
    return [World(f"L{n}s{seed}", n, 4, seed) for n in (a.labels_size or LABEL_SIZES)
            for seed in (a.labels_seed or LABEL_SEEDS)]


def fifth_of_the_students(trainsets: Path, test_rounds: list[str]) -> str:
    """A training set beside the newest one with every test-fold row and, in every other round, the
    rows of the students whose key hashes to 0 mod 5: the same world, the same test fold, a fifth of
    the labels to learn and calibrate from. Its name ends in `-fifth`."""
    import duckdb

    from features.pointintime.trainset import TrainsetManifest, atomic_write_text, latest_trainset_name

    src = trainsets / latest_trainset_name(trainsets)
    man = TrainsetManifest.model_validate_json((src / "manifest.json").read_text(encoding="utf-8"))
    dst = trainsets / f"{src.name}-fifth"
    dst.mkdir(exist_ok=True)
    con = duckdb.connect()
    con.execute(f"""COPY (SELECT * FROM read_parquet('{src / "data.parquet"}')
                          WHERE round_id IN (SELECT unnest(?::VARCHAR[])) OR hash(student_key) % 5 = 0)
                    TO '{dst / "data.parquet"}' (FORMAT parquet)""", [test_rounds])
    per_round = {r: (int(n), float(rate)) for r, n, rate in con.execute(
        f"SELECT round_id, count(*), avg(label) FROM read_parquet('{dst / 'data.parquet'}') GROUP BY 1").fetchall()}
    # The file holds labelled rows only; the rows the parent set left out unlabelled are not resampled
    # (its counts of them stay).
    rounds = [r.model_copy(update={"rows": per_round.get(r.round_id, (0, 0.0))[0],
                                   "label_rate": round(per_round[r.round_id][1], 5) if r.round_id in per_round else None})
              for r in man.rounds]
    rows = sum(r.rows for r in rounds)
    rate = sum(n * x for n, x in per_round.values()) / rows if rows else 0.0
    digest = hashlib.sha256((dst / "data.parquet").read_bytes()).hexdigest()
    fifth = man.model_copy(update={"name": dst.name, "rounds": rounds, "rows": rows, "label_rate": round(rate, 5),
                                   "file": str(dst / "data.parquet"), "sha256": digest})
    # Not `save_trainset_manifest`: that would make the fifth the home's newest set.
    atomic_write_text(fifth.model_dump_json(indent=2), dst / "manifest.json")
    return dst.name


def labels_step(a: argparse.Namespace, work: Path, out: Collected) -> None:
    """DECISIONS.md: the default model's figures (as `ews train --truth --json` reports them, with its
    intervals) on each label-count world: `labels.n<students>.seed<S>.reported.*` and `.calibration.*`;
    on the largest worlds also trained on a fifth of the students (`...seed<S>.fifth.*`: the same world
    and test fold with the label count of the smaller world)."""
    for world in label_worlds(a):
        w = work / f"labels-{world.students}-{world.seed}"
        _, prep = _prepare_world(a, world, w)
        home = w / "home"
        fid = f"labels.n{world.students}.seed{world.seed}"
        argv = ews_argv("train", "--truth", str(w / "sim" / "truth"), "--json", "--home", str(home))
        cmd = f"{prep} && {command_text(argv)}"
        summary = _labels_run(a, out, fid, argv, w / "train-default.log", cmd)
        section: dict[str, Any] = {"command": cmd, "summary": summary}
        if world.students == max(LABEL_SIZES) or a.quick:  # --quick proves this chain too
            name = fifth_of_the_students(home / "trainsets", list(summary["split"]["test"]))
            fargv = [*argv[:-2], "--trainset", name, *argv[-2:]]
            fcmd = (f"{cmd}, then {name} written by benchmarks.figures.fifth_of_the_students, "
                    f"then {command_text(fargv)}   (python -m benchmarks.figures --only labels)")
            section["fifth"] = {"command": fcmd, "summary": _labels_run(a, out, f"{fid}.fifth", fargv, w / "train-fifth.log", fcmd)}
        out.sections[f"labels_{world.students}_{world.seed}"] = section


def _labels_run(a: argparse.Namespace, out: Collected, fid: str, argv: list[str], log: Path, cmd: str) -> dict[str, Any]:
    """One `ews train --truth --json` of the labels step, its figures recorded under `fid`."""
    summary: dict[str, Any] = (_earlier_summary(log) if a.reuse else None) or json_of(run_cli(argv, log))
    m = summary.get("metrics", {})
    out.add(f"{fid}.train_rows", (summary.get("rows") or {}).get("train"), cmd)
    out.add(f"{fid}.test_rows", m.get("rows"), cmd)
    out.add(f"{fid}.test_dropouts", m.get("positives"), cmd)
    out.add(f"{fid}.trees", summary.get("best_iteration"), cmd)
    reported_figures(out, fid, summary, cmd)
    return summary


def reasons_step(a: argparse.Namespace, work: Path, out: Collected) -> None:
    """serving/reasons.py: the share of flagged pupils (problem and at-risk groups) with no material
    reason (before the small-factor text, their cell was empty) and the share with an empty cell,
    over every published round of the small demo (`ews demo --students 3000 --years 4 --no-serve`,
    built under --work-dir; --reasons-home HOME reads another home instead), with 95% intervals by
    student (a pupil flagged in several rounds is resampled with all of those rows)."""
    from features.home import EwsHome
    from serving.reasons import group_matrix, rank_reasons
    from serving.snapshot import published_rounds

    # four years: `ews demo --students 3000 --years 3` leaves its calibration fold no labelled round
    # on this branch (`ews train` exits 2), so the small demo the reasons are measured on has four
    home = a.reasons_home or work / "demo-3000x4"
    demo_argv = ews_argv("demo", "--home", str(home), "--no-serve", "--students", "3000", "--years", "4")
    if a.reasons_home is None and not (a.reuse and published_rounds(EwsHome(root=home))):
        if home.exists():  # figures of changed code need rounds scored by that code
            shutil.rmtree(home)
        run_cli(demo_argv, work / "demo-3000x4.log")
    refs = published_rounds(EwsHome(root=home))
    if not refs:
        raise RuntimeError(f"no published round under {home}")
    keys, none, empty, rounds = [], [], [], []
    for ref in refs:
        cols = ref.manifest.columns
        t = ref.students(["student_key", "scored", "risk_group", "reasons_en", *cols.columns("contribution")]).to_pandas()
        f = t[t["scored"].astype(bool) & t["risk_group"].isin(["problem", "at_risk"])]
        if f.empty:
            continue
        gc = f[cols.columns("contribution")].to_numpy(dtype=float) @ group_matrix(for_reasons=True)
        _, count = rank_reasons(gc, ref.manifest.config.top_reasons)
        keys.append(f["student_key"].astype(str).to_numpy())
        none.append(count == 0)
        empty.append(~f["reasons_en"].fillna("").astype(str).str.len().astype(bool).to_numpy())
        rounds.append(ref.round_id)
    k, n0, e0 = np.concatenate(keys), np.concatenate(none).astype(float), np.concatenate(empty).astype(float)
    samples = student_bootstrap(k, a.reps, seed=12)
    cmd = f"{command_text(demo_argv)}; python -m benchmarks.figures --only reasons"
    out.add("reasons.demo.flagged_rows", len(k), cmd, note=f"problem + at-risk rows of {len(rounds)} published rounds")
    out.add("reasons.demo.flagged_no_material_reason", round(float(n0.mean()), 4), cmd,
            interval([float(n0[i].mean()) for i in samples]),
            note="share of flagged rows whose reason groups are all below odds x1.10 (an empty cell before the small-factor text)")
    out.add("reasons.demo.flagged_empty_cell", round(float(e0.mean()), 4), cmd,
            interval([float(e0[i].mean()) for i in samples]), note="share of flagged rows whose reasons cell is empty")
    out.sections["reasons"] = {"home": str(home), "rounds": rounds, "flagged_rows": len(k),
                               "no_material_reason": float(n0.mean()), "empty_cell": float(e0.mean())}


# ------------------------------------------------------------------------------------------------
# writing


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def figure_group(fid: str) -> str:
    """The run-sized group a figure belongs to: a world or a not-found world (`world.M`, `notfound.seed5`),
    else its step (`ceiling`, `reasons`, `additivity`); a label-count world is its size and seed
    (`labels.n100000.seed2`: one may be rerun alone). A step run alone replaces whole groups."""
    parts = fid.split(".")
    if parts[0] == "labels" and len(parts) > 2:
        return ".".join(parts[:3])
    return ".".join(parts[:2]) if parts[0] in ("world", "notfound") and len(parts) > 1 else parts[0]


def write_outputs(a: argparse.Namespace, out: Collected, argv: list[str], folder: Path) -> None:
    """figures.json and FIGURES.md, each written to a temporary name and renamed (never half-written).

    A step run alone (`--only`) replaces only its own figures, so the file mixes runs: `runs` keeps,
    per figure group, the run that produced it (when, which command, at which commit, how loaded the
    machine was), and FIGURES.md lists them. The top-level header is the last run's."""
    folder.mkdir(parents=True, exist_ok=True)
    head = {"generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": shlex.join(["python", "-m", "benchmarks.figures", *argv]),
            "git_commit": _git_commit(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg()[0], "bootstrap_replicates": a.reps, "quick": a.quick,
            "interval": "95% percentile bootstrap, resampling students (all rows of a student together)"}
    previous = _previous(folder / "figures.json")
    figures = {f.id: f.__dict__ for f in out.figures}
    merged = {**previous.get("figures", {}), **figures}  # a step run alone replaces only its own figures
    sections = {**previous.get("sections", {}), **out.sections}
    runs = {**previous.get("runs", {}), **{g: head for g in {figure_group(fid) for fid in figures}}}
    doc = {**head, "runs": runs, "figures": merged, "sections": sections}
    _atomic(folder / "figures.json", json.dumps(doc, indent=2, default=str) + "\n")
    _atomic(folder / "FIGURES.md", render_markdown(doc))


def render_markdown(doc: Mapping[str, Any]) -> str:
    """FIGURES.md from figures.json's document: each group's run, then every figure with its command."""
    merged, runs = doc["figures"], doc.get("runs", {})
    counts = Counter(figure_group(fid) for fid in merged)
    lines = ["# Figures quoted in the documents", "",
             f"Last run {doc['generated_at']}: `{doc['command']}` at commit {doc.get('git_commit') or 'unknown'}. "
             "A step run alone replaces only its own groups; each group's run:", "",
             "| group | figures | generated | command | commit | bootstrap replicates | Python, CPUs, load at the end |",
             "|---|---|---|---|---|---|---|"]
    for g in sorted(counts):
        r = runs.get(g)
        if r is None:
            lines.append(f"| {g} | {counts[g]} | – | not recorded | – | – | – |")
            continue
        quick = " QUICK RUN: small worlds, figures prove the chain only." if r.get("quick") else ""
        # a run recorded before groups kept their own (backfilled from git history) may lack its command
        command = f"`{r['command']}`" if r.get("command") else r.get("note", "not recorded")
        load = r.get("load_average_at_end")
        machine = f"{r.get('python')}, {r.get('cpus')}, {load:.1f}" if load is not None else "–"
        lines.append(f"| {g} | {counts[g]} | {r.get('generated_at') or '–'} | {command}{quick} | {r.get('git_commit') or '–'} | "
                     f"{r.get('bootstrap_replicates') or '–'} | {machine} |")
    lines += ["", f"Intervals: {doc['interval']}.",
              "Machine-readable: figures.json (same ids; `runs` holds each group's run). Regenerate all: `make figures`.", "",
              "| id | value | 95% interval | reproduce with | note |", "|---|---|---|---|---|"]
    for fid in sorted(merged):
        f = merged[fid]
        iv = f"{_fmt(f['low'])} – {_fmt(f['high'])}" if f.get("low") is not None else ""
        lines.append(f"| {fid} | {_fmt(f['value'])} | {iv} | `{f['command']}` | {f.get('note', '')} |")
    return "\n".join(lines) + "\n"


def _previous(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def plan(a: argparse.Namespace) -> list[str]:
    work = a.work_dir
    lines = []
    if "ceiling" in a.only:
        lines += [command_text(ews_argv("simulate", "--out", str(work / f"ceiling-{s}"), "--students", str(a.ceiling_students),
                                        "--years", "3", "--seed", str(s))) for s in CEILING_SEEDS]
    if "worlds" in a.only:
        for w in a.worlds:
            lines.append(f"world {w.name}: ews simulate --students {w.students} --years {w.years} --seed {w.seed}, ingest, link, "
                         f"trainset, train --variants; alternatives: {', '.join(w.alternatives) or 'none'}")
    if "notfound" in a.only:
        lines += [f"not-found list: ews simulate --students {n} --years {y} --seed {sd}, ingest, link, notfound build "
                  f"--census {NOTFOUND_CENSUS}, notfound show --truth" for _, n, y, sd in NOTFOUND_WORLDS]
    if "demo" in a.only:
        lines.append(command_text(ews_argv("demo", "--no-serve")))
    if "reasons" in a.only:
        lines.append(f"reasons: flagged pupils with no material reason in the published rounds of {a.reasons_home or work / 'demo-3000x4'}")
    if "additivity" in a.only:
        lines += [f"additivity: ews simulate --students {w.students} --years {w.years} --seed {w.seed}, ingest, link, "
                  "trainset, python -m benchmarks.additivity --json"
                  for w in (QUICK_ADDITIVITY_WORLDS if a.quick else ADDITIVITY_WORLDS)]
    if "labels" in a.only:
        lines += [f"labels: ews simulate --students {w.students} --years {w.years} --seed {w.seed}, ingest, link, "
                  "trainset --truth, train --truth --json" for w in label_worlds(a)]
    return lines


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = resolve(argv)
    if a.plan:
        print("\n".join(plan(a)))
        return
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    work = a.work_dir
    work.mkdir(parents=True, exist_ok=True)
    out = Collected()
    steps: list[Callable[[], None]] = []
    if "ceiling" in a.only:
        steps.append(lambda: ceiling_step(a, work, out))
    if "worlds" in a.only:
        steps += [lambda w=w: world_step(a, w, work, out) for w in a.worlds]
    if "reported" in a.only and "worlds" not in a.only:  # the worlds step records them itself
        steps.append(lambda: reported_step(a, work, out))
    if "notfound" in a.only:
        steps.append(lambda: notfound_step(a, work, out))
    if "demo" in a.only:
        steps.append(lambda: demo_step(a, work, out))
    if "reasons" in a.only:
        steps.append(lambda: reasons_step(a, work, out))
    if "additivity" in a.only:
        steps.append(lambda: additivity_step(a, work, out))
    if "labels" in a.only:
        steps.append(lambda: labels_step(a, work, out))
    for step in steps:
        try:
            step()
        finally:  # written after every step: what was measured before a failure or a stop is kept
            write_outputs(a, out, argv, a.out_dir)
    print(f"wrote {a.out_dir / 'figures.json'} and {a.out_dir / 'FIGURES.md'} ({len(out.figures)} figures)")


if __name__ == "__main__":
    main()
