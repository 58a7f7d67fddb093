"""The one place where an error that no command mapped becomes a message and an exit code."""

from __future__ import annotations

import sys

from amsctl.common import EXIT_FAILURE, EXIT_UNAVAILABLE, EXIT_USAGE


def describe(exc: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) for an exception that reached the top of amsctl."""
    if _is_dependency_error(exc):
        return EXIT_UNAVAILABLE, f"a dependency is unreachable or refused: {_text(exc)}"
    if isinstance(exc, ValueError) and "environment variable" in str(exc):
        return EXIT_USAGE, str(exc)
    return EXIT_FAILURE, (
        f"unexpected {type(exc).__name__}: {_text(exc)} (AMSCTL_DEBUG=1 shows the traceback)"
    )


def _is_dependency_error(exc: BaseException) -> bool:
    from shared.errors import DependencyUnavailable

    if isinstance(exc, DependencyUnavailable | OSError | ConnectionError | TimeoutError):
        return True
    # Only libraries already imported can have raised: no import just to compare.
    names = [("sqlalchemy.exc", "DBAPIError"), ("asyncpg", "PostgresError"),
             ("aiormq.exceptions", "AMQPError"), ("httpx", "HTTPError"),
             ("redis.exceptions", "ConnectionError")]
    for module, name in names:
        kind = getattr(sys.modules.get(module), name, None)
        if kind is not None and isinstance(exc, kind):
            return True
    return False


def _text(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)  # SQLAlchemy: the driver's own message is the clear one
    text = str(orig if orig is not None else exc) or repr(exc)
    return " ".join(text.split())[:500]
