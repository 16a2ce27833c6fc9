"""The simulator's ceiling (`simulator.process.ceiling`) against a brute-force enumeration.

The closed form folds the 2^K future-shock sets into two matrix products. The oracle here does it
the slow, obvious way: for one child at a time, every set of shocks by term end is listed
explicitly, its probability is the product of independent Bernoullis (a shock known by the as-of
date has arrived with probability 1, a future one with q_future), and the dropout share of the
class softmax is taken with that set's effects added to the logits. The two must agree to 1e-12 for
random children and for real children of a small simulated world. The probability that a shock
not yet arrived still comes (`future_shock_probs`) is checked day by day the same way.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

import simulator.process
import simulator.province
from simulator import SimulationConfig, simulate
from simulator.config import ProcessConfig, WorldConfig
from simulator.process import (
    C_DROP, C_STAY, N_CLASSES, ceiling, future_shock_probs, interaction_logits, shock_class_effects, softmax,
)
from simulator.world import N_SHOCKS

TOLERANCE = 1e-12


def brute_force_ceiling(L: np.ndarray, known: np.ndarray, q_future: np.ndarray, S: np.ndarray) -> np.ndarray:
    """P(dropout at term end), child by child, shock set by shock set."""
    out = np.zeros(len(L))
    for i in range(len(L)):
        for arrives in itertools.product((0, 1), repeat=N_SHOCKS):
            prob = 1.0
            for k, a in enumerate(arrives):
                p_k = 1.0 if known[i, k] else float(q_future[i, k])
                prob *= p_k if a else 1.0 - p_k
            if prob == 0.0:
                continue
            logits = L[i] + np.array(arrives, dtype=float) @ S
            out[i] += prob * softmax(logits[None, :])[0, C_DROP]
    return out


def random_children(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits like the process's (stay = 0, some classes impossible), known shocks and future probabilities."""
    L = rng.normal(-4.0, 2.0, (n, N_CLASSES))
    impossible = rng.random((n, N_CLASSES)) < 0.3
    impossible[:, [C_STAY, C_DROP]] = False
    L[impossible] = -np.inf
    L[:, C_STAY] = 0.0
    known = rng.random((n, N_SHOCKS)) < 0.3
    q_future = rng.uniform(0.0, 0.9, (n, N_SHOCKS))
    return L, known, q_future


def test_the_closed_form_matches_the_enumeration_for_random_children_and_random_effects() -> None:
    rng = np.random.default_rng(20260)
    L, known, q_future = random_children(rng, 400)
    # effects of every size and sign, different per shock and class, so any mismatch of a set's
    # probability with another set's effects shows
    S = rng.normal(0.0, 1.5, (N_SHOCKS, N_CLASSES))
    closed = ceiling(L, known, q_future, S)
    assert np.max(np.abs(closed - brute_force_ceiling(L, known, q_future, S))) <= TOLERANCE


def test_the_closed_form_matches_the_enumeration_with_the_process_effects() -> None:
    rng = np.random.default_rng(20261)
    L, known, q_future = random_children(rng, 400)
    S = shock_class_effects(ProcessConfig())
    closed = ceiling(L, known, q_future, S)
    assert np.max(np.abs(closed - brute_force_ceiling(L, known, q_future, S))) <= TOLERANCE


@pytest.mark.parametrize("shock", range(N_SHOCKS))
def test_a_known_shock_with_no_future_ones_adds_exactly_its_own_effect(shock: int) -> None:
    # nothing can still happen, so the ceiling is the softmax with the known shock's effects: the
    # issue's case (a known parent migration read as a teen pregnancy doubled p) in its simplest form
    S = shock_class_effects(ProcessConfig())
    L = np.full((1, N_CLASSES), -np.inf)
    L[0, C_STAY], L[0, C_DROP] = 0.0, -3.3
    known = np.zeros((1, N_SHOCKS), dtype=bool)
    known[0, shock] = True
    p = ceiling(L, known, np.zeros((1, N_SHOCKS)), S)[0]
    expected = 1.0 / (1.0 + math.exp(3.3 - S[shock, C_DROP]))
    assert abs(p - expected) <= TOLERANCE


def test_the_closed_form_matches_the_enumeration_for_children_of_a_simulated_world(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver's own inputs (state logits, known shocks, q_future at each as-of date), captured."""
    captured: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    interacted: list[np.ndarray] = []  # per ceiling call: which children's hazard has a non-additive part
    last_interaction: list[np.ndarray] = []
    rng = np.random.default_rng(5)

    def recording_interaction(pop: object, idx: np.ndarray, term: int) -> np.ndarray:
        out = interaction_logits(pop, idx, term)
        last_interaction[:] = [out]
        return out

    def recording_ceiling(L: np.ndarray, known: np.ndarray, q_future: np.ndarray, S: np.ndarray) -> np.ndarray:
        p = ceiling(L, known, q_future, S)
        # every child with a known shock or an interaction in the hazard (poverty x transition,
        # distance x the move, the lost CCT grant) is the interesting part; a sample of the others
        inter = last_interaction[0] != 0
        rows = np.flatnonzero(known.any(axis=1) | inter | (rng.random(len(L)) < 0.02))
        captured.append((L[rows], known[rows], q_future[rows], S, p[rows]))
        interacted.append(inter[rows])
        return p

    monkeypatch.setattr(simulator.province, "ceiling", recording_ceiling)
    monkeypatch.setattr(simulator.process, "interaction_logits", recording_interaction)
    simulate(SimulationConfig(world=WorldConfig(students=1500, years=1, seed=3)), tmp_path)
    assert len(captured) == 4  # two terms x two rounds
    L, known, q_future, p = (np.concatenate([c[i] for c in captured]) for i in (0, 1, 2, 4))
    S = captured[0][3]
    assert len(L) > 500 and all(known[:, k].any() for k in range(N_SHOCKS - 1))
    assert np.concatenate(interacted).sum() > 50  # the harder world's hazard is among the children checked
    assert np.max(np.abs(p - brute_force_ceiling(L, known, q_future, S))) <= TOLERANCE


@pytest.mark.parametrize("as_of", [100, 101, 130, 147, 159, 160])
def test_a_future_shock_probability_counts_the_term_days_one_by_one(as_of: int) -> None:
    # the driver draws an arrival day uniformly over start .. end - 1 and knows it on or before as_of
    start, end = 100, 160
    sp = np.array([[0.0, 0.08, 0.1, 0.9]])
    days = np.arange(start, end)
    arrives_later = sp * (days > as_of).sum() / len(days)
    not_known = 1 - sp * (days <= as_of).sum() / len(days)
    assert np.max(np.abs(future_shock_probs(sp, as_of, start, end) - arrives_later / not_known)) <= TOLERANCE
