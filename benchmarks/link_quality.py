"""Linkage quality against the simulator's truth under LinkConfig settings: how a memory setting
(EM on a sample of its pairs, passes of ID tokens) changes the keys, if at all.

    python -m benchmarks.link_quality --home H --truth SIM/truth [--em-max-pairs N|none]
        [--partition-tokens N] [--out FILE]

RE-LINKS H (every link re-decided, as `ews link --relink`) with the given settings, then prints the
run's counts, EM's blocked pairs per pass, the pairwise precision and recall against the truth and
the label error share (simulator.evaluate.evaluate_linkage). Run it on two copies of one home and
compare the published keys to see whether a setting changed any. docs/ARCHITECTURE.md, "Engines":
on a 1M x 1 year world, EM on every pair (`--em-max-pairs none`) against the 8M run's sampling rate
(`--em-max-pairs 157000`, 3.5% of EM's first pass).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True, help="An ingested home; its keys are rewritten.")
    ap.add_argument("--truth", type=Path, required=True, help="The simulator's truth folder of the home's world.")
    ap.add_argument("--em-max-pairs", default=None, help="LinkConfig.em_max_pairs (a number, or none); default: the config's.")
    ap.add_argument("--partition-tokens", type=int, default=None, help="LinkConfig.partition_tokens; default: the config's.")
    ap.add_argument("--out", type=Path, default=None, help="Also write the result here (JSON).")
    return ap


def main(argv: list[str] | None = None) -> None:
    a = parser().parse_args(argv)
    from features.home import EwsHome
    from features.linkage.link import LinkConfig, link
    from features.pointintime.pipeline import warehouse_session
    from simulator.evaluate import evaluate_linkage

    overrides: dict[str, object] = {"keep_published_keys": False}
    if a.em_max_pairs is not None:
        overrides["em_max_pairs"] = None if a.em_max_pairs.lower() == "none" else float(a.em_max_pairs)
    if a.partition_tokens is not None:
        overrides["partition_tokens"] = a.partition_tokens
    home = EwsHome.from_env(a.home)
    t0 = time.perf_counter()
    summary = link(home, LinkConfig(**overrides))  # type: ignore[arg-type]
    with warehouse_session(home) as con:
        quality = evaluate_linkage(con, a.truth)
    out = {"benchmark": "link_quality", "settings": overrides, "seconds": round(time.perf_counter() - t0, 1),
           "students": summary.students, "candidate_pairs": summary.candidate_pairs,
           "passes": summary.parameters["passes"],
           "em_blocked_pairs": summary.parameters["splink_model"].get("em_blocked_pairs"),  # type: ignore[union-attr]
           "precision": quality.precision, "recall": quality.recall, "label_error_share": quality.label_error_share}
    text = json.dumps(out, indent=2, default=str)
    if a.out:
        a.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
