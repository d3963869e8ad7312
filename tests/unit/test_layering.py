"""The layers import only downwards: ``models`` (pure maths) knows neither ``indexing`` nor ``app``;
``indexing`` (embedding, vector store) does not know ``app``; the serving code under ``app/`` never
imports the tooling (``app.bench``) or the command line (``app.cli``), which sit on top of it.

Every import is checked, at module level and inside functions (the lazy ones included), read with
``ast`` from the source: nothing is imported to check it."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from app.settings import PROJECT_ROOT

TOOLING = ("app.bench", "app.cli")

# (the package whose modules are checked, modules it excludes, the imports it must not make)
RULES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("models", (), ("indexing", "app")),
    ("indexing", (), ("app",)),
    ("app", TOOLING, TOOLING),
)


def module_name(path: Path, root: Path = PROJECT_ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, wherever it is; relative imports are
    resolved against ``module``; ``from x import y`` yields both ``x`` and ``x.y`` (y may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(source: str, module: str, forbidden: tuple[str, ...], is_package: bool = False) -> list[tuple[int, str]]:
    """The imports of ``source`` (the code of ``module``) that fall under a ``forbidden`` package: one
    (line, module name) per offending import statement."""
    found: dict[int, str] = {}
    for line, name in imported_modules(source, module, is_package):
        if line not in found and any(_within(name, f) for f in forbidden):
            found[line] = name
    return sorted(found.items())


def layering_violations(root: Path = PROJECT_ROOT) -> list[str]:
    found = []
    for package, excluded, forbidden in RULES:
        for path in sorted((root / package).rglob("*.py")):
            module = module_name(path, root)
            if any(_within(module, e) for e in excluded):
                continue
            source = path.read_text(encoding="utf-8")
            for line, name in violations(source, module, forbidden, path.name == "__init__.py"):
                found.append(f"{path.relative_to(root)}:{line}: {module} imports {name}")
    return found


def test_the_layers_import_only_downwards() -> None:
    assert layering_violations() == []


def test_every_layer_is_checked() -> None:
    """The walk sees the modules it is meant to (a moved folder would otherwise pass vacuously)."""
    names = {module_name(p) for package, _, _ in RULES for p in (PROJECT_ROOT / package).rglob("*.py")}
    assert {"models.classifier", "indexing.store", "app.main", "app.services.training", "app.cli.common"} <= names
    assert any(_within(n, "app.bench") for n in names)


def test_the_checker_catches_each_kind_of_violation() -> None:
    lazy = "def serve():\n    from app.bench.perf import run_perf\n    return run_perf\n"
    assert violations(lazy, "app.services.index", TOOLING) == [(2, "app.bench.perf")]
    assert violations("import app.cli\n", "app.main", TOOLING) == [(1, "app.cli")]
    assert violations("from app import cli\n", "app.main", TOOLING) == [(1, "app.cli")]
    assert violations("from ..bench import accuracy\n", "app.services.index", TOOLING)  # relative
    assert violations("from . import bench\n", "app", TOOLING, is_package=True)
    assert violations("import indexing.store as s\n", "models.knn", ("indexing", "app")) == [(1, "indexing.store")]
    assert violations("from app.settings import X\n", "indexing.embed", ("app",))
    # what is allowed
    assert violations("from app.bench.accuracy import run_bench\n", "app.cli.bench", ()) == []
    assert violations("import application\nimport models.knn\n", "indexing.embed", ("app",)) == []
    assert violations("from app.batching import X\n", "app.main", TOOLING) == []


def test_a_violation_in_a_tree_fails_the_check(tmp_path: Path) -> None:
    for package in ("models", "indexing", "app/services", "app/bench"):
        (tmp_path / package).mkdir(parents=True)
    (tmp_path / "app" / "bench" / "perf.py").write_text("from app.services import index\n")  # allowed: tooling
    (tmp_path / "app" / "services" / "index.py").write_text("def f():\n    import app.cli.common\n")
    (tmp_path / "models" / "knn.py").write_text("from indexing.store import VectorStore\n")
    assert layering_violations(tmp_path) == [
        "models/knn.py:1: models.knn imports indexing.store",
        "app/services/index.py:2: app.services.index imports app.cli.common",
    ]
