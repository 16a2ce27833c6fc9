"""Small helpers shared by every stage's command: the home option, JSON output, clean errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel

from features.home import EwsHome

HOME_HELP = "Folder where the service keeps everything (default: $EWS_HOME, else ~/.ews)."


def load_home(home: Path | None) -> EwsHome:
    """The deployment of this command, built once at its entry and passed down (see features.home)."""
    return EwsHome.from_env(home)


def emit_json(obj: BaseModel | dict[str, Any]) -> None:
    data = obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


@contextmanager
def friendly_errors(what: str) -> Iterator[None]:
    """Expected failures (missing inputs, bad values) end with a one-line message and exit 2,
    not a traceback; anything else is a bug and keeps its traceback."""
    try:
        yield
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        typer.secho(f"{what} failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def progress_factory() -> Callable[..., Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return lambda: Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), TimeElapsedColumn(),
        transient=True,
    )
