"""Evaluation against a known truth, as the pipeline sees it: what it asks for, and the slot that answers.

`ews link --truth`, `ews trainset --truth` and `ews train --truth` measure the pipeline against the
simulator's truth folder (linkage precision and recall, label agreement, the ceiling of the test
rounds). The pipeline never imports the simulator (imports flow one way; the simulator is its own
room, and a real deployment has no truth), so the dependency is inverted: the pipeline declares here
the `TruthEvaluator` it needs and the reports it prints, and the entry point (`ews/cli.py`) installs
the simulator's implementation (`simulator.evaluate.SimulatorTruth`) with `install_truth_evaluator`.

The slot holds a factory, not an evaluator, so installing it imports nothing: the simulator's
evaluation code is loaded only when a `--truth` option is actually used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import duckdb
    import pyarrow as pa

    from features.pointintime.labels import Horizon


class PairwiseQuality(BaseModel):
    """Pairwise precision and recall of (predicted student_key, true person) over some rows."""

    model_config = ConfigDict(extra="forbid")
    rows: int
    precision: float
    recall: float
    predicted_students: int
    true_persons: int


class LinkQuality(BaseModel):
    """Linkage against the truth, and the share of labels that linkage errors make wrong."""

    model_config = ConfigDict(extra="forbid")
    precision: float
    recall: float
    all_rows: PairwiseQuality
    identity_rows: PairwiseQuality
    label_rows_compared: int
    label_error_share: float
    label_error_share_among_dropouts: float
    rounds_compared: list[str]


class LabelQuality(BaseModel):
    """Our labels against the true outcomes, over every labelled round."""

    model_config = ConfigDict(extra="forbid")
    rows_compared: int
    agreement: float
    our_dropout_rate: float
    true_dropout_rate: float
    confusion: dict[str, int]
    per_round: dict[str, float]


class TruthEvaluator(Protocol):
    """What the pipeline asks of a truth folder. `con` is a warehouse session (the `wh` schema attached)."""

    def linkage_quality(self, con: duckdb.DuckDBPyConnection, truth_dir: Path) -> LinkQuality:
        """Pairwise linkage quality and the labels it makes wrong."""
        ...

    def label_quality(self, con: duckdb.DuckDBPyConnection, truth_dir: Path, horizon: Horizon) -> LabelQuality:
        """Agreement of our labels (of `horizon`) with the true outcomes."""
        ...

    def ceiling_table(self, con: duckdb.DuckDBPyConnection, truth_dir: Path, round_ids: list[str]) -> pa.Table:
        """(student_key, round_id, p_true, true_dropout) of the given rounds' scored rows."""
        ...


TruthEvaluatorFactory = Callable[[], TruthEvaluator]

_factory: TruthEvaluatorFactory | None = None


def install_truth_evaluator(factory: TruthEvaluatorFactory | None) -> None:
    """Fill (or, with None, empty) the slot; the entry point does this before any command runs."""
    global _factory
    _factory = factory


def truth_evaluator() -> TruthEvaluator:
    """The installed evaluator; a clear error when a `--truth` option is used without one."""
    if _factory is None:
        raise RuntimeError(
            "no truth evaluator is installed: --truth compares against a simulator's truth folder and "
            "works through the `ews` command (or call features.evaluation.install_truth_evaluator first)"
        )
    return _factory()
