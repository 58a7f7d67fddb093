"""Map a handler's exception to what the broker should do, and describe it for the operator.

The one place where exceptions become outcomes: a message that can never succeed
(invalid payload, a business rule) is dead-lettered at once; everything else may pass
(database, Redis, broker, timeouts, and bugs we do not know yet) and is retried with a
delay until the attempts run out.
"""

from __future__ import annotations

import enum
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared import messaging as m
from shared.errors import DomainError, InvalidMessage

MAX_ERROR_MESSAGE = 1000
MAX_TRACEBACK = 4000
TRACEBACK_FRAMES = 6

BROKER_HEADERS = frozenset({
    "x-death", "x-delivery-count", "x-first-death-exchange", "x-first-death-queue",
    "x-first-death-reason", "x-last-death-exchange", "x-last-death-queue",
    "x-last-death-reason",
})
"""Headers RabbitMQ adds on its own; not part of the original message, so not copied."""


class Outcome(enum.Enum):
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"


def classify(exc: BaseException) -> Outcome:
    """Permanent errors are dead-lettered now; anything else is worth another attempt.

    Transient by design: ``TransientError``, SQLAlchemy/asyncpg connection errors,
    ``OSError``, timeouts, and unknown exceptions (a bug fixed by a deploy, say).
    """
    if isinstance(exc, DomainError | InvalidMessage):
        return Outcome.DEAD_LETTER
    return Outcome.RETRY


@dataclass(frozen=True)
class Failure:
    """What went wrong, in the shape of the ``x-ams-*`` headers."""

    error_type: str
    error_message: str
    where: str
    traceback: str
    at: datetime

    @classmethod
    def of(cls, exc: BaseException, *, now: datetime | None = None) -> Failure:
        return cls(
            error_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
            error_message=str(exc)[:MAX_ERROR_MESSAGE] or type(exc).__name__,
            where=_where(exc),
            traceback=_short_traceback(exc),
            at=now or datetime.now(UTC),
        )


def failure_headers(
    original: dict[str, Any],
    failure: Failure,
    *,
    attempts: int,
    queue: str,
    routing_key: str,
) -> dict[str, Any]:
    """The original headers plus the failure record; first failure time and key are kept."""
    headers = {k: v for k, v in original.items() if k not in BROKER_HEADERS}
    stamp = failure.at.isoformat()
    headers.setdefault(m.H_FIRST_FAILURE_AT, stamp)
    # A retried message comes back with the retry routing key: keep the one it failed with.
    headers.setdefault(m.H_FAILED_ROUTING_KEY, routing_key)
    headers.update({
        m.H_ATTEMPTS: attempts,
        m.H_FAILED_QUEUE: queue,
        m.H_ERROR_TYPE: failure.error_type,
        m.H_ERROR_MESSAGE: failure.error_message,
        m.H_ERROR_WHERE: failure.where,
        m.H_TRACEBACK: failure.traceback,
        m.H_LAST_FAILURE_AT: stamp,
    })
    return headers


MAX_ATTEMPTS_HEADER = 1000
"""Largest failed-attempt count taken from a header."""


def attempts_of(headers: dict[str, Any]) -> int:
    """Failed attempts recorded so far in our own header (0 for a fresh message)."""
    try:
        attempts = int(headers.get(m.H_ATTEMPTS, 0))
    except (TypeError, ValueError, OverflowError):  # None, "x", a forged inf
        return 0
    # A forged 3e38 would be carried into the failure copy, which AMQP cannot encode: the
    # message would be requeued for ever. Counts are small; anything above is clamped.
    return min(max(0, attempts), MAX_ATTEMPTS_HEADER)


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    if tb is None:
        return "unknown"
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    module = frame.f_globals.get("__name__", "?")
    return f"{module}:{frame.f_code.co_name}:{tb.tb_lineno}"


def _short_traceback(exc: BaseException) -> str:
    lines = traceback.format_exception(exc, limit=-TRACEBACK_FRAMES)
    text = "".join(lines)
    return text[-MAX_TRACEBACK:]
