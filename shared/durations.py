"""Durations written as text (``500ms``, ``5s``, ``1h30m``, ``2d``): the one parser.

Retry delays (``WORKER_RETRY_DELAYS``, one unit each: the label names a queue) and the
``amsctl dlq`` age filters (``--older-than 2h``) both read them here.
"""

from __future__ import annotations

import re
from datetime import timedelta

UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def duration_parts(text: str) -> list[tuple[str, str]]:
    """``"1h30m"`` -> ``[("1", "h"), ("30", "m")]``; ValueError unless all of it is parts."""
    compact = text.strip().lower().replace(" ", "")
    parts: list[tuple[str, str]] = _PART.findall(compact)
    if not compact or "".join(amount + unit for amount, unit in parts) != compact:
        raise ValueError(f"invalid duration {text!r}; use e.g. 500ms, 90s, 15m, 1h, 2d, 1h30m")
    return parts


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h30m``, ``2d`` -> timedelta; ValueError otherwise."""
    return timedelta(
        milliseconds=sum(float(amount) * UNIT_MS[unit] for amount, unit in duration_parts(text))
    )
