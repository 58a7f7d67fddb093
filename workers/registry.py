"""Every consumer ``python -m workers <name>`` can run: name -> factory returning a Consumer.

Each worker module (``workers/profiles.py``, ``workers/ocr.py`` …) adds one entry. Names
match :data:`shared.topology.CONSUMERS`. A factory receives the settings so that a worker
can build its own adapters (an OCR engine, a Redis client) without reading the
environment at import time.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.config import Settings
from workers.runtime import Consumer

ConsumerFactory = Callable[[Settings], Consumer]

CONSUMERS: dict[str, ConsumerFactory] = {}
"""Registered consumers, by queue name."""


def get(name: str) -> ConsumerFactory:
    try:
        return CONSUMERS[name]
    except KeyError:
        known = ", ".join(sorted(CONSUMERS)) or "none registered yet"
        raise KeyError(f"unknown consumer {name!r}; known: {known}") from None
