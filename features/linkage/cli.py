"""`ews link`: resolve identities across every source and year into one student_key per child."""

from __future__ import annotations

from pathlib import Path

import typer

from features.clikit import HOME_HELP, emit_json, friendly_errors, load_home


def link_command(
    truth: Path | None = typer.Option(
        None, "--truth", help="Simulator truth folder: also print linkage quality against it (evaluation only)."
    ),
    match_probability: float = typer.Option(0.99, help="Link pairs at or above this match probability."),
    relink: bool = typer.Option(
        False, "--relink",
        help="Re-decide every link, published ones too (keys that change are mapped in key_changes). "
        "By default a key published by the previous run is kept, so later deliveries never move old rows.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print a machine-readable summary."),
    home: Path | None = typer.Option(None, "--home", help=HOME_HELP),
) -> None:
    """Link every ingested record to one pseudonymous student_key per child.

    Valid citizen IDs and G-codes link first; records with missing, mistyped or changed IDs are
    matched on names, birth date, sex, school and area with a Fellegi-Sunter model (Splink)
    whose weights are estimated from the data. Suspicious clusters go to review, not merged.
    """
    from features.linkage.link import LinkConfig, link

    h = load_home(home)
    with friendly_errors("linkage"):
        summary = link(h, LinkConfig(match_probability=match_probability, keep_published_keys=not relink))
        out: dict[str, object] = {"link": summary.model_dump(mode="json")}
        if truth is not None:
            from features.evaluation import truth_evaluator
            from features.pointintime.pipeline import warehouse_session

            with warehouse_session(h) as con:
                q = truth_evaluator().linkage_quality(con, truth)
            out["quality"] = q.model_dump(mode="json")
            out["precision"], out["recall"] = q.precision, q.recall
            out["label_error_share"] = q.label_error_share
    if json_out:
        emit_json(out)
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    c = Console()
    t = Table(title="Linkage", show_header=False)
    for k in ("records", "records_with_names", "nodes", "candidate_pairs", "linked_pairs", "students",
              "review_clusters", "review_tokens_birth_date", "unlinkable_rows", "keys_changed", "seconds"):
        t.add_row(k.replace("_", " "), f"{getattr(summary, k):,}")
    c.print(t)
    if summary.probabilistic_skipped:
        c.print(f"[yellow]No probabilistic links this run: {escape(summary.probabilistic_skipped)} "
                "(too little data to estimate the matching model; deterministic links only).[/yellow]")
    if summary.keys_changed:
        c.print(f"[yellow]{summary.keys_changed:,} key(s) published by the previous run changed "
                "(clusters merged or split by review); wh.key_changes maps old keys to new.[/yellow]")
    if "quality" in out:
        q = out["quality"]
        c.print(
            f"Against the truth: pairwise precision {q['precision']:.4f}, recall {q['recall']:.4f} "  # type: ignore[index]
            f"(targets ≥ 0.995); labels wrong because of linkage {q['label_error_share']:.3%} "  # type: ignore[index]
            f"(target ≤ 0.2%) over {q['label_rows_compared']:,} labelled rows."  # type: ignore[index]
        )
