"""`ews features` and `ews trainset`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer

from features.clikit import HOME_HELP, emit_json, friendly_errors, load_home


def features_command(
    round_id: str = typer.Option(..., "--round", help="Scoring round, e.g. 2568-T1-early (BE year, term, early|mid)."),
    json_out: bool = typer.Option(False, "--json", help="Print a machine-readable summary."),
    home: Path | None = typer.Option(None, "--home", help=HOME_HELP),
    chunk_rows: int | None = typer.Option(
        None, "--chunk-rows", min=1,
        help="Pupils per chunk of whole schools on DuckDB (memory only: the file is the same); default 500,000."),
) -> None:
    """Build one round's features from what was known on the round's as-of date.

    Writes features/<round>.parquet (one row per student enrolled at the round) and a manifest
    with missing rates per feature under EWS_HOME.
    """
    from features.pointintime.pipeline import write_feature_set

    with friendly_errors("features"):
        m = (write_feature_set(load_home(home), round_id) if chunk_rows is None
             else write_feature_set(load_home(home), round_id, chunk_rows=chunk_rows))
    if json_out:
        emit_json(m)
        return
    typer.echo(f"{m.round_id}: {m.rows:,} students as of {m.as_of} -> {m.file}")
    if m.population is not None and (m.population.census_late or m.population.school_fallbacks):
        typer.secho(f"{m.round_id}: {m.population.caveat()['en']}", fg=typer.colors.YELLOW)  # type: ignore[index]
    worst = sorted(m.missing_rates.items(), key=lambda kv: -kv[1])[:5]
    typer.echo("most often empty: " + ", ".join(f"{k} {v:.0%}" for k, v in worst))


def trainset_command(
    rounds: list[str] = typer.Option([], "--round", help="Round to include (repeat); default: every round with a census."),
    horizon: str = typer.Option("next_census", help="Label horizon: next_census or one_year."),
    cutoff: str | None = typer.Option(None, help="Use labels known by this date (YYYY-MM-DD); default: latest delivery."),
    truth: Path | None = typer.Option(None, "--truth", help="Simulator truth folder: also print label agreement (evaluation only)."),
    json_out: bool = typer.Option(False, "--json", help="Print a machine-readable summary."),
    home: Path | None = typer.Option(None, "--home", help=HOME_HELP),
    chunk_rows: int | None = typer.Option(
        None, "--chunk-rows", min=1,
        help="Pupils per chunk of whole schools on DuckDB (memory only: the set is the same); default 500,000."),
) -> None:
    """Build a training set: features of many rounds with their dropout labels, in Parquet.

    Students whose outcome is not yet known are left out (unlabelled), never counted as staying.
    The manifest records rounds, row counts, label rate and a fingerprint of the deliveries used.
    On DuckDB the rounds are written one after the other, each built in chunks of whole schools:
    memory is set by the chunk, not by the number of pupils or rounds.
    """
    from features.pointintime.pipeline import TrainsetConfig, build_trainset

    h = load_home(home)
    with friendly_errors("trainset"):
        cfg = TrainsetConfig(
            rounds=tuple(rounds), horizon=horizon,  # type: ignore[arg-type]
            cutoff=dt.date.fromisoformat(cutoff) if cutoff else None,
        )
        m = build_trainset(h, cfg) if chunk_rows is None else build_trainset(h, cfg, chunk_rows=chunk_rows)
        out: dict[str, object] = {"trainset": m.model_dump(mode="json")}
        if truth is not None:
            from features.evaluation import truth_evaluator
            from features.pointintime.pipeline import warehouse_session

            with warehouse_session(h) as con:
                q = truth_evaluator().label_quality(con, truth, cfg.horizon)
            out["label_quality"] = q.model_dump(mode="json")
            out["label_agreement"] = q.agreement
    if json_out:
        emit_json(out)
        return
    typer.echo(f"{m.name}: {m.rows:,} labelled rows over {len(m.rounds)} rounds, dropout rate {m.label_rate:.2%}, "
               f"{m.unlabelled_rows:,} unlabelled left out -> {m.file}")
    if "label_agreement" in out:
        lq = out["label_quality"]
        typer.echo(f"labels agree with the simulator's truth on {lq['agreement']:.3%} of {lq['rows_compared']:,} rows "  # type: ignore[index]
                   "(target ≥ 99.5%)")
        typer.echo(f"label precision {lq['precision'] or 0:.3f} (target ≥ 0.97), recall {lq['recall'] or 0:.3f} "  # type: ignore[index]
                   f"(target ≥ 0.99), unknown {lq['unknown_share']:.2%} of {lq['rows']:,} rows; per group in --json")  # type: ignore[index]
