"""`ews monitor --round R`: the round's monitoring report, and an exit code a scheduler can alert on.

    ews monitor --round 2568-T1-mid [--config FILE] [--actions [--holdout-unit pupil|school]] [--json] [--home PATH]

Exit 0: no threshold breached. Exit 3 (configurable): a threshold is breached; the message says
which statistic, at what value, and whether retraining is recommended. Exit 2: the round cannot be
monitored (not published, no training set, no warehouse).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from features.clikit import HOME_HELP, emit_json, friendly_errors, load_home


def monitor_command(
    round_id: Annotated[str, typer.Option("--round", help="Published round to monitor, e.g. 2568-T1-mid.")],
    config: Annotated[Path | None, typer.Option("--config", help="Monitoring config (JSON, see monitoring/config.py).")] = None,
    actions: Annotated[bool, typer.Option("--actions", help="Use the schools' assignment the warehouse holds (who was served, held out at random, acted on; `ews ingest FOLDER` of assignment.csv, actions.csv): outcomes are judged on the untreated and the effect of acting is estimated from the holdout.")] = False,
    holdout_unit: Annotated[str, typer.Option("--holdout-unit", help="How the holdout was drawn: 'pupil' or 'school' (the bootstrap resamples that unit).")] = "pupil",
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable report on stdout.")] = False,
    home: Annotated[Path | None, typer.Option("--home", help=HOME_HELP)] = None,
) -> None:
    """Data quality, drift, outcomes and fairness of a round; a verdict on retraining.

    Writes EWS_HOME/monitoring/<round>/report.json and report.html."""
    import logging

    from features.calendar import parse_round
    from features.home import quiet_mlflow_progress
    from monitoring.config import load_config
    from monitoring.report import monitor_round, write_report

    quiet_mlflow_progress()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    with friendly_errors("monitor"):
        r = parse_round(round_id)  # once, here: everything below takes the ScoringRound
        cfg = load_config(config)
        h = load_home(home)
        if holdout_unit not in ("pupil", "school"):
            raise typer.BadParameter(f"--holdout-unit must be pupil or school, not {holdout_unit!r}")
        report = monitor_round(h, r, cfg, actions=actions, design=f"holdout by {holdout_unit}")
        paths = write_report(h, report)
    v = report.verdict
    if json_out:
        emit_json(report)
    else:
        typer.echo(f"{round_id}: {v.summary}")
        for reason in v.reasons:
            typer.echo(f"  - {reason}")
        typer.echo(f"report: {paths['html']}")
    if v.alert:
        typer.secho(f"ALERT {round_id}: {len(v.breaches)} threshold(s) breached; "
                    f"retraining {'recommended' if v.retrain_recommended else 'not recommended'}. "
                    f"First: {v.breaches[0].message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(cfg.alert_exit_code)


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor_command)
