"""A published round explains the published score: for every scored pupil base + contributions is
the logit of the score the school sees, the points add up to that score, SHAP is LightGBM's own, and
the reasons in the lists are the per-row reference's text (never context, never a protected feature),
and no flagged pupil's cell is empty."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from features.home import EwsHome
from features.pointintime.spec import FEATURE_NAMES, GROUPS
from serving.fastshap import tree_shap
from serving.model import ADDITIVITY_TOLERANCE, published_logit, shap_tables
from serving.reasons import GROUP_NAMES, group_matrix, probability_scale, reason_groups
from serving.snapshot import SnapshotRef, published
from tests.integration.serving_fixtures import ScoredWorld
from tests.support.reasons_oracle import reasons_of_row

pytestmark = [pytest.mark.integration]
NO_FACTOR_EN = "No factor in the pupil's records raises risk"
SMALL_NAMES = re.compile(r"^(?:Several small factors together|One small factor): (.+) \(odds ×\d+\.\d\d; (?:none alone reaches|below) ×1\.10\)$")


def _is_reason_list(en: str) -> bool:
    """A list of material reasons, not the text of a pupil who has none."""
    return bool(en) and en != NO_FACTOR_EN and not SMALL_NAMES.match(en)


def _rounds(scored_world: ScoredWorld) -> list[tuple[SnapshotRef, pd.DataFrame]]:
    home = EwsHome(root=scored_world.root)
    out = []
    for rid in (scored_world.round_id, scored_world.census_round):
        ref = published(home, rid)
        assert ref is not None
        out.append((ref, ref.students().to_pandas()))
    return out


def test_every_scored_pupil_adds_up_to_the_published_logit_within_1e_9(scored_world: ScoredWorld) -> None:
    for ref, t in _rounds(scored_world):
        s = t[t["scored"]]
        assert len(s) > 100
        phi = s[ref.manifest.columns.columns("contribution")].to_numpy(dtype=float)
        residual = phi.sum(axis=1) + s["base_value"].to_numpy(dtype=float) - published_logit(s["risk_score"].to_numpy(dtype=float))
        assert np.abs(residual).max() <= ADDITIVITY_TOLERANCE  # 100% of scored pupils
        e = ref.manifest.explanation
        assert e is not None and e.additivity_failures == 0 and e.max_additivity_error <= ADDITIVITY_TOLERANCE
        # one base per round, stored in the manifest, with the probability the points start from
        assert np.all(s["base_value"].to_numpy(dtype=float) == e.base_logit)
        assert e.base_probability == pytest.approx(1 / (1 + np.exp(-e.base_logit)), rel=1e-12)


def test_probability_points_add_up_to_the_published_score_minus_the_base_probability(scored_world: ScoredWorld) -> None:
    for ref, t in _rounds(scored_world):
        s = t[t["scored"]]
        phi = s[ref.manifest.columns.columns("contribution")].to_numpy(dtype=float)
        base = s["base_value"].to_numpy(dtype=float)
        score = s["risk_score"].to_numpy(dtype=float)
        points = phi * probability_scale(published_logit(score), base)[:, None]
        assert np.abs(points.sum(axis=1) - (score - 1 / (1 + np.exp(-base)))).max() <= 1e-12


def test_fast_treeshap_on_the_champion_is_lightgbms_pred_contrib_to_1e_9(scored_world: ScoredWorld) -> None:
    from training.registry import load_model

    model = load_model(EwsHome(root=scored_world.root)).model
    ref, t = _rounds(scored_world)[0]
    frame = t.loc[t["scored"], list(ref.manifest.columns.model_inputs.values())]
    frame.columns = list(ref.manifest.columns.model_inputs)
    x = model.encode(frame)
    mine = tree_shap(shap_tables(model), x)
    assert np.abs(mine - model.booster_.predict(x, pred_contrib=True)).max() <= 1e-9


def test_the_lists_reasons_are_the_per_row_reference_text_and_name_reason_groups_only(scored_world: ScoredWorld) -> None:
    allowed = {GROUPS[g][0] for g, ok in zip(GROUP_NAMES, reason_groups(), strict=True) if ok}
    for ref, t in _rounds(scored_world):
        s = t[t["scored"]]
        gc = s[ref.manifest.columns.columns("contribution")].to_numpy(dtype=float) @ group_matrix(for_reasons=True)
        expected = [reasons_of_row(row, ref.manifest.config.top_reasons) for row in gc]
        assert list(s["reasons_th"]) == [e[0] for e in expected]
        assert list(s["reasons_en"]) == [e[1] for e in expected]
        flagged = s[s["risk_group"] != "normal"]
        assert flagged["reasons_en"].astype(bool).all()  # no flagged pupil is left with an empty cell
        material = s["reasons_en"].map(_is_reason_list)
        assert material[flagged.index].mean() > 0.5  # most flagged pupils get a material reason
        named = {p.split(":")[0] for text in s.loc[material, "reasons_en"] for p in text.split(" | ")}
        assert named and named <= allowed
        # the others are told which small reason groups raise risk together (never context or protected)
        for text in s.loc[~material, "reasons_en"]:
            m = SMALL_NAMES.match(text)
            assert text == NO_FACTOR_EN or (m and set(m.group(1).split(", ")) <= allowed), text
        assert list(ref.manifest.features) == list(FEATURE_NAMES)
