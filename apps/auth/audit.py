"""The operator audit trail: an append-only table in authdb (``operator_audit``).

Every operator action, from ``amsctl``, the admin console or an admin API call such as a
legal hold, is one row: who (``actor``), from where (``source``), what (``action``), on
what (``target``), when (``at``, set by the database), how it ended (``outcome``) and
free-form ``details``. Rows cannot be changed or removed: triggers refuse UPDATE, DELETE
and TRUNCATE for every role, and the service roles hold only INSERT and SELECT.

Callers pass an ``async_sessionmaker`` bound to authdb::

    await audit.record(sessions, actor="ops@host", source=AuditSource.CLI,
                       action="keys.create", target=kid, outcome=AuditOutcome.OK)
    page = await audit.list_entries(sessions, AuditFilter(action="dlq.", limit=50))
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.errors import ValidationFailed

metadata = sa.MetaData()

operator_audit = sa.Table(
    "operator_audit",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target", sa.Text),
    sa.Column("outcome", sa.Text, nullable=False),
    sa.Column("details", pg.JSONB, nullable=False),
)
"""Mirror of the frozen DDL in ``migrations/authdb/versions/authdb_0005_operator_audit``."""


class AuditSource(StrEnum):
    CLI = "cli"
    CONSOLE = "console"
    API = "api"


class AuditOutcome(StrEnum):
    OK = "ok"
    PARTIAL = "partial"
    """Some of the selected items were handled, some were not (see details)."""
    FAILED = "failed"
    DENIED = "denied"
    """Refused before anything changed (not allowed, not found, bad request)."""


class AuditAction(StrEnum):
    """The operator actions recorded today; new ones may be added (format: ``area.verb``)."""

    DLQ_REPLAY = "dlq.replay"
    DLQ_PURGE = "dlq.purge"
    KEYS_CREATE = "keys.create"
    KEYS_RETIRE = "keys.retire"
    KEYS_REWRAP = "keys.rewrap"
    USERS_CREATE_ADMIN = "users.create-admin"
    OUTBOX_REQUEUE = "outbox.requeue"
    DOCUMENT_LEGAL_HOLD = "documents.legal-hold"


MAX_LIMIT = 500
MAX_TARGET = 1000
MAX_DETAILS_BYTES = 60_000
_ACTION = re.compile(r"^[a-z][a-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    source: str
    action: str
    target: str | None
    outcome: str
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "at": self.at.isoformat(), "actor": self.actor,
            "source": self.source, "action": self.action, "target": self.target,
            "outcome": self.outcome, "details": self.details,
        }


@dataclass(frozen=True)
class AuditFilter:
    """What ``list_entries`` returns: newest first, ``limit`` rows at most.

    ``action`` ending in ``.`` matches every action of that area (``"dlq."``); ``before_id``
    pages backwards (pass the smallest id of the previous page).
    """

    actor: str | None = None
    action: str | None = None
    target: str | None = None
    outcome: AuditOutcome | None = None
    source: AuditSource | None = None
    since: datetime | None = None
    until: datetime | None = None
    before_id: int | None = None
    limit: int = 100


async def record(
    sessions: async_sessionmaker[AsyncSession],
    *,
    actor: str,
    source: AuditSource,
    action: str,
    target: str | None,
    outcome: AuditOutcome,
    details: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry in its own transaction and return it (with id and time)."""
    row = _row(actor=actor, source=source, action=action, target=target, outcome=outcome,
               details=details or {})
    async with sessions() as session, session.begin():
        result = await session.execute(
            operator_audit.insert().values(**row).returning(operator_audit)
        )
        return _entry(result.mappings().one())


async def list_entries(
    sessions: async_sessionmaker[AsyncSession], filters: AuditFilter | None = None
) -> list[AuditEntry]:
    """Entries matching ``filters``, newest first."""
    f = filters or AuditFilter()
    if not 1 <= f.limit <= MAX_LIMIT:
        raise ValidationFailed(f"limit must be between 1 and {MAX_LIMIT}")
    t = operator_audit.c
    query = sa.select(operator_audit).order_by(t.id.desc()).limit(f.limit)
    if f.actor is not None:
        query = query.where(t.actor == f.actor)
    if f.action is not None:
        query = query.where(
            t.action.startswith(f.action, autoescape=True)
            if f.action.endswith(".") else t.action == f.action
        )
    for column, value in ((t.target, f.target), (t.outcome, f.outcome), (t.source, f.source)):
        if value is not None:
            query = query.where(column == str(value))
    if f.since is not None:
        query = query.where(t.at >= f.since)
    if f.until is not None:
        query = query.where(t.at < f.until)
    if f.before_id is not None:
        query = query.where(t.id < f.before_id)
    async with sessions() as session:
        rows = (await session.execute(query)).mappings().all()
    return [_entry(r) for r in rows]


def _row(*, actor: str, source: AuditSource, action: str, target: str | None,
         outcome: AuditOutcome, details: dict[str, Any]) -> dict[str, Any]:
    if not actor or len(actor) > 320:
        raise ValidationFailed("audit actor must be 1-320 characters")
    if not _ACTION.match(action):
        raise ValidationFailed(f"audit action {action!r} is not of the form area.verb")
    encoded = json.dumps(details, default=str)
    if len(encoded) > MAX_DETAILS_BYTES:
        details = {"truncated": True, "size": len(encoded), "head": encoded[:1000]}
    else:
        details = json.loads(encoded)  # datetimes, UUIDs … as strings
    if target is not None and len(target) > MAX_TARGET:
        target = target[: MAX_TARGET - 1] + "…"
    return {"actor": actor, "source": AuditSource(source).value, "action": action,
            "target": target, "outcome": AuditOutcome(outcome).value, "details": details}


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(
        id=row["id"], at=row["at"], actor=row["actor"], source=row["source"],
        action=row["action"], target=row["target"], outcome=row["outcome"],
        details=dict(row["details"]),
    )
