"""`ews demo`: the main job end to end on embedded defaults.

Simulate a province -> ingest every delivery -> link identities -> build a training set with a
cutoff before the last simulated term -> train and register a champion -> score a round of that
later term -> monitor it against rounds the model was fitted on -> serve the lists. Each stage
prints what it did; figures that can be checked against the simulator's truth are checked.
Stages whose package is not installed are skipped with a note, so the demo always runs what
the project has.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def _stage(title: str) -> float:
    console.rule(f"[bold]{title}")
    return time.perf_counter()


def _done(t0: float) -> None:
    console.print(f"[dim]({time.perf_counter() - t0:.1f} s)[/dim]")


def demo_command(
    home: Path = typer.Option(Path(".ews-demo"), "--home", help="Folder for everything the demo keeps."),
    students: int = typer.Option(100_000, help="Students at the first census (about one province)."),
    # Four at least: training needs a year whose labels are known before a calibration school year, which
    # comes before the test term, and the demo then scores and monitors a round after the cutoff. With
    # three, `ews train` refused after simulate, ingest, link and trainset had run (about 90 s at 1,500).
    years: int = typer.Option(4, min=4, help="Academic years to simulate (at least 4: a training year, a calibration year, a test term and a monitored round after the cutoff)."),
    seed: int = typer.Option(7, help="Random seed of the simulation."),
    serve: bool = typer.Option(True, help="End by starting the service (Ctrl-C stops it)."),
) -> None:
    """Run the whole service on a simulated province, printing each stage's figures."""
    from features.home import EwsHome

    h = EwsHome.from_env(home).ensure()  # the deployment of the demo, built once here
    sim = h.simulation_dir

    t0 = _stage(f"1. Simulate {students:,} students over {years} years (seed {seed})")
    from simulator.api import simulate
    from simulator.config import SimulationConfig

    summary = simulate(SimulationConfig.small(students=students, years=years, seed=seed), sim)
    console.print(
        f"{summary.persons:,} children, {summary.deliveries} deliveries "
        f"({len(summary.malformed_deliveries)} malformed, {summary.late_deliveries} late) in {sim}/deliveries; "
        f"ceiling ROC-AUC early {summary.ceiling['early']['roc_auc']:.3f}, mid {summary.ceiling['mid']['roc_auc']:.3f}"
    )
    _done(t0)

    t0 = _stage("2. Ingest every delivery (received = accepted + quarantined, per file)")
    from features.ingest.pipeline import ingest_path

    report = ingest_path(sim / "deliveries", h)
    table = Table("delivery", "file", "received", "accepted", "quarantined", "repaired", "encoding", "status")
    for d in report.deliveries:
        for f in d.files or [None]:
            if f is None:
                table.add_row(d.delivery_id, "-", "", "", "", "", "", f"{d.status}: {d.message or ''}"[:60])
            else:
                table.add_row(d.delivery_id, f.source_file, f"{f.received:,}", f"{f.accepted:,}", f"{f.quarantined:,}",
                              f"{f.repaired:,}", f.encoding, d.status)
    console.print(table)
    tot = report.totals()
    console.print(f"Total: {tot.model_dump()}")
    _done(t0)

    t0 = _stage("3. Link identities into one pseudonymous student_key per child")
    from simulator.evaluate import evaluate_labels, evaluate_linkage
    from features.linkage.link import link
    from features.pointintime.pipeline import TrainsetConfig, build_trainset, warehouse_session

    ls = link(h)
    with warehouse_session(h) as con:
        q = evaluate_linkage(con, sim / "truth")
    console.print(
        f"{ls.records:,} records -> {ls.students:,} students ({ls.review_clusters} clusters sent to review). "
        f"Against the truth: pairwise precision {q.precision:.4f}, recall {q.recall:.4f} "
        f"(identity records: {q.identity_rows.precision:.4f} / {q.identity_rows.recall:.4f}); "
        f"labels wrong because of linkage: {q.label_error_share:.3%}"
    )
    _done(t0)

    from ews.demo_later import monitoring_plan

    plan = monitoring_plan(h)  # the round monitored later, and the training cutoff before its term
    t0 = _stage(f"4. Point-in-time training set: what was known by {plan.cutoff}")
    ts = build_trainset(h, TrainsetConfig(cutoff=plan.cutoff))
    with warehouse_session(h) as con:
        lq = evaluate_labels(con, sim / "truth")
    console.print(
        f"{ts.name}: {ts.rows:,} labelled student-rounds over {len(ts.rounds)} rounds, dropout rate {ts.label_rate:.2%}, "
        f"{ts.unlabelled_rows:,} unlabelled left out. Labels agree with the truth on {lq.agreement:.3%} "
        f"of {lq.rows_compared:,} rows. Round {plan.round_id} is after the cutoff: scored and monitored in steps 6-7."
    )
    _done(t0)

    if importlib.util.find_spec("training.pipeline") is None:
        console.print("[yellow]Training stage not installed yet: the demo ends here.[/yellow]")
        return
    from ews.demo_later import later_stages

    later_stages(h, sim, ts.name, serve=serve, console=console, plan=plan)
