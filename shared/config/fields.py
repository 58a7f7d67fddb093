"""How a setting is declared (its variable, whether it is a service link) and read (coercion,
``*_FILE`` secrets, the attribute docstrings the README table shows)."""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap
from dataclasses import Field, fields
from typing import Any

DATABASES = ("authdb", "apidb", "admindb")
"""Logical databases; each has its own URL, migrations, outbox and inbox."""


def env(name: str) -> dict[str, Any]:
    return {"env": name}


def link(name: str) -> dict[str, Any]:
    """A service URL that trusts ``TLS_CA_FILE`` unless it names its own CA."""
    return {"env": name, "link": "url"}


def nodes(name: str) -> dict[str, Any]:
    """A comma-separated list of service URLs, each one a :func:`link`."""
    return {"env": name, "link": "nodes"}



def secret_value(value: str, path: str, name: str) -> str:
    """``value``, or the contents of the file ``path`` (``NAME_FILE``, a mounted secret)
    without its trailing newline when ``value`` is empty."""
    if value or not path:
        return value
    try:
        with open(path, encoding="utf-8") as secret:
            return secret.read().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from None


def coerce(name: str, raw: str, kind: Any) -> Any:
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is bool:
            return raw.strip().lower() in {"1", "true", "yes", "on"}
    except ValueError:
        raise ValueError(
            f"environment variable {name}={raw!r} is not a valid {kind.__name__}"
        ) from None
    return raw


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal right after each field)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for prev, node in itertools.pairwise(body):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
        ):
            docs[prev.target.id] = str(node.value.value)
    return docs


def links(group: Any) -> list[Field[Any]]:
    """The fields of ``group`` that are service links (:func:`link`, :func:`nodes`)."""
    return [f for f in fields(group) if "link" in f.metadata]
