"""`ews ingest PATH`: validate deliveries and load them into the warehouse, printing the accounting."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def ingest_command(
    path: Path = typer.Argument(..., help="A delivery folder (with delivery.json), a folder of delivery folders, or the "
                                          "schools' assignment folder (assignment.csv, actions.csv)."),
    json_out: bool = typer.Option(False, "--json", help="Print a machine-readable summary instead of tables."),
    home: Path | None = typer.Option(None, "--home", help="EWS_HOME to use (default: $EWS_HOME, else ~/.ews)."),
) -> None:
    """Check every delivered file against the source contract and load the accepted rows.

    Rows that cannot say who, where or when (or what they report) go to the quarantine with file,
    line, column and reason; an invalid detail value is set to NULL and logged as a repair, and the
    row is kept. For every file received = accepted + quarantined. A delivery is loaded completely or not at all; loading the
    same delivery again changes nothing. Exit code 1 when a delivery was refused.

    The schools' assignment (assignment.csv, actions.csv; the contract's last two tables) is ingested
    the same way from its own folder; `ews monitor --actions` and `ews train --actions` read it.
    """
    # Heavy imports here, so `ews --help` stays fast.
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from features.home import EwsHome
    from features.ingest.actions import ingest_assignment, is_assignment_folder
    from features.ingest.delivery import DeliveryRefused
    from features.ingest.pipeline import IngestReport, ingest_path

    ews_home = EwsHome.from_env(home)
    console = Console(stderr=json_out)
    report: IngestReport
    try:
        if is_assignment_folder(path):
            report = IngestReport(deliveries=[ingest_assignment(path, ews_home)])
        elif json_out:
            report = ingest_path(path, ews_home)
        else:
            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("ingesting", total=None)

                def progress(done: int, total: int, what: str) -> None:
                    if total > 1:
                        bar.update(task, completed=done, total=total, description=f"ingesting {what}")

                report = ingest_path(path, ews_home, progress=progress)
    except DeliveryRefused as exc:
        if json_out:
            typer.echo(json.dumps({"error": str(exc)}, ensure_ascii=False))
        else:
            console.print(f"[bold red]refused:[/] {exc}", markup=True, highlight=False)
        raise typer.Exit(2) from None

    if json_out:
        out = {
            "deliveries": [
                {
                    "delivery_id": d.delivery_id,
                    "status": d.status,
                    **({"message": d.message} if d.message else {}),
                    "files": [
                        {k: getattr(f, k) for k in ("source_file", "received", "accepted", "quarantined", "repaired", "encoding")}
                        for f in d.files
                    ],
                }
                for d in report.deliveries
            ],
            "totals": report.totals().model_dump(),
        }
        typer.echo(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        for d in report.deliveries:
            if d.status == "refused":
                console.print(f"[bold red]refused[/] {d.delivery_id}: {d.message}", highlight=False)
                continue
            if d.status == "already_ingested":
                console.print(f"[yellow]{d.delivery_id}[/]: already ingested (same content); nothing changed")
                continue
            table = Table(title=f"{d.delivery_id}", title_justify="left")
            for col in ("file", "received", "accepted", "quarantined", "repaired", "encoding"):
                table.add_column(col, justify="left" if col in ("file", "encoding") else "right")
            for f in d.files:
                table.add_row(f.source_file, f"{f.received:,}", f"{f.accepted:,}",
                              f"{f.quarantined:,}", f"{f.repaired:,}", f.encoding)
            console.print(table)
            reasons = [(f.source_file, r) for f in d.files for r in f.top_reasons]
            if reasons:
                reasons.sort(key=lambda x: -x[1].count)
                rt = Table(title="top quarantine reasons", title_justify="left", show_header=True)
                for col in ("file", "rule", "rows", "example"):
                    rt.add_column(col)
                for file, r in reasons[:8]:
                    rt.add_row(file, f"{r.column_name or ''} {r.rule}".strip(), f"{r.count:,}", r.example)
                console.print(rt)
            fixes = sorted(((f.source_file, r) for f in d.files for r in f.top_repairs), key=lambda x: -x[1].count)
            if fixes:
                ft = Table(title="top values set to NULL (row kept)", title_justify="left", show_header=True)
                for col in ("file", "rule", "values", "example"):
                    ft.add_column(col)
                for file, r in fixes[:8]:
                    ft.add_row(file, f"{r.column_name or ''} {r.rule}".strip(), f"{r.count:,}", r.example)
                console.print(ft)
        t = report.totals()
        console.print(
            f"{t.deliveries} deliveries ({t.ingested} ingested, {t.already_ingested} already ingested, "
            f"{t.refused} refused); rows received {t.received:,} = accepted {t.accepted:,} + quarantined "
            f"{t.quarantined:,}; repaired {t.repaired:,}. Quarantine reports: {ews_home.quarantine_dir}",
            highlight=False,
        )
    if not report.ok:
        raise typer.Exit(1)
