"""Every consumer ``python -m workers <name>`` can run: name -> factory returning a Consumer.

Each worker module (``workers/profiles.py``, ``workers/ocr.py`` …) adds one entry. Names
match :data:`shared.topology.CONSUMERS`. A factory receives the settings so that a worker
can build its own adapters (an OCR engine, a Redis client) without reading the
environment at import time.
"""

from __future__ import annotations

from collections.abc import Callable

from shared.config import Settings
from workers import documents, profiles, saga
from workers.runtime.consumer import Consumer

ConsumerFactory = Callable[[Settings], Consumer]

CONSUMERS: dict[str, ConsumerFactory] = {
    "profiles": profiles.consumer,
    "documents": documents.consumer,
    "saga": saga.consumer,
    "ocr": lambda settings: _ocr(settings),  # noqa: PLW0108 - _ocr is defined below
}
"""Registered consumers, by queue name."""


def get(name: str) -> ConsumerFactory:
    try:
        return CONSUMERS[name]
    except KeyError:
        known = ", ".join(sorted(CONSUMERS)) or "none registered yet"
        raise KeyError(f"unknown consumer {name!r}; known: {known}") from None


def _ocr(settings: Settings) -> Consumer:
    from workers import ocr  # imported on use: PIL/pdfium only where OCR runs  # noqa: PLC0415

    return ocr.consumer(settings)
