"""A small synthetic training set shaped exactly like `ews trainset` output, built from the catalogue.

For unit and model tests (tiny data built in the test) and for exercising the registry without the
full simulate -> ingest -> link -> trainset pipeline. Its labels follow a known logistic rule
(attendance, failing marks, poverty, transition grade, school), and `p_true` is returned so
ceiling metrics can be checked. It is not the simulator's world: figures measured on it mean
nothing. It sits in the simulator's room because only tests and benchmarks use it; the pipeline
never imports it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import numpy as np
import pandas as pd

from features.calendar import SchoolCalendar, parse_round
from features.home import EwsHome
from features.pointintime.trainset import TrainsetConfig, TrainsetManifest, TrainsetRound, save_trainset_manifest
from features.pointintime.spec import CATEGORICAL, FEATURES, GROUPS

_LEVELS = {
    "caretaker": ["parents", "grandparents", "relatives", "other"],
    "travel_mode": ["walk", "bicycle", "motorcycle", "school_bus", "other"],
    "grade": ["K1", "K2", "K3", "P1", "P2", "P3", "P4", "P5", "P6", "M1", "M2", "M3", "M4", "M5", "M6"],
    "school_size_class": ["small", "medium", "large", "extra_large"],
    "region": ["north", "northeast", "central", "east", "west", "south", "bangkok"],
    "sex": ["F", "M"],
}


def default_rounds(first_year_be: int = 2566, years: int = 4) -> list[str]:
    """Labelled rounds of a `years`-year history: every round but the last term's. Four years by
    default: labels are known only once every evidence source is due (a term after the horizon
    census), and the default folds leave no training round on three."""
    out = [f"{y}-T{t}-{k}" for y in range(first_year_be, first_year_be + years) for t in (1, 2) for k in ("early", "mid")]
    return out[:-2]


def synthetic_frame(students: int = 600, rounds: list[str] | None = None, seed: int = 0,
                    schools: int = 30) -> pd.DataFrame:
    """One row per (student, round) with every catalogue column, group columns, label, outcome, p_true."""
    rounds = rounds or default_rounds()
    rng = np.random.default_rng(seed)
    cal = SchoolCalendar()
    sid = np.arange(students)
    school_of = rng.integers(0, schools, size=students)
    school_effect = rng.normal(0, 0.5, size=schools)
    base_att = np.clip(rng.beta(12, 1.2, size=students), 0.3, 1.0)
    poor = rng.random(students) < 0.35
    sex = rng.choice(_LEVELS["sex"], size=students)
    region = rng.choice(_LEVELS["region"], size=students)
    g_code = rng.random(students) < 0.05
    disabled = rng.random(students) < 0.03
    grade0 = rng.integers(1, 16, size=students)
    parts = []
    for i, rid in enumerate(rounds):
        r = parse_round(rid)
        n = students
        att = np.clip(base_att + rng.normal(0, 0.05, n), 0, 1)
        fails = rng.poisson(np.clip((1 - att) * 6, 0.05, None))
        grade_level = np.clip(grade0 + (r.academic_year - 2566), 1, 15)
        transition = np.isin(grade_level, (9, 12))
        logit = (-4.2 + 9.0 * (0.92 - att) + 0.35 * np.minimum(fails, 4) + 0.8 * poor + 0.9 * transition
                 + 0.25 * (grade_level >= 12) + school_effect[school_of] + (0.2 if r.round_type == "mid" else 0.0))
        p_true = 1 / (1 + np.exp(-logit))
        label = (rng.random(n) < p_true).astype(int)
        d: dict[str, object] = {}
        for f in FEATURES:
            if f.dtype == "float":
                d[f.name] = rng.normal(0, 1, n)
            elif f.dtype == "int":
                d[f.name] = rng.integers(0, 3, n)
            elif f.dtype == "bool":
                d[f.name] = rng.random(n) < 0.2
            else:
                d[f.name] = rng.choice(_LEVELS[f.name], size=n)
        d.update({
            "att_rate_term": np.where(r.round_type == "early", np.nan, att), "att_rate_12m": att,
            "att_rate_prev_term": np.clip(att + rng.normal(0, 0.03, n), 0, 1), "att_rate_last_month": att,
            "failing_marks_12m": fails, "marks_0_last": np.minimum(fails, 2), "extremely_poor": poor,
            "income_per_person": np.where(poor, 2000, 6000) + rng.normal(0, 500, n),
            "grade_level": grade_level, "grade": np.array(_LEVELS["grade"])[grade_level - 1],
            "in_transition_grade": transition, "term": np.full(n, r.term), "is_mid_round": np.full(n, r.round_type == "mid"),
            "school_past_dropout_rate": 1 / (1 + np.exp(-(-3.5 + school_effect[school_of]))),
            "sex": sex, "region": region, "non_thai_id": g_code, "disability": disabled,
        })
        frame = pd.DataFrame({
            "student_key": [f"s{x:06d}" for x in sid], "round_id": rid, "as_of": cal.as_of(rid),
            "school_code": [f"10{x:08d}" for x in school_of],
        })
        for f in FEATURES:
            col = pd.Series(d[f.name])
            if f.dtype == "int":
                col = col.astype("Int64")
            elif f.dtype == "bool":
                col = col.astype("boolean")
            elif f.dtype == "category":
                col = col.astype(str)
            frame[f.name] = col.to_numpy() if f.dtype in ("float", "category") else col.array
        # some missing values, as in real data
        for name in ("income_per_person", "caretaker", "care_problem_count"):
            m = rng.random(n) < 0.1
            frame.loc[m, name] = None
        frame["group_sex"] = sex
        frame["group_province"] = np.where(region == "bangkok", "10", "50")
        frame["group_region"] = region
        frame["group_nationality"] = np.where(g_code, "g_code", "thai")
        frame["group_cct_poverty"] = np.where(poor, "extremely_poor", "not_poor")
        frame["group_disability"] = np.where(disabled, "disability", "none")
        frame["label"] = label
        frame["outcome"] = np.where(label == 1, "dropout", "enrolled")
        frame["p_true"] = p_true
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def write_synthetic_trainset(home: EwsHome, frame: pd.DataFrame, name: str | None = None) -> str:
    """Write `frame` (without p_true) as EWS_HOME/trainsets/<name>/ with a manifest; sets LATEST."""
    data = frame.drop(columns=["p_true"], errors="ignore")
    digest = hashlib.sha256(pd.util.hash_pandas_object(data[["student_key", "round_id", "label"]]).values.tobytes()).hexdigest()
    name = name or f"ts-synth-{digest[:8]}"
    folder = home.trainsets_dir / name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "data.parquet"
    data.to_parquet(path, index=False)
    rounds = [
        TrainsetRound(round_id=str(rid), round_type=parse_round(str(rid)).round_type,
                      as_of=home.calendar.as_of(str(rid)), rows=len(g), unlabelled=0,
                      label_rate=round(float(g["label"].mean()), 5))
        for rid, g in data.groupby("round_id", sort=True)
    ]
    # The pipeline's own manifest type and save: a synthetic set loads like a built one, and cannot drift.
    manifest = TrainsetManifest(
        name=name, config=TrainsetConfig(), cutoff=dt.date(2026, 6, 30), rounds=rounds, rows=len(data),
        unlabelled_rows=0, label_rate=round(float(data["label"].mean()), 5),
        delivery_fingerprint="synthetic-" + digest[:16], catalogue_version="synthetic",
        feature_groups={g: [f.name for f in FEATURES if f.group == g] for g in GROUPS},
        categorical=list(CATEGORICAL), file=str(path), sha256=digest,
    )
    save_trainset_manifest(home.trainsets_dir, manifest)  # also makes it the newest (LATEST)
    return name


def truth_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["student_key", "round_id", "p_true"]].copy()
