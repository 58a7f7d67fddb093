"""Running a process's main coroutine on the fastest event loop available."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``uvloop.run`` where uvloop is installed (a dependency everywhere but Windows),
    else ``asyncio.run``. The relay and the workers share a few cores with PostgreSQL and
    RabbitMQ; uvloop's cheaper wake-ups and socket writes leave more of them to those."""
    try:
        import uvloop  # noqa: PLC0415 - optional: absent on Windows
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
