"""`ews notfound build|show`: the not-found list for Thailand Zero Dropout, per census.

The list itself is `features.pointintime.notfound`; this entry-point module only parses options,
prints counts (never a student key, ID or name) and, with `show --truth`, measures the list against
the simulator's truth (`simulator.evaluate_notfound`): the entry point is the one room that may
import both the pipeline and the simulator.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer

from features.calendar import SchoolCalendar
from features.clikit import HOME_HELP, emit_json, friendly_errors, load_home

notfound_app = typer.Typer(help="The not-found list for Thailand Zero Dropout: pupils of the previous census "
                                "who are in no system at this one.", no_args_is_help=True)


def _census(cal: SchoolCalendar, census: str | None, round_id: str | None) -> dt.date:
    from features.pointintime.notfound import census_of

    if (census is None) == (round_id is None):
        raise ValueError("give exactly one of --census DATE or --round ROUND")
    if census is not None:
        try:
            return dt.date.fromisoformat(census)
        except ValueError:
            raise ValueError(f"--census {census!r} is not a date (YYYY-MM-DD)") from None
    return census_of(cal, round_id)  # type: ignore[arg-type]


@notfound_app.command("build")
def build_command(
    census: str | None = typer.Option(None, "--census", help="Census date, e.g. 2024-06-10."),
    round_id: str | None = typer.Option(None, "--round", help="A round of the census's term, e.g. 2567-T1-early."),
    as_of: str | None = typer.Option(None, "--as-of", help="Use deliveries known by this date (default: the latest)."),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest."),
    home: Path | None = typer.Option(None, "--home", help=HOME_HELP),
) -> None:
    """Build and store one census's not-found list (notfound/<census>.parquet + .json under the home)."""
    from features.pointintime.notfound import build_notfound

    h = load_home(home)
    with friendly_errors("notfound build"):
        c = _census(h.calendar, census, round_id)
        m = build_notfound(h, c, dt.date.fromisoformat(as_of) if as_of else None)
    if json_out:
        emit_json(m)
        return
    typer.echo(f"census {m.census_date}: {m.cases:,} of {m.population:,} pupils of the census of {m.previous_census} "
               f"not found as of {m.as_of} ({m.by_state['not_found']:,} not found, {m.by_state['returned']:,} returned) "
               f"-> {m.file}")
    _caveats(m)


def _caveats(m: object) -> None:
    from features.pointintime.notfound import NotFoundManifest

    assert isinstance(m, NotFoundManifest)
    if m.provisional:
        typer.secho(f"{m.provisional:,} cases provisional: still awaited {', '.join(m.awaited)}", fg=typer.colors.YELLOW)
    if m.schools_without_census:
        typer.secho(f"{m.pending_school_census:,} pupils of {m.schools_without_census} schools not judged: their census "
                    f"of {m.census_date} not received by {m.as_of}", fg=typer.colors.YELLOW)
    if m.may_have_moved_up:
        typer.echo(f"{m.may_have_moved_up:,} cases finished P6 or M3 and may have moved up into a school whose census "
                   f"of {m.census_date} is missing: listed, each caveat names the school")
    if m.m6_untold:
        typer.echo(f"{m.m6_untold:,} M6 pupils with term-2 final marks and no exits row (completed or left): not listed")


@notfound_app.command("show")
def show_command(
    census: str | None = typer.Option(None, "--census", help="Census date (default: the latest built)."),
    round_id: str | None = typer.Option(None, "--round", help="A round of the census's term."),
    level: str = typer.Option("school", "--level", help="Counts per province, amphoe, tambon or school."),
    truth: Path | None = typer.Option(None, "--truth", help="Simulator truth folder: also print precision and "
                                                           "recall of the lists against it (evaluation only)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap draws (by student) for --truth intervals."),
    json_out: bool = typer.Option(False, "--json", help="Print a machine-readable summary."),
    home: Path | None = typer.Option(None, "--home", help=HOME_HELP),
) -> None:
    """Counts of a stored list per area or school (no student keys, IDs or names are printed)."""
    from features.pointintime.notfound import built_censuses, counts_by, load_notfound

    h = load_home(home)
    with friendly_errors("notfound show"):
        if census is None and round_id is None:
            built = built_censuses(h)
            if not built:
                raise FileNotFoundError(f"no not-found list under {h.root}: run `ews notfound build --census DATE`")
            c = built[0]
        else:
            c = _census(h.calendar, census, round_id)
        m, table = load_notfound(h, c)
        counts = counts_by(table, level)
        out: dict[str, object] = {"manifest": m.model_dump(mode="json"), "level": level, "counts": counts}
        if truth is not None:
            from features.pointintime.pipeline import warehouse_session
            from simulator.evaluate_notfound import evaluate_notfound

            with warehouse_session(h) as con:
                q = evaluate_notfound(con, truth, as_of=m.as_of, cal=h.calendar, bootstrap=bootstrap)
            out["quality"] = q.model_dump(mode="json")
    if json_out:
        emit_json(out)
        return
    typer.echo(f"census {m.census_date} (as of {m.as_of}): {m.cases:,} cases of {m.population:,} pupils, "
               f"{m.by_state['not_found']:,} not found, {m.by_state['returned']:,} returned")
    _caveats(m)
    typer.echo(f"{level:<10} {'code':<12} {'cases':>6} {'not found':>10} {'returned':>9} {'provisional':>12}  name")
    for row in counts:
        typer.echo(f"{level:<10} {str(row['code'] or '-'):<12} {row['cases']:>6} {row['not_found']:>10} "
                   f"{row['returned']:>9} {row['provisional']:>12}  {row['name'] or ''}")
    if truth is not None:
        q = out["quality"]
        o = q["overall"]  # type: ignore[index]

        def ci(x: dict[str, object]) -> str:
            return "n/a" if x["value"] is None else f"{x['value']:.3f} [{x['low']:.3f}, {x['high']:.3f}]"

        typer.echo(f"against the truth, {len(q['censuses'])} censuses as of {q['as_of']}: "  # type: ignore[index]
                   f"precision {ci(o['precision'])} (target ≥ 0.97), recall {ci(o['recall'])} (target ≥ 0.99); "
                   f"{o['listed']} listed, {o['truly_out']} truly out of {o['rows']} (base rate {o['base_rate']:.2%})")
        for g, groups in q["per_group"].items():  # type: ignore[index]
            for v, x in groups.items():
                typer.echo(f"  {g}={v}: precision {ci(x['precision'])}, recall {ci(x['recall'])} "
                           f"({x['listed']} listed, {x['truly_out']} truly out{'' if x['judged'] else ', too few to judge'})")
        mu, rest = q["moved_up_caveat"], q["without_moved_up_caveat"]  # type: ignore[index]
        if mu["listed"]:
            typer.echo(f"  cases with the moved-up caveat: precision {ci(mu['precision'])} ({mu['listed']} listed, "
                       f"{mu['true_positives']} truly out); the others: precision {ci(rest['precision'])}, "
                       f"recall {ci(rest['recall'])} ({rest['listed']} listed)")


def register(app: typer.Typer) -> None:
    app.add_typer(notfound_app, name="notfound")
