"""Dead letters as values: parsing the ``x-ams-*`` headers, filters, fingerprints, grouping.

Nothing here talks to a broker; the adapters in :mod:`amsctl.dlq.broker` turn AMQP
messages into :class:`DeadLetter` values and these functions decide what to show or move.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared import messaging as m

DLQ_SUFFIX = ".dlq"
DELIVERY_COUNT = "x-delivery-count"
"""Set by quorum queues on every delivery; a browse increments it (see broker docstring)."""


def is_dlq_name(name: str) -> bool:
    return name.endswith(DLQ_SUFFIX) and len(name) > len(DLQ_SUFFIX)


def work_queue_of(dlq: str) -> str:
    """``profiles.dlq`` -> ``profiles`` (the fallback when a dead letter lacks the header)."""
    return dlq[: -len(DLQ_SUFFIX)]


def replay_target_allowed(dlq: str, target: str) -> bool:
    """A letter of ``NAME.dlq`` goes back only to ``NAME`` or one of its partitions
    (``NAME.p3``): the target header is the message's word, not the operator's."""
    consumer = work_queue_of(dlq)
    if not target.startswith(consumer):
        return False
    rest = target[len(consumer):]
    return rest == "" or (rest.startswith(".p") and rest[2:].isdigit() and len(rest) <= 4)


def replay_refusal(dlq: str, target: str, targets: frozenset[str]) -> str | None:
    """Why a letter of ``dlq`` that names ``target`` must not be replayed there, or None.

    ``targets`` are the work queues of the topology (bound to the replay exchange): a
    target outside it is refused here, with a reason, before anything is published.
    """
    if is_dlq_name(target):
        return f"refusing to replay into {target!r}: it is a dead-letter queue"
    if not replay_target_allowed(dlq, target):
        return (
            f"refusing to replay into {target!r}: a letter of {dlq} goes back only to its own "
            "work queue (or one of its partitions)"
        )
    if target not in targets:
        return (
            f"refusing to replay into {target!r}: not a work queue of the topology "
            f"(replayable: {', '.join(sorted(targets)) or 'none'}; WORKER_PARTITIONS decides "
            "the partitions)"
        )
    return None


def _dead_lettered_from(headers: Mapping[str, Any]) -> str | None:
    """The queue the broker dead-lettered from (delivery limit): a partition's, say."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        queue = deaths[0].get("queue")
        return str(queue) if queue and not is_dlq_name(str(queue)) else None
    return None


@dataclass(frozen=True)
class DeadLetter:
    """One message sitting in a dead-letter queue, as an operator sees it."""

    queue: str
    position: int
    """0-based position in the queue at the time it was read."""
    message_id: str
    type: str
    routing_key: str
    failed_queue: str
    error_type: str
    error_message: str
    error_where: str
    traceback: str
    attempts: int
    first_failure_at: datetime | None
    last_failure_at: datetime | None
    replays: tuple[dict[str, Any], ...]
    headers: dict[str, Any]
    body: bytes
    content_type: str | None = None
    correlation_id: str | None = None
    timestamp: datetime | None = None
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """Error type + where it was raised: the same bug gives the same fingerprint."""
        return f"{self.error_type or '?'} @ {self.error_where or '?'}"

    @property
    def fingerprint_id(self) -> str:
        return hashlib.sha1(self.fingerprint.encode(), usedforsecurity=False).hexdigest()[:10]

    def age(self, now: datetime) -> timedelta | None:
        seen = self.last_failure_at or self.timestamp
        return None if seen is None else now - seen

    def body_text(self) -> str:
        """Pretty JSON when the body is JSON, else the decoded text (or a byte repr)."""
        try:
            return json.dumps(json.loads(self.body), indent=2, ensure_ascii=False)
        except (ValueError, UnicodeDecodeError):
            try:
                return self.body.decode()
            except UnicodeDecodeError:
                return repr(self.body)

    def to_json(self, *, full: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "queue": self.queue, "position": self.position, "message_id": self.message_id,
            "type": self.type, "routing_key": self.routing_key, "failed_queue": self.failed_queue,
            "error_type": self.error_type, "error_message": self.error_message,
            "error_where": self.error_where, "fingerprint": self.fingerprint,
            "attempts": self.attempts, "first_failure_at": _iso(self.first_failure_at),
            "last_failure_at": _iso(self.last_failure_at), "replays": list(self.replays),
            "correlation_id": self.correlation_id,
        }
        if full:
            data |= {
                "traceback": self.traceback, "headers": self.headers,
                "properties": self.properties, "body": self.body_text(),
            }
        return data


def parse_dead_letter(
    queue: str,
    position: int,
    headers: Mapping[str, Any],
    body: bytes,
    properties: Mapping[str, Any],
) -> DeadLetter:
    """Build a :class:`DeadLetter` from AMQP headers and properties (missing headers tolerated)."""
    h = jsonable(dict(headers))
    mtype = str(properties.get("type") or "")
    return DeadLetter(
        queue=queue,
        position=position,
        message_id=str(properties.get("message_id") or ""),
        type=mtype,
        routing_key=str(h.get(m.H_FAILED_ROUTING_KEY) or mtype),
        failed_queue=str(h.get(m.H_FAILED_QUEUE) or _dead_lettered_from(h) or work_queue_of(queue)),
        error_type=str(h.get(m.H_ERROR_TYPE) or ""),
        error_message=str(h.get(m.H_ERROR_MESSAGE) or ""),
        error_where=str(h.get(m.H_ERROR_WHERE) or ""),
        traceback=str(h.get(m.H_TRACEBACK) or ""),
        attempts=_int(h.get(m.H_ATTEMPTS)),
        first_failure_at=parse_time(headers.get(m.H_FIRST_FAILURE_AT)),
        last_failure_at=parse_time(headers.get(m.H_LAST_FAILURE_AT)),
        replays=tuple(r for r in _list(h.get(m.H_REPLAYS)) if isinstance(r, dict)),
        headers=h,
        body=body,
        content_type=properties.get("content_type"),
        correlation_id=properties.get("correlation_id"),
        timestamp=parse_time(properties.get("timestamp")),
        properties=jsonable({k: v for k, v in properties.items() if v is not None}),
    )


# --- selection ------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command applies to; empty fields match everything."""

    message_ids: frozenset[str] = frozenset()
    routing_key: str | None = None
    """An AMQP topic pattern (``user.*``, ``document.#``) matched against the routing key."""
    error: str | None = None
    """Case-insensitive text found in the error type, message or location."""
    older_than: timedelta | None = None
    newer_than: timedelta | None = None
    fingerprint: str | None = None
    """A fingerprint id (as shown by ``list --group``)."""

    def matches(self, dl: DeadLetter, now: datetime) -> bool:
        if self.message_ids and dl.message_id not in self.message_ids:
            return False
        if self.routing_key and not topic_matches(self.routing_key, dl.routing_key):
            return False
        texts = (dl.error_type, dl.error_message, dl.error_where)
        if self.error and not _contains(self.error, *texts):
            return False
        if self.fingerprint and dl.fingerprint_id != self.fingerprint:
            return False
        return self._age_matches(dl.age(now))

    def _age_matches(self, age: timedelta | None) -> bool:
        if self.older_than is not None and (age is None or age < self.older_than):
            return False
        return not (self.newer_than is not None and (age is None or age > self.newer_than))

    def describe(self) -> dict[str, Any]:
        return {
            "message_ids": sorted(self.message_ids), "routing_key": self.routing_key,
            "error": self.error, "fingerprint": self.fingerprint,
            "older_than": _seconds(self.older_than), "newer_than": _seconds(self.newer_than),
        }


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic semantics: ``*`` is exactly one word, ``#`` zero or more words."""
    return _match(pattern.split("."), key.split("."))


def _match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words or (head not in ("*", words[0])):
        return False
    return _match(rest, words[1:])


# --- grouping -------------------------------------------------------------------------


@dataclass
class FailureGroup:
    """Dead letters that share a fingerprint."""

    fingerprint: str
    fingerprint_id: str
    count: int = 0
    queues: set[str] = field(default_factory=set)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    sample_error: str = ""
    message_ids: list[str] = field(default_factory=list)

    def add(self, dl: DeadLetter) -> None:
        self.count += 1
        self.queues.add(dl.queue)
        self.message_ids.append(dl.message_id)
        self.sample_error = self.sample_error or dl.error_message
        first = dl.first_failure_at or dl.last_failure_at
        last = dl.last_failure_at or dl.first_failure_at
        if first and (self.first_seen is None or first < self.first_seen):
            self.first_seen = first
        if last and (self.last_seen is None or last > self.last_seen):
            self.last_seen = last

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint, "fingerprint_id": self.fingerprint_id,
            "count": self.count, "queues": sorted(self.queues),
            "first_seen": _iso(self.first_seen), "last_seen": _iso(self.last_seen),
            "sample_error": self.sample_error, "message_ids": self.message_ids,
        }


def group_by_fingerprint(letters: Iterable[DeadLetter]) -> list[FailureGroup]:
    """Groups, largest first."""
    groups: dict[str, FailureGroup] = {}
    for dl in letters:
        group = groups.setdefault(dl.fingerprint, FailureGroup(dl.fingerprint, dl.fingerprint_id))
        group.add(dl)
    return sorted(groups.values(), key=lambda g: (-g.count, g.fingerprint))


# --- value helpers --------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """ISO-8601 text, an AMQP timestamp (datetime) or epoch seconds -> aware UTC datetime."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        try:  # a forged 3e38, inf or NaN is no time at all, not a crash
            return datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except (ValueError, OverflowError):
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def jsonable(value: Any) -> Any:
    """AMQP field values (bytes, datetimes, decimals, nested tables) -> JSON-ready values."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode(errors="replace")
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, Decimal):
        return str(value)
    return value


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # None, "x", inf
        return 0


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _contains(needle: str, *haystacks: str) -> bool:
    low = needle.lower()
    return any(low in h.lower() for h in haystacks)
