"""`ews simulate`: write a synthetic province (or country) of deliveries and its truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from simulator.scenarios import NAMED_SCENARIOS

# listed in --help; the names and what each changes live in simulator/scenarios.py
_SCENARIO_HELP = "; ".join(f"{name} ({text})" for name, (text, _) in NAMED_SCENARIOS.items())


def _load_faults(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(text) or {}
    return json.loads(text)


def simulate_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write into: deliveries/, truth/ and summary.json.")],
    students: Annotated[int, typer.Option("--students", help="Pupils enrolled in OBEC schools at the first census (10 June). About 100,000 is one province.")] = 100_000,
    years: Annotated[int, typer.Option("--years", help="Academic years to simulate (each has two terms and four scoring rounds).")] = 6,
    seed: Annotated[int, typer.Option("--seed", help="Random seed. The same seed and options give byte-identical files.")] = 7,
    first_year: Annotated[int, typer.Option("--first-year", help="First academic year in the Buddhist Era, e.g. 2563 (= 2020/21).")] = 2563,
    faults: Annotated[Path | None, typer.Option("--faults", help="YAML or JSON file with fault rates, e.g. {id_typo: 0.01, malformed_delivery: 0}.", exists=True, dir_okay=False)] = None,
    no_faults: Annotated[bool, typer.Option("--no-faults", help="Deliver clean data: switch every fault off.")] = False,
    no_malformed: Annotated[bool, typer.Option("--no-malformed", help="Keep the faults but never write a malformed file.")] = False,
    scenario: Annotated[str | None, typer.Option("--scenario", help=f"Change the world from a given term on, to see monitoring react: {_SCENARIO_HELP}.")] = None,
    scenario_from: Annotated[int | None, typer.Option("--scenario-from", help="First academic year (BE) of the scenario; default: the last simulated year.")] = None,
    scenario_term: Annotated[int, typer.Option("--scenario-term", min=1, max=2, help="First term (1 or 2) of the scenario in that year.")] = 1,
    interventions: Annotated[bool, typer.Option("--interventions", help="Schools act on their list each term (capacity, uptake, a randomised holdout; effects that differ by pupil and fade): truth/interventions.parquet and OUT/actions/. Off by default.")] = False,
    interventions_from: Annotated[int | None, typer.Option("--interventions-from", help="First academic year (BE) in which schools act; default: the first simulated year.")] = None,
    capacity: Annotated[float, typer.Option("--capacity", help="Share of a school's pupils it acts on in a term (with --interventions).")] = 0.10,
    uptake: Annotated[float, typer.Option("--uptake", help="Chance an offered action is received (with --interventions).")] = 0.8,
    holdout: Annotated[float, typer.Option("--holdout", help="Share of eligible pupils (or schools) held out at random (with --interventions); 0 = none.")] = 0.5,
    holdout_unit: Annotated[str, typer.Option("--holdout-unit", help="'pupil' (drawn each term) or 'school' (drawn once).")] = "pupil",
    json_out: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary (JSON) instead of tables.")] = False,
) -> None:
    """Simulate Thai schools term by term and write deliveries as the source systems would, plus the truth.

    The truth folder (never read by the pipeline) holds the real person behind every row, each
    child's status at every census, and for every pupil at every scoring round the true probability
    of dropping out by the next census: the ceiling any model can reach.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from simulator.api import simulate
    from simulator.config import FaultConfig, InterventionConfig, SimulationConfig, WorldConfig
    from simulator.scenarios import named_scenario

    fault_values: dict = _load_faults(faults) if faults else {}
    if no_faults:
        fault_values = {k: 0.0 for k in FaultConfig.model_fields}
    if no_malformed:
        fault_values["malformed_delivery"] = 0.0
    try:
        config = SimulationConfig(
            world=WorldConfig(students=students, years=years, seed=seed, first_year=first_year),
            faults=FaultConfig(**fault_values),
            scenario=None if scenario is None else named_scenario(
                scenario, first_year + years - 1 if scenario_from is None else scenario_from, scenario_term),
            interventions=None if not interventions else InterventionConfig(
                from_year=first_year if interventions_from is None else interventions_from, capacity_share=capacity,
                uptake=uptake, holdout_share=holdout, holdout_unit=holdout_unit),
        )
    except Exception as exc:  # pydantic's message names the bad field; named_scenario lists the names
        raise typer.BadParameter(str(exc)) from exc
    console = Console(stderr=True)
    if json_out:
        summary = simulate(config, out)
        typer.echo(summary.model_dump_json(indent=1))
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} province-years"),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("Preparing", total=1)

        def report(desc: str, done: int, total: int) -> None:
            bar.update(task, description=desc, completed=done, total=total)

        summary = simulate(config, out, progress=report)
    out_console = Console()
    t = Table(title=f"Simulated {summary.students:,} pupils x {summary.years} years in {', '.join(summary.provinces)}")
    t.add_column("source")
    t.add_column("rows", justify="right")
    for k, v in summary.rows_by_source.items():
        t.add_row(k, f"{v:,}")
    out_console.print(t)
    c = Table(title="Ceiling: ROC-AUC of the true dropout probability (next census)")
    for col in ("round type", "ROC-AUC", "rows", "dropouts"):
        c.add_column(col)
    for kind in ("early", "mid"):
        r = summary.ceiling.get(kind)
        if r:
            c.add_row(kind, f"{r['roc_auc']:.3f}", f"{r['rows']:,}", f"{r['dropouts']:,}")
    out_console.print(c)
    k = Table(title="Calibration against published figures")
    for col in ("figure", "simulated", "published", "within tolerance"):
        k.add_column(col)
    for name, v in summary.calibration["checks"].items():
        k.add_row(name, str(v["simulated"]), str(v["published"]), "yes" if v["within"] else "NO")
    out_console.print(k)
    out_console.print(f"{summary.deliveries} deliveries ({summary.late_deliveries} late; malformed: "
                      f"{', '.join(summary.malformed_deliveries) or 'none'}) in {summary.seconds:.1f} s -> {out}")
