"""Commands of the training stage: train, promote, rollback, models.

    ews train [--trainset NAME] [--truth DIR] [--config FILE] [--variants] [--json] [--home PATH]
    ews promote [--version N] [--override-reason TEXT] [--json] [--home PATH]
    ews rollback [--json] [--home PATH]
    ews models [--json] [--home PATH]
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from features.clikit import HOME_HELP, emit_json, friendly_errors, load_home

HomeOpt = Annotated[Path | None, typer.Option("--home", help=HOME_HELP)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Training config (JSON, see training/config.py); default: built-in.")]


def _f(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _quiet_mlflow() -> None:
    import logging

    from features.home import quiet_mlflow_progress

    # Progress bars and INFO lines from MLflow would drown the summary (and break --json on stdout).
    quiet_mlflow_progress()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def train_command(
    trainset: Annotated[str | None, typer.Option("--trainset", help="Training set name (default: the newest, trainsets/LATEST).")] = None,
    truth: Annotated[Path | None, typer.Option("--truth", help="Simulator truth folder: adds ceiling_* metrics (evaluation only).")] = None,
    config: ConfigOpt = None,
    variants: Annotated[bool, typer.Option("--variants", help="Also measure monotone on/off and one model per round type.")] = False,
    actions: Annotated[bool, typer.Option("--actions", help="Use the schools' assignment the warehouse holds (`ews ingest FOLDER` of assignment.csv, actions.csv): leave out the outcomes an action changed (config `actions`).")] = False,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Train, calibrate, evaluate and register a model version (champion if none yet, else challenger)."""
    from training.config import load_config
    from training.train import train

    _quiet_mlflow()
    with friendly_errors("train"):
        h = load_home(home)
        cfg = load_config(config)
        outcome = train(h, cfg, trainset=trainset, truth_dir=truth, variants=variants, actions=actions)
    summary = outcome.summary()
    for w in outcome.warnings:  # stderr: --json keeps stdout one document
        typer.secho(f"warning: {w}", fg=typer.colors.YELLOW, err=True)
    if json_out:
        emit_json(summary)
        return
    print_train_summary(summary)


def print_train_summary(s: dict[str, Any]) -> None:
    """The human summary of `ews train` (also for `ews demo`): headline metrics, ceiling gap, baselines."""
    from rich.console import Console
    from rich.table import Table

    m = s["metrics"]
    con = Console()
    con.print(f"[bold]dropout-risk v{s['version']}[/] registered as [bold]{s['alias']}[/] "
              f"(trainset {s['trainset']}, run {s['run_id'][:8]}, {s['best_iteration']} trees)")
    con.print(f"folds: train {', '.join(s['split']['train'])} | calibration {', '.join(s['split']['calibration'])} "
              f"| test {', '.join(s['split']['test'])}")
    t = Table(title="Test fold (latest labelled rounds)")
    cols = ["model", "ceiling", "gap", "logistic", "grade_term_lookup", "school_model", "abc_rule", "school_only",
            "cct_poverty"]
    t.add_column("metric")
    for c in cols:
        t.add_column(c, justify="right")
    for k in ("roc_auc", "pr_auc", "within_grade_roc_auc", "within_grade_pr_auc", "precision_at_5pct", "precision_at_10pct", "recall_at_10pct",
              "school_precision_at_10pct", "brier", "ece"):
        t.add_row(k, _f(m.get(k)), _f(m.get(f"ceiling_{k}")), _f(m.get(f"gap_{k}")),
                  *(_f(m.get(f"baselines.{b}.{k}")) for b in cols[3:]))
    con.print(t)
    ci = [(k, f"ci95_low.{k}", f"ci95_high.{k}") for k in (
        "roc_auc", "pr_auc", "gap_roc_auc", "observable.gap_roc_auc", "observable.gap_pr_auc",
        "versus.logistic.roc_auc", "versus.grade_term_lookup.roc_auc", "versus.grade_term_lookup.within_grade_roc_auc")]
    shown = [f"{k} {_f(m.get(k))} [{_f(m.get(lo))}, {_f(m.get(hi))}]" for k, lo, hi in ci if m.get(lo) is not None]
    if shown:
        con.print("95% student-level intervals (paired): " + "; ".join(shown))
    th = s["thresholds"]
    con.print(f"risk groups: problem ≥ {th['problem']:.4f} ({th['observed']['problem']['share']:.1%} of test, "
              f"dropout {th['observed']['problem']['dropout_rate']:.1%}); at-risk ≥ {th['at_risk']:.4f} "
              f"({th['observed']['at_risk']['share']:.1%}, dropout {th['observed']['at_risk']['dropout_rate']:.1%})")
    if s["fairness_failures"]:
        con.print(f"[yellow]fairness: {len(s['fairness_failures'])} gated ratio(s) outside the band[/]")
        for f in s["fairness_failures"][:8]:
            con.print(f"  - {f}")
    else:
        con.print("fairness: every judgeable gated group inside the band")
    con.print(f"model card: {s['model_card']}")


def promote_command(
    version: Annotated[int | None, typer.Option("--version", help="Version to promote (default: the challenger).")] = None,
    override_reason: Annotated[str | None, typer.Option("--override-reason", help="Promote despite the gate; the reason is recorded on the version.")] = None,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Make a version champion if it passes the release gate (better, calibrated, fair), or with a written override."""
    from training.registry import promote

    _quiet_mlflow()
    with friendly_errors("promote"):
        decision = promote(load_home(home), version, override_reason)
    if json_out:
        emit_json(asdict(decision))
    elif decision.promoted:
        how = "gate passed" if decision.passed else f"OVERRIDE recorded: {decision.override_reason}"
        if "finished_after_crash" in decision.checks:
            how += "; this finished the promotion a crash had interrupted"
        typer.secho(f"version {decision.candidate} is now champion ({how})", fg=typer.colors.GREEN)
    else:
        typer.secho(f"version {decision.candidate} NOT promoted (champion stays {decision.champion}):", fg=typer.colors.RED)
        for r in decision.reasons:
            typer.echo(f"  - {r}")
    if not decision.promoted:
        raise typer.Exit(1)


def rollback_command(json_out: JsonOpt = False, home: HomeOpt = None) -> None:
    """Restore the previous champion in one step."""
    from training.registry import rollback

    _quiet_mlflow()
    with friendly_errors("rollback"):
        res = rollback(load_home(home))
    if json_out:
        emit_json(asdict(res))
    else:
        typer.echo(f"champion rolled back from version {res.from_version} to version {res.to_version}"
                   + (" (this finished the rollback a crash had interrupted)" if res.finished_after_crash else ""))


def models_command(json_out: JsonOpt = False, home: HomeOpt = None) -> None:
    """List registered versions with their aliases and gate figures."""
    from training.registry import list_versions

    _quiet_mlflow()
    with friendly_errors("models"):
        versions = list_versions(load_home(home))
    if json_out:
        emit_json({"versions": [asdict(v) for v in versions]})
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title="dropout-risk versions")
    for c in ("version", "aliases", "trainset", "created", "gate metric", "ece", "fairness flags", "note"):
        t.add_column(c)
    for v in versions:
        note = "override: " + v.tags["promotion_override"] if "promotion_override" in v.tags else (
            "rolled back" if "rolled_back_at" in v.tags else "")
        t.add_row(str(v.version), ",".join(v.aliases), v.trainset, v.created,
                  f"{v.gate_metric}={_f(v.gate_metric_value)}", _f(v.ece), _f(v.fairness_failures), note)
    Console().print(t)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
    app.command("promote")(promote_command)
    app.command("rollback")(rollback_command)
    app.command("models")(models_command)
