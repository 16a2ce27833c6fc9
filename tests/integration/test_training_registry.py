"""The release lifecycle against a real MLflow store in tmp_path: train, register, alias, gate,
override, rollback; and the model card of every version. Synthetic training sets keep it fast."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from features.home import EwsHome
from training import registry
from training.config import FairnessConfig, GateConfig, ModelConfig, TrainConfig
from simulator.synthetic import synthetic_frame, write_synthetic_trainset
from training.train import train

pytestmark = pytest.mark.integration

FAST = ModelConfig(num_threads=1, n_estimators=120)
# A gate whose fairness and calibration parts pass on this data, so the metric comparison decides.
LENIENT = {"gate": GateConfig(max_ece=0.5, oe_band=(0.01, 100.0), slope_band=(0.01, 100.0)),
           "fairness": FairnessConfig(gate_attributes=())}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> EwsHome:
    h = EwsHome(root=tmp_path_factory.mktemp("ews"))
    write_synthetic_trainset(h, synthetic_frame(500, seed=5), name="ts-synthetic-a")
    return h


def test_the_release_lifecycle(home: EwsHome, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # 1. A deliberately weak first model (2 trees) becomes champion: there is nothing to gate against.
    weak = TrainConfig(model=FAST.model_copy(update={"n_estimators": 2}), shap_sample_rows=200, **LENIENT)
    v1 = train(home, weak, trainset="ts-synthetic-a")
    assert (v1.registered.version, v1.registered.alias) == (1, "champion")
    assert (home.mlflow_dir / "mlflow.db").exists()
    assert registry.load_model(home).lineage.version == 1

    # 2. A better model whose config demands an impossible ECE: registered as challenger, refused.
    strict = TrainConfig(model=FAST, gate=GateConfig(max_ece=1e-9), fairness=FairnessConfig(gate_attributes=()),
                         shap_sample_rows=200)
    v2 = train(home, strict, trainset="ts-synthetic-a")
    assert (v2.registered.version, v2.registered.alias) == (2, "challenger")
    refused = registry.promote(home)
    assert not refused.promoted and refused.candidate == 2
    assert any(r.startswith("ECE") for r in refused.reasons)
    assert refused.checks["improvement"] > 0  # it was better, only the calibration part failed
    assert registry.load_model(home).lineage.version == 1

    # 3. An override needs a written reason, and is recorded on the version.
    with pytest.raises(ValueError):
        registry.promote(home, override_reason="  ")
    forced = registry.promote(home, override_reason="pilot in two provinces, ECE checked by hand")
    assert forced.promoted and not forced.passed
    tags = {v.version: v for v in registry.list_versions(home)}[2].tags
    assert tags["promotion_override"] == "pilot in two provinces, ECE checked by hand"
    assert "ECE" in tags["promotion_override_failures"]
    assert registry.load_model(home).lineage.version == 2

    # 4. Rollback restores the previous champion in one step.
    back = registry.rollback(home)
    assert (back.from_version, back.to_version) == (2, 1)
    assert registry.load_model(home).lineage.version == 1

    # 5. A challenger that beats the champion on the agreed metric passes the gate by itself.
    v3 = train(home, TrainConfig(model=FAST, shap_sample_rows=200, **LENIENT), trainset="ts-synthetic-a")
    assert v3.registered.alias == "challenger"
    passed = registry.promote(home)
    assert passed.promoted and passed.passed, passed.reasons
    assert passed.checks["compared_on"].startswith("test fold of ts-synthetic-a")
    assert registry.load_model(home).lineage.version == 3

    # 6. A worse challenger is refused on the metric, with the figures in the reason.
    train(home, weak, trainset="ts-synthetic-a")
    worse = registry.promote(home)
    assert not worse.promoted
    assert any("does not beat the champion" in r for r in worse.reasons)

    history = registry.champion_history(home)
    assert [h["version"] for h in history] == [1, 2, 1, 3]
    aliases = {v.version: v.aliases for v in registry.list_versions(home)}
    assert aliases[3] == ["champion"] and aliases[4] == ["challenger"]


def test_the_registered_champion_scores_like_the_model_training_returned(tmp_path: Path) -> None:
    """The registry's stored form (booster + fitted state) must give back the very model training
    held in memory: same scores, groups and contributions on rows it never saw."""
    home = EwsHome(root=tmp_path / "ews")
    write_synthetic_trainset(home, synthetic_frame(500, seed=5), name="ts-synthetic-a")
    trained = train(home, TrainConfig(model=FAST, shap_sample_rows=200), trainset="ts-synthetic-a")
    in_memory = trained.result.model
    champion = registry.load_model(home)
    assert champion.lineage.version == trained.registered.version
    assert champion.lineage.run_id == trained.registered.run_id
    assert champion.lineage.trainset_name == "ts-synthetic-a"
    assert champion.lineage.trainset_fingerprint  # the training set's sha256, from the run's tags
    assert champion.model is not in_memory
    frame = synthetic_frame(500, seed=6).head(300)  # other students than the model was trained on
    scores = champion.model.risk_score(frame)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert np.array_equal(scores, in_memory.risk_score(frame))
    assert np.array_equal(champion.model.risk_group(frame), in_memory.risk_group(frame))
    assert np.array_equal(champion.model.contributions(frame), in_memory.contributions(frame))
    assert champion.model.features_ == in_memory.features_ and champion.model.features_.names[0] == "att_rate_term"
    assert champion.model.thresholds_.to_dict() == in_memory.thresholds_.to_dict()


@pytest.fixture(scope="module")
def one_version(tmp_path_factory: pytest.TempPathFactory) -> EwsHome:
    """A home with one trained, registered version, built here: the card and run tests read it and
    never depend on the lifecycle test having run before them (nor on the order tests run in)."""
    h = EwsHome(root=tmp_path_factory.mktemp("ews-one"))
    write_synthetic_trainset(h, synthetic_frame(500, seed=5), name="ts-synthetic-a")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        train(h, TrainConfig(model=FAST, shap_sample_rows=200, **LENIENT), trainset="ts-synthetic-a")
    return h


def test_every_version_has_a_model_card_with_every_section(one_version: EwsHome) -> None:
    from training.card import CARD_SECTIONS

    home = one_version
    cards = sorted((home.root / "model_cards").glob("dropout-risk-v*"))
    assert len(cards) >= 1
    for card in cards:
        md = (card / "model_card.md").read_text(encoding="utf-8")
        html = (card / "model_card.html").read_text(encoding="utf-8")
        for section in CARD_SECTIONS:
            assert f"## {section}" in md
            assert f"<h2>{section}</h2>" in html
        assert "data:image/png;base64," in html
        assert {p.name for p in (card / "plots").iterdir()} == {
            "reliability.png", "roc_pr.png", "precision_at_k.png", "shap_groups.png"}


def test_a_run_logs_config_manifest_metrics_plots_and_a_signed_model(one_version: EwsHome) -> None:
    client = registry.client_for(one_version)
    mv = client.get_model_version("dropout-risk", "1")
    run = client.get_run(mv.run_id)
    assert run.data.tags["trainset"] == "ts-synthetic-a"
    assert run.data.tags["trainset.delivery_fingerprint"].startswith("synthetic-")
    assert "git_commit" in run.data.tags
    assert "roc_auc" in run.data.metrics and "baselines.abc_rule.roc_auc" in run.data.metrics
    names = {a.path for a in client.list_artifacts(mv.run_id)}
    assert {"config.json", "trainset_manifest.json", "metrics.json", "plots", "fairness", "scoring", "model_card"} <= names
    metrics = json.loads(Path(client.download_artifacts(mv.run_id, "metrics.json")).read_text())
    assert "groups.sex.F.fpr" in metrics and "precision_at_10pct" in metrics
    import mlflow.models

    info = mlflow.models.get_model_info(f"models:/dropout-risk/{mv.version}")
    assert info.signature is not None
    assert [c.name for c in info.signature.inputs.inputs][:2] == ["att_rate_term", "att_rate_prev_term"]
