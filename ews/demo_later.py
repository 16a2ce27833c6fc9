"""The demo after the training set: train -> score -> monitor -> tokens -> serve.

Each step runs the real `ews` command in a child process, exactly as an analyst or a scheduler
would, so the demo shows what those commands print and fails loudly if one of them fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
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


def _latest_scorable_round(home: EwsHome) -> str:
    """The newest round whose census is in the warehouse (the one a school would ask for now)."""
    from features.pointintime.pipeline import available_rounds, connect_warehouse, latest_delivery

    cal = home.calendar
    con = connect_warehouse(home)
    try:
        last = latest_delivery(con)
        rounds = [r for r in available_rounds(con, cal) if cal.as_of(r.round_id) <= last]
    finally:
        con.close()
    return rounds[-1].round_id


def later_stages(home: EwsHome, sim: Path, trainset: str, serve: bool, console: Console) -> None:
    h = ["--home", str(home.root)]

    console.rule("[bold]5. Train, calibrate, evaluate against the ceiling and baselines, register")
    # The command's own summary: model vs ceiling vs baselines, risk groups, fairness, model card.
    console.print(_ews(["train", "--trainset", trainset, "--truth", str(sim / "truth"), *h], console))

    rnd = _latest_scorable_round(home)
    console.rule(f"[bold]6. Score round {rnd} with the champion (risk groups + SHAP reasons)")
    console.print(_ews(["score", "--round", rnd, *h], console))

    console.rule(f"[bold]7. Monitor round {rnd}: data quality, drift, outcomes, fairness")
    # Exit code 3 means a threshold was breached: the report says which and why.
    console.print(_ews(["monitor", "--round", rnd, *h], console, ok_codes=(0, 3)))  # names its report

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
