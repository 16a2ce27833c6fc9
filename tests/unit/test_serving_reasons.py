"""Reasons say a group's material effect on the published score, never context or a protected
attribute; a pupil with no material reason is told so ("several small factors together"), never
left with an empty cell; and the column-wise renderer writes exactly the per-row reference's text."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from features.pointintime.spec import BY_NAME, CONTEXT_FEATURES, FEATURE_NAMES, FEATURES, GROUPS, PROTECTED_FEATURES
from serving.model import ADDITIVITY_TOLERANCE, published_logit, to_published_scale
from serving.reasons import (
    GROUP_NAMES, MATERIAL_LOGODDS, group_matrix, group_sums, reason_groups, render_reasons, sentence, small_factors_of, top_reasons,
)
from tests.support.reasons_oracle import reasons_of_row, small_factors_of_row
from training.model import Calibrator, RiskModel

N_FEATURES = len(FEATURES)
NO_FACTOR_EN = "No factor in the pupil's records raises risk"
NO_FACTOR_TH = "ไม่มีปัจจัยใดในข้อมูลของนักเรียนที่เพิ่มความเสี่ยง"
SMALL = re.compile(r"^(Several small factors together|One small factor): .+ \(odds ×\d+\.\d\d; (none alone reaches|below) ×1\.10\)$")


def _is_reason_list(en: str) -> bool:
    """A list of material reasons (not the text of a pupil who has none)."""
    return bool(en) and en != NO_FACTOR_EN and not SMALL.match(en)


def _group_contrib(rng: np.random.Generator, n: int) -> np.ndarray:
    """Per-feature contributions like a round's (most small, a few large, both signs), with ties and
    values right at the materiality threshold mixed in, summed per reason group."""
    phi = rng.normal(0, 0.15, size=(n, N_FEATURES)) * (rng.random((n, N_FEATURES)) < 0.5)
    phi[rng.random((n, N_FEATURES)) < 0.03] *= 12
    gc = phi @ group_matrix(for_reasons=True)
    edge = rng.random(gc.shape) < 0.05
    gc[edge] = rng.choice([MATERIAL_LOGODDS, -MATERIAL_LOGODDS, np.nextafter(MATERIAL_LOGODDS, 0), 0.4, 0.0], size=edge.sum())
    return gc


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(("k", "raising_only"), [(3, True), (1, True), (9, False)])
def test_column_wise_reasons_are_the_per_row_reference_text(seed: int, k: int, raising_only: bool) -> None:
    gc = _group_contrib(np.random.default_rng(seed), 3000)
    th, en = render_reasons(gc, k, raising_only)
    expected = [reasons_of_row(row, k, raising_only) for row in gc]
    assert list(th) == [e[0] for e in expected]
    assert list(en) == [e[1] for e in expected]
    assert all(th) and all(en)  # never an empty cell
    assert sum(_is_reason_list(t) for t in en) > 100  # the draw gives reasons to many rows
    if raising_only:  # (either way, nearly every row has a material group)
        assert sum(not _is_reason_list(t) for t in en) > 100  # and small factors (or none) to many others


def test_one_pupils_reasons_rank_as_the_lists_rank_them() -> None:
    gc = _group_contrib(np.random.default_rng(4), 200)
    _, en = render_reasons(gc)
    assert [" | ".join(r["en"] for r in top_reasons(row)) or small_factors_of(row)["en"] for row in gc] == list(en)


def test_the_roles_name_features_of_the_catalogue_and_cover_sex_nationality_disability_and_the_calendar() -> None:
    assert CONTEXT_FEATURES <= set(FEATURE_NAMES) and PROTECTED_FEATURES <= set(FEATURE_NAMES)
    assert not CONTEXT_FEATURES & PROTECTED_FEATURES
    assert {"sex", "non_thai_id", "disability"} <= PROTECTED_FEATURES
    assert {"grade", "term", "is_mid_round", "age"} <= CONTEXT_FEATURES
    assert all(BY_NAME[f].role == "protected" for f in PROTECTED_FEATURES)
    assert all(BY_NAME[f].role == "context" for f in CONTEXT_FEATURES)


@pytest.mark.parametrize("feature", sorted(PROTECTED_FEATURES | CONTEXT_FEATURES))
def test_a_protected_or_context_feature_is_never_a_reason_however_large(feature: str) -> None:
    j = FEATURE_NAMES.index(feature)
    phi = np.zeros((2, N_FEATURES))
    phi[0, j], phi[1, j] = 5.0, -5.0  # odds x148 and x1/148
    gc = phi @ group_matrix(for_reasons=True)
    for raising_only in (True, False):
        th, en = render_reasons(gc, k=len(GROUPS), raising_only=raising_only)
        assert list(th) == [NO_FACTOR_TH] * 2 and list(en) == [NO_FACTOR_EN] * 2


def test_a_group_of_context_and_protected_features_only_can_never_be_a_reason() -> None:
    for gi, g in enumerate(GROUP_NAMES):
        roles = {f.role for f in FEATURES if f.group == g}
        assert bool(reason_groups()[gi]) == ("reason" in roles)
        if "reason" not in roles:
            gc = np.zeros((1, len(GROUP_NAMES)))
            gc[0, gi] = 3.0
            assert render_reasons(gc)[1][0] == NO_FACTOR_EN


def test_a_reason_needs_odds_of_at_least_x1_10_either_way() -> None:
    g = int(np.flatnonzero(reason_groups())[0])
    just_below, at = np.nextafter(math.log(1.10), 0), math.log(1.10)
    gc = np.zeros((4, len(GROUP_NAMES)))
    gc[:, g] = [just_below, at, -just_below, -at]
    _, en = render_reasons(gc, raising_only=False)
    assert [_is_reason_list(t) for t in en] == [False, True, False, True]
    _, raising = render_reasons(gc, raising_only=True)
    assert [_is_reason_list(t) for t in raising] == [False, True, False, False]
    # just below the threshold is a small factor, its odds rounded down so it never reads "x1.10; below x1.10"
    label = GROUPS[GROUP_NAMES[g]][0]
    assert raising[0] == f"One small factor: {label} (odds ×1.09; below ×1.10)"
    assert list(raising[2:]) == [NO_FACTOR_EN] * 2


def test_a_sentence_says_the_groups_effect_and_no_single_features_value() -> None:
    gc = _group_contrib(np.random.default_rng(5), 2000)
    _, en = render_reasons(gc, k=len(GROUPS), raising_only=False)
    labels = "|".join(re.escape(GROUPS[g][0]) for g in GROUP_NAMES)
    piece = re.compile(rf"^({labels}): (raises|lowers) risk \(odds ×\d+\.\d\d\)$")
    pieces = [p for t in en if _is_reason_list(t) for p in t.split(" | ")]
    assert pieces and all(piece.match(p) for p in pieces)
    feature_labels = {f.en for f in FEATURES} - {GROUPS[g][0] for g in GROUP_NAMES}
    assert not any(lbl in p for p in pieces for lbl in feature_labels)


def test_a_raising_sentence_is_never_given_for_a_lowering_group() -> None:
    g = int(np.flatnonzero(reason_groups())[0])
    assert "lowers risk" in sentence(GROUP_NAMES[g], -0.5, "en") and "raises risk" in sentence(GROUP_NAMES[g], 0.5, "en")
    gc = np.zeros((1, len(GROUP_NAMES)))
    gc[0, g] = -2.0
    assert render_reasons(gc, raising_only=True)[1][0] == NO_FACTOR_EN


def _model(calibrator: Calibrator) -> RiskModel:
    model = RiskModel(calibration=calibrator.method)
    model.calibrator_ = calibrator
    return model


def _raw_contrib(rng: np.random.Generator, n: int, base: float) -> np.ndarray:
    phi = np.zeros((n, N_FEATURES + 1))
    phi[:, :-1] = rng.normal(0, 0.4, size=(n, N_FEATURES)) * (rng.random((n, N_FEATURES)) < 0.4)
    phi[:, -1] = base
    return phi


@pytest.mark.parametrize("seed", [1, 2])
def test_platt_contributions_add_up_to_the_published_logit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cal = Calibrator.from_dict({"method": "platt", "a": float(rng.uniform(0.7, 1.5)), "b": float(rng.uniform(-1, 1))})
    model = _model(cal)
    raw = _raw_contrib(rng, 5000, base=-4.2)
    score = model.risk_score_from_margin(raw.sum(axis=1))
    pub, residual = to_published_scale(model, raw, score)
    assert np.abs(residual).max() <= ADDITIVITY_TOLERANCE
    assert np.abs(pub.sum(axis=1) - published_logit(score)).max() <= ADDITIVITY_TOLERANCE
    # scaled by the slope, the intercept in the base: a group's odds multiplier is the published odds'
    assert np.allclose(pub[:, :-1], cal.a_ * raw[:, :-1], rtol=0, atol=1e-15)
    assert np.allclose(pub[:, -1], cal.a_ * raw[:, -1] + cal.b_, rtol=0, atol=1e-15)
    assert np.array_equal(to_published_scale(model, raw.copy(), score, inplace=True)[0], pub)  # scoring's way


def test_a_pupil_beyond_the_calibrators_clip_is_counted_as_not_adding_up() -> None:
    model = _model(Calibrator.from_dict({"method": "platt", "a": 1.3, "b": -0.2}))
    raw = _raw_contrib(np.random.default_rng(3), 10, base=-4.0)
    raw[0, 0] = -30.0  # raw probability far below the clip of 1e-6
    score = model.risk_score_from_margin(raw.sum(axis=1))
    _, residual = to_published_scale(model, raw, score)
    assert abs(residual[0]) > ADDITIVITY_TOLERANCE and np.abs(residual[1:]).max() <= ADDITIVITY_TOLERANCE


def test_isotonic_contributions_are_rescaled_to_add_up_keeping_their_signs() -> None:
    rng = np.random.default_rng(7)
    x = np.sort(rng.uniform(0.001, 0.4, 30))
    cal = Calibrator.from_dict({"method": "isotonic", "x": x.tolist(), "y": np.sort(rng.uniform(0.002, 0.5, 30)).tolist()})
    model = _model(cal)
    raw = _raw_contrib(rng, 3000, base=-3.5)
    score = model.risk_score_from_margin(raw.sum(axis=1))
    pub, residual = to_published_scale(model, raw, score)
    moved = np.abs(raw[:, :-1].sum(axis=1)) > 1e-12
    assert np.abs(residual[moved]).max() <= ADDITIVITY_TOLERANCE
    assert np.all(np.sign(pub[:, :-1]) * np.sign(raw[:, :-1]) >= 0)  # a step map is non-decreasing
    assert np.all(pub[:, -1] == published_logit(model.risk_score_from_margin(raw[:1, -1]))[0])


def test_no_rows_render_no_reasons_and_the_longest_lists_render_like_short_ones() -> None:
    th, en = render_reasons(np.zeros((0, len(GROUP_NAMES))))
    assert len(th) == 0 and len(en) == 0
    gc = _group_contrib(np.random.default_rng(6), 500)
    _, long = render_reasons(gc, k=9, raising_only=False)
    assert list(long) == [reasons_of_row(row, 9, raising_only=False)[1] for row in gc]


def _only(**groups: float) -> np.ndarray:
    gc = np.zeros((1, len(GROUP_NAMES)))
    for g, v in groups.items():
        gc[0, GROUP_NAMES.index(g)] = v
    return gc


def test_a_pupil_with_no_material_reason_is_told_several_small_factors_together_naming_the_largest() -> None:
    # four small raising groups (each under x1.10), one lowering, and a large context-only group
    gc = _only(attendance=0.05, academic=0.08, poverty=0.03, welfare=0.02, mobility=-0.5, transition=2.0)
    th, en = render_reasons(gc)
    together = math.floor(math.exp(0.08 + 0.05 + 0.03) * 100)  # the three largest: x1.17
    assert en[0] == ("Several small factors together: Academic results, Attendance, Poverty and household "
                     f"(odds ×1.{together % 100:02d}; none alone reaches ×1.10)")
    assert th[0] == ("หลายปัจจัยเล็กน้อยรวมกัน: ผลการเรียน, การมาเรียน, ความยากจนและครัวเรือน "
                     f"(โอกาส ×1.{together % 100:02d}; ไม่มีปัจจัยใดถึง ×1.10)")
    one = small_factors_of(_only(care=0.04, transition=1.0))
    assert one["groups"] == ["care"] and one["en"] == "One small factor: Student-care screening (odds ×1.04; below ×1.10)"


def test_a_material_reason_is_shown_alone_and_small_factors_are_not_added_to_it() -> None:
    _, en = render_reasons(_only(attendance=0.3, academic=0.05, poverty=0.04))
    assert en[0] == f"Attendance: raises risk (odds ×{math.exp(0.3):.2f})"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_small_factors_name_only_reason_groups_that_raise_risk_largest_first_with_their_summed_effect(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # every feature moves, context and protected ones by far the most; reason features stay small
    phi = rng.normal(0, 0.03, size=(2000, N_FEATURES))
    for f in PROTECTED_FEATURES | CONTEXT_FEATURES:
        phi[:, FEATURE_NAMES.index(f)] = rng.normal(0, 2.0, 2000)
    gc = phi @ group_matrix(for_reasons=True)
    allowed = set(np.array(GROUP_NAMES)[reason_groups()])
    seen = 0
    for row in gc:
        if top_reasons(row):
            continue
        s = small_factors_of(row)
        values = [float(row[GROUP_NAMES.index(g)]) for g in s["groups"]]
        assert set(s["groups"]) <= allowed
        assert all(0 < v < MATERIAL_LOGODDS for v in values) and values == sorted(values, reverse=True)
        raising = sorted((v for g, v in zip(GROUP_NAMES, row, strict=True) if g in allowed and v > 0), reverse=True)
        assert values == raising[: len(values)] and len(values) == min(3, len(raising))
        assert s["contribution"] == pytest.approx(sum(values), abs=1e-15)
        assert (s["en"], s["th"]) == small_factors_of_row(row)[::-1]
        seen += 1
    assert seen > 500  # the draw leaves many rows with no material reason


def test_no_scored_pupils_cell_is_empty_and_none_holds_the_lists_separator() -> None:
    gc = np.vstack([_group_contrib(np.random.default_rng(8), 2000), np.zeros((1, len(GROUP_NAMES))),
                    -np.abs(_group_contrib(np.random.default_rng(9), 50))])
    th, en = render_reasons(gc)
    assert all(th) and all(en)
    for t in [*th, *en]:
        if not _is_reason_list(t):
            assert " | " not in t  # the pupil sheet and the lists split reasons on it
    assert en[2000] == NO_FACTOR_EN and th[2000] == NO_FACTOR_TH


def test_rendering_reasons_leaves_the_contributions_as_they_were() -> None:
    gc = _group_contrib(np.random.default_rng(10), 500)
    before = gc.copy()
    render_reasons(gc)
    render_reasons(gc, k=9, raising_only=False)
    assert np.array_equal(gc, before)  # base + contributions = the published logit is not touched


def test_the_pupil_sheet_and_the_excel_download_show_a_flagged_pupils_small_factors() -> None:
    import io

    import openpyxl

    from serving.exports import to_xlsx
    from serving.sheet import pupil_sheet

    th, en = render_reasons(_only(attendance=0.05, academic=0.04, transition=2.5))
    row = {"risk_score": 0.09, "risk_group": "problem", "reasons_th": th[0], "reasons_en": en[0]}
    page = pupil_sheet(name=None, student_key="k1", school_name=None, school_code="1", grade="M1", room=1,
                       round_id="2566-T2-mid", snapshot_hash="h", row=row, values={}, history=[], actions=[])
    assert f"<li>{th[0]}</li>" in page  # one item, the whole text (it holds no list separator)
    book = openpyxl.load_workbook(io.BytesIO(to_xlsx([{**row, "rank": 1, "grade": "M1", "student_key": "k1"}], "t")))
    assert th[0] in [c.value for r in book.active.iter_rows() for c in r]


@pytest.mark.parametrize("seed", [0, 1])
def test_a_pupils_group_sums_are_the_same_bytes_whatever_batch_they_are_scored_in(seed: int) -> None:
    # Spark's mapInPandas batches and DuckDB's chunks cut a round differently; a pupil's published
    # group contributions must not depend on the cut (a matrix product's blocking may).
    rng = np.random.default_rng(seed)
    contrib = rng.normal(0, 0.3, size=(997, N_FEATURES)) * rng.random((997, N_FEATURES)) ** 3
    for reasons_only in (False, True):
        whole = group_sums(contrib, for_reasons=reasons_only)
        assert np.allclose(whole, contrib @ group_matrix(for_reasons=reasons_only), rtol=0, atol=1e-12)
        pieces = np.vstack([group_sums(contrib[a:a + 13], for_reasons=reasons_only) for a in range(0, 997, 13)])
        assert np.array_equal(whole, pieces)
        assert np.array_equal(group_sums(contrib[5], for_reasons=reasons_only), whole[5])
