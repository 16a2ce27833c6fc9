"""`ews`: one command for every stage of the dropout early-warning service.

Each stage owns its commands (features/, training/, serving/, monitoring/); this module only
assembles them so `ews --help` lists the whole flow in order, adds the simulator's `ews simulate`,
and installs the simulator's truth evaluator behind the pipeline's `--truth` options
(features/evaluation.py): the entry point is the one place that may import both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from features.evaluation import TruthEvaluator

app = typer.Typer(
    name="ews",
    help=(
        "Dropout early-warning service for Thai basic education.\n\n"
        "The flow: simulate (or receive) deliveries -> ingest -> link -> features -> trainset -> "
        "train -> promote -> score -> serve -> monitor. Everything is kept under EWS_HOME "
        "(default ~/.ews)."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root() -> None:
    """Dropout early-warning service for Thai basic education."""


def _simulator_truth() -> TruthEvaluator:
    from simulator.evaluate import SimulatorTruth

    return SimulatorTruth()


def _register() -> None:
    # Imported here, not at module top, so `import ews.cli` stays cheap and side-effect free.
    from features import cli as features_cli
    from features.evaluation import install_truth_evaluator

    # `--truth` options of the pipeline ask features.evaluation for an evaluator; the pipeline never
    # imports the simulator, so the entry point (which may import both) installs the simulator's.
    install_truth_evaluator(_simulator_truth)

    features_cli.register(app)
    # The simulator is its own room: the pipeline never imports it, only this entry point does.
    from simulator.cli import simulate_command

    app.command("simulate")(simulate_command)
    from ews.demo import demo_command

    app.command("demo")(demo_command)
    from ews.notfound import register as register_notfound

    register_notfound(app)
    for module in ("training.cli", "serving.cli", "monitoring.cli"):
        try:
            mod = __import__(module, fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.register(app)


def main() -> None:
    _register()
    app()
