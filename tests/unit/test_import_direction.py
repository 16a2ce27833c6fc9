"""Imports flow one way: features -> training -> serving -> monitoring, and the simulator is a room apart.

A later stage may import an earlier one's names, never the reverse; the pipeline never imports the
simulator (its `--truth` options reach the simulator through features/evaluation.py, filled by the
entry point); the simulator may import features' vocabulary (contract, calendar, ids) but no other
stage; nothing but the entry point imports `ews`. Every .py file is parsed, not imported, so
nothing runs and an import hidden inside a function, a relative import, or a module named by a
string literal to `importlib.import_module` / `__import__` is seen as well as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> top-level packages it must never import
FORBIDDEN: dict[str, frozenset[str]] = {
    "features": frozenset({"training", "serving", "monitoring", "simulator", "ews"}),
    "training": frozenset({"serving", "monitoring", "simulator", "ews"}),
    "serving": frozenset({"monitoring", "simulator", "ews"}),
    "monitoring": frozenset({"simulator", "ews"}),
    "simulator": frozenset({"training", "serving", "monitoring", "ews"}),
}

DYNAMIC_IMPORTERS = {"import_module", "__import__"}


def module_name(path: Path, root: Path = ROOT) -> str:
    """features/linkage/cli.py -> features.linkage.cli; a package's __init__.py -> the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, wherever it is written."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # `from . import x` in a.b.c means a.b; each further dot climbs one package
                package = module.split(".") if is_package else module.split(".")[:-1]
                base = package[: len(package) - (node.level - 1)]
                found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            else:
                found.append((node.lineno, node.module or ""))
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            first = node.args[0]
            if name in DYNAMIC_IMPORTERS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.append((node.lineno, first.value))
    return sorted(found)


def forbidden_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """`module:line imports name` for each import that goes against the direction."""
    banned = FORBIDDEN[module.split(".")[0]]
    return [
        f"{module}:{line} imports {name}"
        for line, name in imported_modules(source, module, is_package)
        if name.split(".")[0] in banned
    ]


def python_files(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_only_the_stages_before_it(package: str) -> None:
    files = python_files(package)
    assert files, f"no Python files found under {package}/: the scan would pass without looking"
    problems = [
        problem
        for path in files
        for problem in forbidden_imports(path.read_text(encoding="utf-8"), module_name(path),
                                         path.name == "__init__.py")
    ]
    assert problems == [], "imports against the direction:\n" + "\n".join(problems)


def test_the_scanner_finds_a_forbidden_import_however_it_is_written() -> None:
    source = "\n".join([
        "import features.calendar",  # allowed: features' own vocabulary
        "import simulator.world",  # 2: top level
        "def evaluate():",
        "    from simulator.evaluate import SimulatorTruth",  # 4: inside a function
        "    import importlib",
        "    importlib.import_module('training.train')",  # 6: by a string literal
        "    __import__('ews.cli')",  # 7: the builtin
        "    from ...serving import model",  # 8: relative, climbing out of features
        "    from . import link",  # allowed: features.linkage.link
    ])
    problems = forbidden_imports(source, "features.linkage.quality")
    assert problems == [
        "features.linkage.quality:2 imports simulator.world",
        "features.linkage.quality:4 imports simulator.evaluate",
        "features.linkage.quality:6 imports training.train",
        "features.linkage.quality:7 imports ews.cli",
        "features.linkage.quality:8 imports serving",
    ]


def test_the_same_import_is_allowed_in_a_later_stage_only() -> None:
    source = "from features.contract import SOURCES\nfrom training.model import RiskModel\n"
    assert forbidden_imports(source, "serving.scoring") == []
    assert forbidden_imports(source, "simulator.records") == ["simulator.records:2 imports training.model"]


def test_a_relative_import_in_a_package_init_resolves_from_the_package() -> None:
    assert imported_modules("from .api import simulate\n", "simulator", is_package=True) == [(1, "simulator.api")]
    assert imported_modules("from .api import simulate\n", "simulator.cli") == [(1, "simulator.api")]


def test_truth_options_fail_clearly_when_no_evaluator_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    from features import evaluation

    monkeypatch.setattr(evaluation, "_factory", None)
    with pytest.raises(RuntimeError, match="no truth evaluator is installed"):
        evaluation.truth_evaluator()


def test_the_entry_point_installs_the_simulators_evaluator_behind_the_pipelines_slot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ews.cli import _simulator_truth
    from features import evaluation
    from simulator.evaluate import SimulatorTruth

    monkeypatch.setattr(evaluation, "_factory", None)
    evaluation.install_truth_evaluator(_simulator_truth)
    evaluator = evaluation.truth_evaluator()
    assert isinstance(evaluator, SimulatorTruth)
    for name in ("linkage_quality", "label_quality", "ceiling_table"):
        assert callable(getattr(evaluator, name)), name
