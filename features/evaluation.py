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

from pydantic import BaseModel, ConfigDict, Field

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


# A group's label precision is judged only when at least this many distinct students were labelled
# dropouts in it: with 30, two false dropouts already read 0.933 (< 0.95), so one noisy student
# cannot fail a group and a real bias of a few points still shows.
MIN_GROUP_DROPOUT_STUDENTS = 30


class GroupLabelQuality(BaseModel):
    """Label precision and recall in one group (e.g. nationality MM), over labelled rows."""

    model_config = ConfigDict(extra="forbid")
    rows: int  # every row of the group, labelled or unknown
    unknown: int
    labelled_dropouts: int  # rows we label dropout
    labelled_dropout_students: int  # distinct students among them (what `judged` counts)
    true_dropouts: int  # labelled rows that truly dropped out
    false_dropouts: int  # rows we label dropout that did not drop out
    precision: float | None  # None: no labelled dropout
    recall: float | None  # None: no true dropout among labelled rows
    judged: bool  # at least MIN_GROUP_DROPOUT_STUDENTS labelled-dropout students
    # 95% interval of `precision` over student-level bootstrap replicates of the labelled dropouts
    precision_lo: float | None = None
    precision_hi: float | None = None
    # False dropouts no delivered record could have told from a dropout: the child truly moved abroad
    # or died, and the school filed no exits row (nothing else records either path). A rule that got
    # every other case right would still label them dropouts: `attainable_precision`, true dropouts
    # over true dropouts + these, is the best precision the records allow in the group.
    false_untraceable: int = 0
    attainable_precision: float | None = None


class LabelQuality(BaseModel):
    """Our labels against the true outcomes, over every round whose horizon census is delivered.

    `precision` is the share of labelled dropouts that truly dropped out; `recall` the share of
    true dropouts (among labelled rows) labelled dropout. `unknown_share` is the share of rows
    left `unknown`, out of training. `per_group` holds the same per nationality, province, grade
    band and poverty group. `agreement` (all rows) is kept for old reports: it hides label errors,
    since almost every row is a true negative.
    """

    model_config = ConfigDict(extra="forbid")
    rows_compared: int
    agreement: float
    our_dropout_rate: float
    true_dropout_rate: float
    confusion: dict[str, int]
    per_round: dict[str, float]
    precision: float | None = None
    recall: float | None = None
    precision_lo: float | None = None  # 95% student-level bootstrap interval of `precision`
    precision_hi: float | None = None
    rows: int = 0
    unknown_rows: int = 0
    unknown_share: float = 0.0
    true_dropouts_unknown: int = 0  # true dropouts among the unknown rows
    states: dict[str, int] = Field(default_factory=dict)
    min_group_dropout_students: int = MIN_GROUP_DROPOUT_STUDENTS
    per_group: dict[str, dict[str, GroupLabelQuality]] = Field(default_factory=dict)
    false_untraceable: int = 0  # as in GroupLabelQuality, over every group
    attainable_precision: float | None = None


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
