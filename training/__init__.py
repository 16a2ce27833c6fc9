"""Training stage: temporal folds, a calibrated LightGBM risk model, baselines, fairness, MLflow registry.

Flow (one command, `ews train`): training set (features/pointintime) -> `splits` (train /
calibration / test rounds by time) -> `model` (booster + calibrator + risk-group thresholds) ->
`metrics`, `baselines`, `fairness` -> `registry` (MLflow run, "dropout-risk" version, aliases) ->
`card` (model card). `ews promote` / `ews rollback` move the `champion` alias through the gate.

For serving and monitoring: `training.registry.load_model(home, version=None)` -> `VersionedModel`
(`.model`, the fitted `training.model.RiskModel`; `.lineage`, a `training.version.ModelLineage`
whose `version` is a `ModelVersion`). `RiskModel.encode(frame)` is the one input encoding;
`risk_score`, `risk_group`, `raw_margin` and `contributions` read a frame or an encoded matrix.

Importing this package does no work: no MLflow URI is set, no folder created.
"""
