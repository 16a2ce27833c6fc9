"""The demo after the training set: train -> score -> monitor -> tokens -> serve.

Each step runs the real `ews` command in a child process, exactly as an analyst or a scheduler
would, so the demo shows what those commands print and fails loudly if one of them fails.

The demo plays time forward once: the model is trained on what was known the day before the last
simulated term began (`monitoring_plan`), then that term happens, and its mid round is scored and
monitored against rounds the model was fitted on. Monitoring a round the model has already seen
(or its own test fold) would compare the model with itself and always say "keep the model".
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from features.home import EwsHome


def _ews(args: list[str], console: Console, ok_codes: tuple[int, ...] = (0,)) -> str:
    """Run `ews ARGS`, stream nothing, return stdout; stop the demo on an unexpected exit code."""
    proc = subprocess.run([sys.executable, "-m", "ews", *args], capture_output=True, text=True, check=False)
    if proc.returncode not in ok_codes:
        console.print(proc.stdout[-3000:])
        console.print(f"[red]{proc.stderr[-3000:]}[/red]")
        raise SystemExit(f"`ews {' '.join(args)}` failed with exit code {proc.returncode}")
    return proc.stdout


@dataclass(frozen=True)
class MonitoringPlan:
    """The round the demo scores and monitors, and the training cutoff before it."""

    round_id: str
    cutoff: dt.date


def monitoring_plan(home: EwsHome) -> MonitoringPlan:
    """The newest round whose census is in the warehouse (the one a school would ask for now), and a
    training cutoff the day before its term's first round: the model knows nothing of that term.

    Worked example (a 4-year world from 2563): the newest scorable round is 2566-T2-mid; its term's
    first round, 2566-T2-early, has as-of 2023-12-01, so the cutoff is 2023-11-30. The training set
    then ends with 2566-T1-mid (labelled by the 2566 term-2 census, delivered by then), and
    2566-T2-mid is scored, and its outcomes judged, after the model was trained."""
    from features.calendar import ScoringRound
    from features.pointintime.pipeline import available_rounds, connect_warehouse, latest_delivery

    cal = home.calendar
    con = connect_warehouse(home)
    try:
        last = latest_delivery(con)
        rounds = [r for r in available_rounds(con, cal) if cal.as_of(r.round_id) <= last]
    finally:
        con.close()
    rnd = rounds[-1]
    first = ScoringRound(academic_year=rnd.academic_year, term=rnd.term, round_type="early")
    return MonitoringPlan(round_id=rnd.round_id, cutoff=cal.as_of(first) - dt.timedelta(days=1))


def later_stages(home: EwsHome, sim: Path, trainset: str, serve: bool, console: Console,
                 plan: MonitoringPlan | None = None) -> None:
    h = ["--home", str(home.root)]
    plan = plan or monitoring_plan(home)

    console.rule("[bold]5. Train, calibrate, evaluate against the ceiling and baselines, register")
    # The command's own summary: model vs ceiling vs baselines, risk groups, fairness, model card.
    console.print(_ews(["train", "--trainset", trainset, "--truth", str(sim / "truth"), *h], console))

    rnd = plan.round_id
    console.rule(f"[bold]6. A term later: score round {rnd} with the champion (risk groups + SHAP reasons)")
    console.print(f"The champion was trained on what was known by {plan.cutoff}; round {rnd} comes after that.")
    console.print(_ews(["score", "--round", rnd, *h], console))

    console.rule(f"[bold]7. Monitor round {rnd}: data quality, drift, outcomes, fairness")
    # Exit code 3 means a threshold was breached: the report says which and why.
    console.print(_ews(["monitor", "--round", rnd, *h], console, ok_codes=(0, 3)))  # names its report
    _print_reference(home, rnd, console)

    console.rule("[bold]8. Demo access tokens (shown once; stored hashed)")
    school, area = _demo_school_and_area(home, rnd)
    for args in (["--role", "school", "--school", school, "--label", "demo school"],
                 ["--role", "area", "--area", area, "--label", "demo area team"],
                 ["--role", "auditor", "--label", "demo auditor"],
                 ["--role", "analyst", "--label", "demo analyst"]):
        tok = json.loads(_ews(["tokens", "create", *args, "--json", *h], console))
        scope = {"school": f"school {school}", "area": f"amphoe {area}"}.get(args[1], "")
        console.print(f"  {args[1]:8s} {scope:18s} token: [bold]{tok.get('token')}[/bold]")

    if not serve:
        return
    console.rule("[bold]9. Serving (Ctrl-C stops it)")
    console.print("Open http://127.0.0.1:3000/ews/ in a browser and paste the school token.")
    subprocess.run([sys.executable, "-m", "ews", "serve", "--port", "3000", *h], check=False)


def _print_reference(home: EwsHome, round_id: str, console: Console) -> None:
    """What the round was compared with: the report's reference rounds (fitted rounds before it)."""
    from features.calendar import parse_round
    from monitoring.report import read_report

    r = read_report(home, parse_round(round_id))
    if r.reference_rounds:
        console.print(f"Drift reference: round(s) {', '.join(r.reference_rounds)} ({r.reference_rows:,} rows, from the "
                      f"{r.reference_source}), compared with {r.current_rows:,} rows of {round_id}.")
    else:
        console.print(f"Drift reference: none ({r.drift_note}).")
    console.print(f"Outcomes: {'judged on ' + format(r.outcomes.rows, ',') + ' pupils whose outcome is now known' if r.outcomes.matured else r.outcomes.note}.")


def _demo_school_and_area(home: EwsHome, round_id: str) -> tuple[str, str]:
    """The largest school of the round and its amphoe, for the demo tokens."""
    from features.calendar import parse_round
    from features.pointintime.pipeline import connect_warehouse

    cal = home.calendar
    r = parse_round(round_id)
    con = connect_warehouse(home)
    try:
        row = con.execute(
            """SELECT c.school_code, substr(s.tambon_code, 1, 4) FROM wh.src_dmc_census c
               JOIN wh.src_schools s USING (school_code)
               WHERE c.census_date = ? GROUP BY ALL ORDER BY count(*) DESC, 1 LIMIT 1""",
            [cal.census_date(r.academic_year, r.term)],
        ).fetchall()[0]
    finally:
        con.close()
    return row[0], row[1]
