"""The default split of a home's training set, with the test fold joined to the simulator's truth:
what the benchmarks that weigh model variants against the observable ceiling start from
(`additivity`, `booster_variants`, `logistic_margin`), and their common command-line arguments."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from training.config import TrainConfig


def world_parser(description: str | None) -> argparse.ArgumentParser:
    """A parser with `--home` (a home with a training set, `ews trainset`) and `--truth` (the
    simulator's truth folder of the same world); the benchmark adds its own arguments."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--truth", type=Path, required=True, help="the simulator's truth folder of the same world")
    return ap


def folds_with_truth(home_dir: Path, truth_dir: Path, cfg: TrainConfig) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """(folds of the newest training set under `cfg`'s split, the test fold with the truth's columns
    `p_true` / `p_observable` joined by student and round)."""
    # The entry point's job (ews.cli): training never imports the simulator, a benchmark may.
    from ews.cli import _simulator_truth
    from features.evaluation import install_truth_evaluator
    from features.home import EwsHome
    from training.data import load_trainset
    from training.pipeline import split_trainset
    from training.train import truth_for_test

    install_truth_evaluator(_simulator_truth)
    home = EwsHome(root=home_dir)
    ts = load_trainset(home)
    _, folds = split_trainset(ts, cfg)
    test = folds["test"].merge(truth_for_test(home, truth_dir, ts, cfg), on=["student_key", "round_id"], how="left")
    return folds, test
