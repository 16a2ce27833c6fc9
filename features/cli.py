"""Commands of the features stage: contract, ingest, link, features, trainset."""

from __future__ import annotations

import importlib

import typer


def contract_command() -> None:
    """Print the source-data contract (every source, column and rule) as Markdown."""
    from features.contract import contract_markdown

    typer.echo(contract_markdown())


# (command name, module, function). Each module owns its command's options and help text.
_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("ingest", "features.ingest.cli", "ingest_command"),
    ("link", "features.linkage.cli", "link_command"),
    ("features", "features.pointintime.cli", "features_command"),
    ("trainset", "features.pointintime.cli", "trainset_command"),
)


def register(app: typer.Typer) -> None:
    app.command("contract")(contract_command)
    for name, module, func in _COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            # A stage still being built is simply absent from --help; any other import error is real.
            if exc.name is None or not module.startswith(exc.name):
                raise
            continue
        app.command(name)(getattr(mod, func))
