"""Seed-bagged boosters merged into one: K boosters fitted on the same rows with different row
subsamples, published as ONE LightGBM booster whose raw margin is the mean of theirs.

Where it sits: `training.model.RiskModel` fits every refitted booster of `refit="crossfit"` (the
published one and each out-of-fold one) `ModelConfig.bag_seeds` times with `member_params` and
merges them with `merge_boosters`; stage A and its early stopping are untouched. Why one booster
and not K: the registered artefact, scoring, SHAP (LightGBM's `pred_contrib`, `shap.TreeExplainer`,
`serving.fastshap`) and the scoring-time additivity check all read one LightGBM model, and a sum of
trees stays exactly explainable tree by tree.

The merge works on LightGBM's model text (`Booster.model_to_string`, format "v4"): the K models'
trees are concatenated and renumbered, every `leaf_value` (what prediction reads), `internal_value`
(what `dump_model` and shap's parser read) and `shrinkage` (a record) is divided by K, and the
header's `tree_sizes` and the `feature_importances` block are rewritten for the merged trees.
Counts (`leaf_count`, `internal_count`, weights) are unchanged: TreeSHAP's cover fractions are per
tree. A booster's start score (`boost_from_average`) sits in its first tree's leaves, so dividing
every tree by K keeps the mean exact. Categorical splits (`cat_boundaries`, `cat_threshold`) and
monotone constraints live per tree or in the shared header and carry over as they are.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import lightgbm as lgb
import numpy as np

# Row subsampling of each bag member. Without it K boosters on the same rows differ only through
# `feature_fraction` (0.9); 0.8 of the rows per tree, redrawn every tree, is the usual stochastic
# gradient boosting setting (Friedman 2002: 0.5-0.8) and keeps leaves of `min_child_samples` rows
# near their unbagged size (7 leaves of >= 300 rows out of ~200,000).
BAGGING_FRACTION = 0.8

# The fields divided by K, each written as LightGBM writes it: leaf values with 17 significant
# digits (a double round-trips), internal values and shrinkage with 6 (what LightGBM keeps of them).
_SCALED = {"leaf_value": "%.17g", "internal_value": "%g", "shrinkage": "%g"}
_TREE = re.compile(r"^Tree=\d+\n", re.MULTILINE)


def member_params(params: dict[str, Any], member: int) -> dict[str, Any]:
    """LightGBM parameters of bag member `member` (0-based): `params` plus row subsampling every
    tree, with bagging and feature-fraction seeds derived from `params["seed"]` and the member
    alone (deterministic; `data_random_seed` is not changed, so every member bins the rows alike
    and one Dataset serves all of them)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(params["seed"]) % 2**32, member]))
    bagging_seed, feature_fraction_seed = (int(s) for s in rng.integers(1, 2**31 - 1, size=2))
    return {**params, "bagging_fraction": BAGGING_FRACTION, "bagging_freq": 1,
            "bagging_seed": bagging_seed, "feature_fraction_seed": feature_fraction_seed}


def merge_boosters(boosters: Sequence[lgb.Booster]) -> lgb.Booster:
    """One booster whose raw margin is the mean of `boosters`' raw margins (see `merge_model_strings`)."""
    if len(boosters) == 1:
        return boosters[0]
    merged = lgb.Booster(model_str=merge_model_strings([b.model_to_string() for b in boosters]))
    # A booster read from text says best_iteration -1; `lgb.train` without early stopping says 0, and
    # callers read "0 -> every tree" (training.pipeline counts the published trees so).
    merged.best_iteration = 0
    return merged


def merge_model_strings(models: Sequence[str]) -> str:
    """The model text of the mean of `models` (LightGBM model texts of single-output boosters with
    the same header: same features, bins and objective, as boosters fitted on one Dataset have).
    The parameters block and `pandas_categorical` trailer are the first model's."""
    if not models:
        raise ValueError("merging boosters needs at least one model")
    parts = [_split(text) for text in models]
    header, _, importances_rest = parts[0]
    for i, (other, _, rest) in enumerate(parts[1:], start=1):
        if _without_sizes(other) != _without_sizes(header):
            raise ValueError(f"booster {i} has another header (features, bins or objective) than booster 0: "
                             "bag members must be fitted on the same Dataset")
        if _trailer(rest) != _trailer(importances_rest):
            raise ValueError(f"booster {i} has another pandas_categorical trailer than booster 0")
    fields = dict(line.split("=", 1) for line in header if "=" in line)
    if fields.get("num_tree_per_iteration", "1") != "1" or "average_output" in header:
        raise ValueError("only single-output gradient-boosted models can be merged (binary or regression objective)")
    k = len(models)
    trees = [_scaled_tree(tree, k) for _, model_trees, _ in parts for tree in model_trees]
    blocks = [f"Tree={i}\n{body}" for i, body in enumerate(trees)]
    head = [f"tree_sizes={' '.join(str(len(b)) for b in blocks)}" if line.startswith("tree_sizes=") else line
            for line in header]
    names = fields["feature_names"].split(" ")
    return ("\n".join(head) + "\n\n" + "".join(blocks) + "end of trees\n\n"
            + _importances(names, blocks) + _after_importances(importances_rest))


def _split(text: str) -> tuple[list[str], list[str], str]:
    """(header lines, tree bodies without their `Tree=i` line, everything after `end of trees`)."""
    if "end of trees" not in text or not text.startswith("tree\n"):
        raise ValueError("not a LightGBM model text (model_to_string)")
    before, after = text.split("end of trees", 1)
    starts = [m.start() for m in _TREE.finditer(before)]
    if not starts:
        raise ValueError("a model without trees cannot be merged")
    header = before[:starts[0]].rstrip("\n").split("\n")
    bodies = [before[a:b] for a, b in zip(starts, starts[1:] + [len(before)], strict=True)]
    return header, [_TREE.sub("", body, count=1) for body in bodies], after


def _scaled_tree(body: str, k: int) -> str:
    lines = body.split("\n")
    out = []
    for line in lines:
        key, sep, value = line.partition("=")
        if key == "is_linear" and value.strip() not in ("", "0"):
            raise ValueError("linear trees (linear_tree=true) cannot be merged by scaling leaf values")
        if sep and key in _SCALED:
            # v / k, not v * (1 / k): one rounding per value.
            value = " ".join(_SCALED[key] % (float(v) / k) for v in value.split(" ") if v)
            line = f"{key}={value}"
        out.append(line)
    return "\n".join(out)


def _importances(names: list[str], blocks: list[str]) -> str:
    """The `feature_importances:` block LightGBM writes: split counts > 0, most used first, ties in
    feature order (its stable sort)."""
    counts = np.zeros(len(names), dtype=np.int64)
    for block in blocks:
        match = re.search(r"^split_feature=(.*)$", block, re.MULTILINE)
        if match and match.group(1).strip():
            np.add.at(counts, np.array(match.group(1).split(" "), dtype=np.int64), 1)
    order = sorted((j for j in range(len(names)) if counts[j] > 0), key=lambda j: -counts[j])
    return "feature_importances:\n" + "".join(f"{names[j]}={counts[j]}\n" for j in order)


def _after_importances(rest: str) -> str:
    """What follows the importances block in the first model's text (parameters, trailer)."""
    at = rest.find("\nparameters:")
    if at < 0:
        at = rest.find("\npandas_categorical:")
    return rest[at:] if at >= 0 else ""


def _without_sizes(header: list[str]) -> list[str]:
    return [line for line in header if not line.startswith("tree_sizes=")]


def _trailer(rest: str) -> str:
    at = rest.find("pandas_categorical:")
    return rest[at:] if at >= 0 else ""
