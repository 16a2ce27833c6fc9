"""Commands of the serving stage: score, serve, tokens.

    ews score --round 2568-T1-early [--json] [--home PATH]    (on Spark when [engine] kind = "spark")
    ews score --due [--today YYYY-MM-DD] [--json] [--home PATH]
    ews serve [--port 3000] [--host 127.0.0.1] [--workers N] [--home PATH]
    ews tokens create --role school --school 1234567890 [--label L]
    ews tokens list | ews tokens revoke TOKEN_ID
    ews actions list [--school S] [--student KEY] [--json] | ews actions export [--out FILE.csv] | ews actions verify
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from features.clikit import HOME_HELP, emit_json, friendly_errors, load_home
from features.home import EwsHome

HomeOpt = Annotated[Path | None, typer.Option("--home", help=HOME_HELP)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]


def score_command(
    round_id: Annotated[str | None, typer.Option("--round", help="Round to score, e.g. 2568-T1-early.")] = None,
    due: Annotated[bool, typer.Option("--due", help="Score every round that is due and not yet scored by the champion.")] = False,
    today: Annotated[str | None, typer.Option("--today", help="Date for --due (YYYY-MM-DD); default: today.")] = None,
    chunk_rows: Annotated[int | None, typer.Option(
        "--chunk-rows", min=1,
        help="Pupils per chunk of whole schools scored at once (bounds the round's memory; default 200,000)."
    )] = None,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Score a round with the champion: risk scores, groups and SHAP reasons, published atomically.

    A round is an immutable snapshot under EWS_HOME/rounds/<round>/<hash>/; re-running the same
    round with the same model and data gives the same hash.
    """
    from features.calendar import parse_round
    from serving.scoring import ScoreConfig, due_rounds, score_round
    from training.registry import load_model

    if (round_id is None) == (not due):
        typer.secho("give either --round R or --due", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    h = load_home(home)
    from features.debris import sweep_debris

    sweep_debris(h, "score")  # temp snapshots and feature files a killed run left
    with friendly_errors("score"):
        # The round id is parsed here, once; everything below takes the `ScoringRound`.
        asked = parse_round(round_id) if round_id is not None else None
        champion = load_model(h)
        cfg = ScoreConfig() if chunk_rows is None else ScoreConfig(chunk_rows=chunk_rows)
        if asked is None:
            day = dt.date.fromisoformat(today) if today else dt.date.today()
            todo = due_rounds(h, champion.lineage.version, day)
        else:
            todo = [asked]
        scorer = score_round
        if h.engine.kind == "spark":  # the deployment's engine: the same snapshot, scored on Spark
            from serving.spark_scoring import score_round_spark as scorer
        results = [scorer(h, r, champion, cfg) for r in todo]
    if json_out:
        emit_json({"rounds": [r.model_dump(mode="json") for r in results]})
        return
    if not results:
        typer.echo("nothing due: every round whose date has passed is scored by the champion")
    for s in results:
        typer.echo(f"{s.round_id}: {s.scored:,} scored, {s.no_score:,} without a score (too little data); "
                   f"มีปัญหา {s.groups['problem']:,} · เสี่ยง {s.groups['at_risk']:,} · ปกติ {s.groups['normal']:,}; "
                   f"model v{s.model_version}; snapshot {s.snapshot_hash} published")
        if s.population_caveat:
            typer.secho(f"{s.round_id}: {s.population_caveat['en']}", fg=typer.colors.YELLOW)


def serve_command(
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 3000,
    host: Annotated[str, typer.Option("--host", help="Address to bind (default: this machine only).")] = "127.0.0.1",
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Worker processes (each holds the model and rounds); default: the deployment's serve.workers (EWS_SERVE_WORKERS, else 1).")] = None,
    home: HomeOpt = None,
) -> None:
    """Run the service (`bentoml serve`) on the published rounds with the champion model."""
    h = load_home(home)
    env = service_env(h, workers or h.serve.workers)
    cmd = [sys.executable, "-m", "bentoml", "serve", "serving.service:EwsService", "--host", host, "--port", str(port)]
    typer.echo(f"serving on http://{host}:{port}/ews/  (home {h.root})")
    # Replace this process with bentoml: a signal to `ews serve` then reaches the server itself.
    os.chdir(Path(__file__).resolve().parent.parent)
    os.execve(sys.executable, cmd, env)


def service_env(home: EwsHome, workers: int) -> dict[str, str]:
    """Environment for `bentoml serve`: the home, BENTOML_HOME inside it, and the worker count as
    a BentoML configuration override (read by BentoML when it starts, not by our module import)."""
    # MALLOC_ARENA_MAX=2: glibc otherwise gives each of the server's ~70 threads its own arena, each
    # keeping its freed pages (issue 13: worker RSS under load); an operator's own value is kept.
    return {"MALLOC_ARENA_MAX": "2", **home.child_environment({
        "BENTOML_HOME": str(home.bentoml_dir),
        "BENTOML_CONFIG_OVERRIDES": json.dumps({"services": {"ews": {"workers": workers}}}),
        "BENTOML_DO_NOT_TRACK": "True", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    })}


tokens_app = typer.Typer(help="Access tokens: create (shown once), list, revoke.", no_args_is_help=True)


@tokens_app.command("create")
def tokens_create(
    role: Annotated[str, typer.Option("--role", help="school, area, analyst, auditor, admin or monitoring.")],
    school: Annotated[str | None, typer.Option("--school", help="School code (role school).")] = None,
    area: Annotated[list[str], typer.Option("--area", help="Area code, repeatable (role area).")] = [],  # noqa: B006
    label: Annotated[str, typer.Option("--label", help="Who holds it (free text, no personal data).")] = "",
    json_out: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Create a token and print it once; only its hash is stored."""
    from serving.access import create_token

    with friendly_errors("tokens create"):
        token, info = create_token(load_home(home), role, school, list(area), label)
    if json_out:
        emit_json({"token": token, **info.model_dump(mode="json")})
        return
    typer.echo(token)
    typer.echo(f"(token id {info.token_id}, role {info.role}; shown once — store it now)", err=True)


@tokens_app.command("list")
def tokens_list(json_out: JsonOpt = False, home: HomeOpt = None) -> None:
    """List tokens (ids, roles, scopes; never the tokens)."""
    from serving.access import list_tokens

    items = list_tokens(load_home(home))
    if json_out:
        emit_json({"tokens": [t.model_dump(mode="json") for t in items]})
        return
    for t in items:
        scope = t.school_code or ",".join(t.areas) or "-"
        state = f"revoked {t.revoked_at}" if t.revoked_at else "active"
        typer.echo(f"{t.token_id}  {t.role:8s} {scope:24s} {state:28s} {t.label}")


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument(help="Token id from `ews tokens list`.")], home: HomeOpt = None) -> None:
    """Revoke a token at once (the service checks every request)."""
    from serving.access import revoke_token

    if not revoke_token(load_home(home), token_id):
        typer.secho(f"no active token with id {token_id}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    typer.echo(f"revoked {token_id}")


actions_app = typer.Typer(help="The action record: list, export to the warehouse, verify the audit chain.",
                          no_args_is_help=True)


@actions_app.command("list")
def actions_list(
    school: Annotated[str | None, typer.Option("--school", help="Only this school's pupils.")] = None,
    student: Annotated[str | None, typer.Option("--student", help="Only this pupil (student key).")] = None,
    json_out: JsonOpt = False,
    home: HomeOpt = None,
) -> None:
    """Recorded actions, oldest first (pseudonymous keys and codes; never names or notes)."""
    from serving.actions import BY_CODE, read_entries

    entries = [e for e in read_entries(load_home(home))
               if (school is None or e["school_code"] == school) and (student is None or e["student_key"] == student)]
    if json_out:
        emit_json({"actions": entries})
        return
    for e in entries:
        typer.echo(f"{e['seq']:>6} {e['at'][:19]} {e['school_code'] or '-':10s} {e['student_key'][:16]:16s} "
                   f"{BY_CODE[e['action']].en:38s} {e['status']:8s} {e['outcome'] or '':20s} "
                   f"due {e['follow_up_due'] or '-':10s} by {e['role']}:{e['token_id']}")
    typer.echo(f"{len(entries)} entries", err=True)


@actions_app.command("export")
def actions_export(
    out: Annotated[Path | None, typer.Option("--out", help="Also write the record as CSV here.")] = None,
    home: HomeOpt = None,
) -> None:
    """Copy the record into the warehouse as table `actions` (and optionally a CSV file)."""
    from serving.actions import export, verify

    h = load_home(home)
    with friendly_errors("actions export"):
        verdict = verify(h)
        if not verdict.ok:
            raise ValueError(f"the action record fails verification: {verdict.problem}")
        n = export(h, out)
    typer.echo(f"{n} entries -> warehouse table actions" + (f" and {out}" if out else ""))


@actions_app.command("verify")
def actions_verify(json_out: JsonOpt = False, home: HomeOpt = None) -> None:
    """Walk the audit chain: exit 1 and name the first entry that was edited, removed or reordered."""
    from serving.actions import verify

    v = verify(load_home(home))
    if json_out:
        emit_json({"entries": v.entries, "ok": v.ok, "problem": v.problem})
    elif v.ok:
        typer.echo(f"ok: {v.entries} entries, chain intact")
    else:
        typer.secho(f"TAMPERED: {v.problem}", fg=typer.colors.RED, err=True)
    if not v.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("score")(score_command)
    app.command("serve")(serve_command)
    app.add_typer(tokens_app, name="tokens")
    app.add_typer(actions_app, name="actions")
