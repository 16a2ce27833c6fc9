"""How far the simulator's ceiling is from the dropouts that happened, in standard errors.

    python -m tests.support.ceiling OUT     # the figures of PROCESS.md §3 for a simulator output OUT

`truth/rounds.parquet` holds, per pupil and scoring round, the ceiling p_dropout = P(the term-end
draw is dropout | everything that happened by the round's as-of date) and the draw itself
(`dropout`). Within one round type the rows of a term are different pupils whose draws are
independent given that state, and a later term's residual y − p has mean 0 given everything before
its as-of date: the residuals are martingale differences, so under a correct ceiling
(observed − expected) / sqrt(Σ p(1 − p)) is approximately N(0, 1). The early and mid rows of one
term share one draw, so the two round types are judged apart, never pooled. Test code only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# |z| beyond this is a one-in-2,000 event under a correct ceiling
Z_LIMIT = 3.5
# below this many expected dropouts the normal approximation is too rough to judge a group
MIN_EXPECTED = 25.0


def ceiling_z(p: np.ndarray, y: np.ndarray) -> float:
    """(observed − expected dropouts) / the standard deviation of a sum of independent Bernoulli(p)."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    return float((y.sum() - p.sum()) / np.sqrt((p * (1 - p)).sum()))


def rows_with_a_known_shock(rounds: pd.DataFrame, shocks: pd.DataFrame) -> pd.DataFrame:
    """Round rows joined to each shock of the same term that arrived on or before the as-of date.

    The selection uses only what had happened by the as-of date, so within each (round type, shock)
    group the ceiling must still match the draws. A pupil with two known shocks is in two groups.
    """
    both = rounds.merge(shocks[["person_id", "academic_year", "term", "shock", "arrived_on"]],
                        on=["person_id", "academic_year", "term"])
    return both[both.arrived_on <= both.as_of]


def main(out: str) -> None:
    """Print, per round type of a simulator output folder, the figures PROCESS.md §3 quotes."""
    from pathlib import Path

    import pyarrow.parquet as pq
    from sklearn.metrics import roc_auc_score

    rounds = pq.read_table(Path(out) / "truth" / "rounds.parquet").to_pandas()
    print("round  rows  dropouts  expected  mean_p/realised  z  roc_auc(exact)")
    for kind in ("early", "mid"):
        r = rounds[rounds.round_type == kind]
        print(f"{kind}  {len(r)}  {int(r.dropout.sum())}  {r.p_dropout.sum():.1f}  "
              f"{r.p_dropout.sum() / r.dropout.sum():.3f}  {ceiling_z(r.p_dropout, r.dropout):+.2f}  "
              f"{roc_auc_score(r.dropout, r.p_dropout):.4f}")
    if "p_observable" in rounds.columns:
        observable_report(rounds)


def observable_report(rounds: pd.DataFrame, n_boot: int = 200) -> None:
    """The observable ceiling beside the full one (PROCESS.md §3b): its z, its ROC-AUC and how much
    the full one ranks better, with a 95% interval from a pupil-level bootstrap (all of a pupil's rows
    of the round type drawn together)."""
    from training.bootstrap import interval, student_weights
    from training.metrics import rank_metrics

    print("round  mean_p_observable/realised  z  roc_auc_observable  full-observable [95% interval]")
    for kind in ("early", "mid"):
        r = rounds[rounds.round_type == kind]
        y = r.dropout.to_numpy(dtype=float)
        w = np.vstack([np.ones(len(r)), student_weights(r.person_id.to_numpy(), n_boot, seed=0)])
        full, _ = rank_metrics(y, r.p_dropout.to_numpy(), w)
        obs, _ = rank_metrics(y, r.p_observable.to_numpy(), w)
        lo, hi = interval(full[1:] - obs[1:])
        print(f"{kind}  {r.p_observable.sum() / r.dropout.sum():.3f}  {ceiling_z(r.p_observable, r.dropout):+.2f}  "
              f"{obs[0]:.4f}  {full[0] - obs[0]:.4f} [{lo:.4f}, {hi:.4f}]")


if __name__ == "__main__":
    import sys

    main(sys.argv[1])
