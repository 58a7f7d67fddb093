"""Operator actions of the admin API go to the audit table in authdb (``apps.auth.audit``).

The entry is written while the request's admindb transaction is still open: when the
audit table cannot take it, the request fails with 503 and the change is rolled back, so
no legal hold changes without its audit row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy.exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apps.admin.services import AuditSink
from apps.auth import audit
from apps.auth.audit import AuditOutcome, AuditSource
from shared.auth import Principal
from shared.errors import DependencyUnavailable


@dataclass(frozen=True)
class AuditTrail:
    sessions: async_sessionmaker[AsyncSession]

    def recorder(self, principal: Principal) -> AuditSink:
        actor = f"user:{principal.user_id}"

        async def sink(action: str, target: str, outcome: AuditOutcome,
                       details: dict[str, Any]) -> None:
            try:
                await audit.record(self.sessions, actor=actor, source=AuditSource.API,
                                   action=action, target=target, outcome=outcome,
                                   details=details)
            except (OSError, sqlalchemy.exc.DBAPIError) as exc:
                raise DependencyUnavailable("the operator audit table is unavailable") from exc

        return sink
