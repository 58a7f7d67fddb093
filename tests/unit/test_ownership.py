"""Ownership and layering: each table written from its service's package, the
worker runtime apart from the consumers, no API composition root inside a worker."""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from workers import registry

ROOT = Path(__file__).resolve().parents[2]
WORKERS = ROOT / "workers"
RUNTIME = WORKERS / "runtime"
WORKER_MODULES = tuple(sorted(path.stem for path in WORKERS.glob("*.py")))
"""Every module of ``workers/`` beside the runtime: the consumers and their helpers
(``ocr_pool``, ``pages`` …), found in the tree, so that a new one is checked too."""


def imports_of(path: Path) -> Iterator[str]:
    """Every module ``path`` imports, at the top or inside a function."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def test_no_worker_imports_an_api_composition_root_or_controllers() -> None:
    offending = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in WORKERS.rglob("*.py")
        for name in imports_of(path)
        if name.startswith("apps.") and name.split(".")[2:3] in (["app"], ["controllers"])
    }
    assert offending == set()


def test_consumers_run_no_sql_of_their_own() -> None:
    """A consumer (or a helper of one) calls its service's functions; SQL on a service's
    tables lives there."""
    assert set(registry.CONSUMERS) <= set(WORKER_MODULES), "a consumer without its module"
    offending = {
        f"{name}: {imported}"
        for name in WORKER_MODULES
        for imported in imports_of(WORKERS / f"{name}.py")
        if _is_table(imported)
        or (imported.startswith("sqlalchemy") and not imported.startswith("sqlalchemy.ext"))
        or imported.startswith("outbox")
    }
    assert offending == set()


def _is_table(dotted: str) -> bool:
    """Is ``dotted`` a table of a service's models (``apps.admin.models.documents``)?"""
    module, _, name = dotted.rpartition(".")
    if not (module.startswith("apps.") and module.endswith(".models")):
        return False
    return isinstance(getattr(importlib.import_module(module), name, None), sa.Table)


def test_the_runtime_does_not_know_the_consumers() -> None:
    offending = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in RUNTIME.rglob("*.py")
        for name in imports_of(path)
        if name.startswith("apps") or (
            name.startswith("workers.") and not name.startswith("workers.runtime")
        )
    }
    assert offending == set()


def test_the_import_check_sees_nested_imports(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from apps.admin.app import create_app\n")
    assert "apps.admin.app" in set(imports_of(module))


def test_a_table_import_is_recognised_and_an_enum_import_is_not() -> None:
    assert _is_table("apps.admin.models.documents")
    assert not _is_table("apps.admin.models.DocumentStatus")
