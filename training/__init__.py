"""Training stage: temporal folds, a calibrated LightGBM risk model, baselines, fairness, MLflow registry.

Flow (one command, `ews train`): training set (features/pointintime) -> `splits` (train /
calibration / test rounds by time) -> `model` (booster + calibrator + risk-group thresholds) ->
`metrics`, `baselines`, `fairness` -> `registry` (MLflow run, "dropout-risk" version, aliases) ->
`card` (model card). `ews promote` / `ews rollback` move the `champion` alias through the gate.

For serving: `training.registry.load_champion(home) -> LoadedModel`, then
`LoadedModel.score(features_frame)` -> student_key, round_id, school_code, raw_score, risk_score,
risk_group; `LoadedModel.model` is the `training.model.RiskModel` (booster, calibrator,
categories, thresholds, features).

Importing this package does no work: no MLflow URI is set, no folder created.
"""
