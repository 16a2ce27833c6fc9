"""The release: the gate a version passes before it becomes champion, promotion, rollback, history.

The registered model's tag `champion_history` lists every change of champion with its reason, and
`champion_stack` the versions that were champion (latest last), so `rollback` restores the
previous one in one step. The gate compares candidate and champion on the candidate's test fold.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from features.home import EwsHome
from training.config import TrainConfig
from training.registry.journal import Entry, Probe, Write, commit, no_probe, take_recovered
from training.registry.store import client_for, model_name, raw_client, run_json
from training.registry.versions import CHALLENGER, CHAMPION, alias_version, load_model
from training.version import ModelVersion

HISTORY_TAG = "champion_history"  # event log: every change of champion, with its reason
STACK_TAG = "champion_stack"  # versions that were champion, latest last: rollback pops it


def _history(client: Any, name: str) -> list[dict[str, Any]]:
    rm = client.get_registered_model(name)
    return json.loads(rm.tags.get(HISTORY_TAG, "[]"))


def _stack(client: Any, name: str) -> list[ModelVersion]:
    return [ModelVersion.parse(v) for v in json.loads(client.get_registered_model(name).tags.get(STACK_TAG, "[]"))]


def history_writes(client: Any, name: str, version: ModelVersion, reason: str, push: bool = True,
                   stack: list[ModelVersion] | None = None) -> list[Write]:
    """The writes that record a change of champion (and, with `push`, stack it for rollback), with
    their final values computed now, so replaying them after a crash records the change once.
    `stack`: the stack to write instead of the current one (rollback pops it)."""
    hist = _history(client, name)
    hist.append({"version": int(version), "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "reason": reason})
    # Tags are limited in length: keep the latest events (the runs themselves keep the rest).
    while len(json.dumps(hist)) > 4500:
        hist.pop(0)
    writes = [Write("model_tag", (HISTORY_TAG, json.dumps(hist)))]
    if stack is None and push:
        stack = [*_stack(client, name), version]
    if stack is not None:
        writes.insert(0, Write("model_tag", (STACK_TAG, json.dumps([int(v) for v in stack][-200:]))))
    return writes


def champion_history(home: EwsHome, cfg: TrainConfig | None = None) -> list[dict[str, Any]]:
    client = client_for(home, cfg)
    return _history(client, model_name(cfg))


@dataclass
class GateDecision:
    candidate: ModelVersion
    champion: ModelVersion | None
    passed: bool
    promoted: bool
    reasons: list[str]
    checks: dict[str, Any]
    override_reason: str | None = None


def _run_config(client: Any, run_id: str) -> TrainConfig:
    path = client.download_artifacts(run_id, "config.json")
    return TrainConfig.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))


def evaluate_gate(home: EwsHome, candidate: ModelVersion | int | None = None, cfg: TrainConfig | None = None) -> GateDecision:
    """Check the release gate for `candidate` (default: the challenger) without changing anything.

    1. better than the champion on the agreed metric, both scored on the candidate's test fold
       (the latest fold the candidate's training set labelled) — not on each one's own fold;
    2. calibrated: on that fold the intervals of O/E (overall and per term) and of the calibration
       slope do not lie wholly outside their bands (and the equal-mass ECE <= max_ece, if set);
    3. fair: no judgeable group of a gated attribute whose interval lies wholly outside the band
       (more missed dropouts than the reference group, or O/E within the group off)."""
    from training.data import load_trainset
    from training.metrics import calibration_breaches, greater_is_better, score_metrics
    from training.pipeline import split_trainset

    client = client_for(home, cfg)
    name = model_name(cfg)
    if candidate is None:
        candidate = alias_version(client, name, CHALLENGER)
        if candidate is None:
            raise RuntimeError("no challenger to promote: train one, or name a version with --version")
    candidate = ModelVersion.parse(candidate)
    champion = alias_version(client, name, CHAMPION)
    cand = load_model(home, version=candidate, cfg=cfg)
    run_cfg = cfg or _run_config(client, cand.lineage.run_id)
    gate = run_cfg.gate
    metrics = run_json(client, cand.lineage.run_id, "metrics.json")
    reasons: list[str] = []
    checks: dict[str, Any] = {"metric": gate.metric, "oe_band": list(gate.oe_band), "slope_band": list(gate.slope_band),
                              "max_ece": gate.max_ece, "band": list(run_cfg.fairness.band)}
    if champion == candidate:
        reasons.append(f"version {candidate} is already the champion")
    if champion is not None and champion != candidate:
        champ = load_model(home, version=champion, cfg=cfg)
        try:
            ts = load_trainset(home, cand.lineage.trainset_name)
            _, folds = split_trainset(ts, run_cfg)
            test = folds["test"]
            y = test["label"].to_numpy(dtype=float)
            school = test["school_code"].astype(str).to_numpy()
            cm = score_metrics(y, cand.model.risk_score(test), school, run_cfg.capacities)
            hm = score_metrics(y, champ.model.risk_score(test), school, run_cfg.capacities)
            checks["compared_on"] = f"test fold of {cand.lineage.trainset_name}"
        except FileNotFoundError:
            # The training set is gone from this home: fall back to each run's logged figure.
            cm = metrics
            hm = run_json(client, champ.lineage.run_id, "metrics.json")
            checks["compared_on"] = "each version's own logged test fold (training set not found)"
        checks["candidate"] = cm.get(gate.metric)
        checks["champion"] = hm.get(gate.metric)
        better = (cm[gate.metric] - hm[gate.metric]) if greater_is_better(gate.metric) else (hm[gate.metric] - cm[gate.metric])
        checks["improvement"] = better
        if not better > gate.min_improvement:
            reasons.append(f"{gate.metric} {cm[gate.metric]:.4f} does not beat the champion's {hm[gate.metric]:.4f} "
                           f"(required margin {gate.min_improvement})")
    checks.update({k: metrics.get(f"calibration.{k}") for k in ("oe", "oe_lo", "oe_hi", "slope", "slope_lo", "slope_hi")})
    reasons.extend(f"calibration: {r}" for r in calibration_breaches(metrics, gate.oe_band, gate.slope_band, gate.oe_slices))
    ece_value = float(metrics.get("ece", float("nan")))
    checks["ece"] = ece_value
    if gate.max_ece is not None and not ece_value <= gate.max_ece:
        reasons.append(f"ECE {ece_value:.4f} above {gate.max_ece}")
    failures = run_json(client, cand.lineage.run_id, "fairness/gate_failures.json")["failures"]
    checks["fairness_failures"] = failures
    reasons.extend(f"fairness: {f}" for f in failures)
    return GateDecision(candidate=candidate, champion=champion, passed=not reasons, promoted=False,
                        reasons=reasons, checks=checks)


def _finished_promotion(entry: Entry) -> GateDecision:
    """The decision a promotion interrupted by a crash carried out, as its re-run reports it."""
    d = entry.summary
    champion = d.get("champion")
    return GateDecision(
        candidate=ModelVersion.parse(d["candidate"]), champion=ModelVersion.parse(champion) if champion else None,
        passed=bool(d["passed"]), promoted=True, reasons=list(d["reasons"]),
        checks={**d["checks"], "finished_after_crash": entry.id}, override_reason=d.get("override_reason"))


def promote(home: EwsHome, version: ModelVersion | int | None = None, override_reason: str | None = None,
            cfg: TrainConfig | None = None, probe: Probe = no_probe) -> GateDecision:
    """Make `version` (default: the challenger) champion if it passes the gate, or if an override
    reason is given (recorded on the version); otherwise change nothing and return the reasons.

    The change is one journalled transaction (`training.registry.journal`): re-running promote
    after a crash finishes the interrupted promotion and reports it, instead of failing for want of
    a challenger or promoting twice."""
    if override_reason is not None and not override_reason.strip():
        raise ValueError("an override needs a written reason")
    finished = take_recovered(home, raw_client(home, cfg), "promote")
    if finished is not None and (
            version is None or ModelVersion.parse(version) == ModelVersion.parse(finished.summary["candidate"])):
        return _finished_promotion(finished)
    decision = evaluate_gate(home, version, cfg)
    client = client_for(home, cfg)
    name = model_name(cfg)
    v = str(decision.candidate)
    if decision.champion == decision.candidate:
        return decision
    if not decision.passed and override_reason is None:
        client.set_model_version_tag(name, v, "last_gate_refusal", json.dumps(decision.reasons, ensure_ascii=False)[:4900])
        return decision
    if not decision.passed:
        decision.override_reason = override_reason.strip()  # type: ignore[union-attr]

    def build(client: Any) -> Entry:
        # The gate ran without the lock: if another promotion or rollback landed meanwhile, the
        # comparison is stale.
        if alias_version(client, name, CHAMPION) != decision.champion:
            raise RuntimeError("the champion changed while the gate was being checked: run promote again")
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        writes: list[Write] = []
        if decision.override_reason is not None:
            writes += [Write("version_tag", (v, "promotion_override", decision.override_reason)),
                       Write("version_tag", (v, "promotion_override_failures",
                                             json.dumps(decision.reasons, ensure_ascii=False)[:4900]))]
        writes += [Write("version_tag", (v, "promoted_at", now)),
                   Write("version_tag", (v, "promotion_gate", json.dumps(decision.checks, default=str)[:4900])),
                   Write("drop_alias", (CHALLENGER, v)),
                   Write("alias", (CHAMPION, v)),
                   *history_writes(client, name, decision.candidate,
                                   "gate passed" if decision.passed else f"override: {decision.override_reason}")]
        summary = {"candidate": int(decision.candidate),
                   "champion": int(decision.champion) if decision.champion is not None else None,
                   "passed": decision.passed, "reasons": decision.reasons, "override_reason": decision.override_reason,
                   "checks": json.loads(json.dumps(decision.checks, default=str))}
        return Entry(op="promote", model=name, writes=writes, summary=summary)

    commit(home, client, build, probe)
    decision.promoted = True
    return decision


@dataclass
class RollbackResult:
    from_version: ModelVersion
    to_version: ModelVersion
    finished_after_crash: bool = False  # this re-run finished a rollback a crash interrupted


def rollback(home: EwsHome, cfg: TrainConfig | None = None, reason: str = "rollback",
             probe: Probe = no_probe) -> RollbackResult:
    """Restore the previous champion (from the champion stack) in one step, as one journalled
    transaction: re-running it after a crash finishes the interrupted rollback (and reports it)
    instead of rolling back a second time."""
    finished = take_recovered(home, raw_client(home, cfg), "rollback")
    if finished is not None:
        return RollbackResult(from_version=ModelVersion.parse(finished.summary["from"]),
                              to_version=ModelVersion.parse(finished.summary["to"]), finished_after_crash=True)
    client = client_for(home, cfg)
    name = model_name(cfg)

    def build(client: Any) -> Entry:
        current = alias_version(client, name, CHAMPION)
        stack = _stack(client, name)
        # The stack ends with the current champion; below it, the champion it replaced.
        while stack and stack[-1] == current:
            stack.pop()
        if current is None or not stack:
            raise RuntimeError("no previous champion to roll back to")
        previous = stack[-1]
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        writes = [Write("alias", (CHAMPION, str(previous))),
                  Write("version_tag", (str(current), "rolled_back_at", now)),
                  *history_writes(client, name, previous, f"{reason}: from version {current}", stack=stack)]
        return Entry(op="rollback", model=name, writes=writes, summary={"from": int(current), "to": int(previous)})

    entry = commit(home, client, build, probe)
    assert entry is not None  # build never returns None
    return RollbackResult(from_version=ModelVersion.parse(entry.summary["from"]),
                          to_version=ModelVersion.parse(entry.summary["to"]))
