"""Every operator action of ``amsctl`` goes to the audit table in authdb (``apps.auth.audit``).

A command opens the trail *before* it changes anything: when authdb or the table cannot
be reached the command stops with exit 3 and nothing is done, so no action goes
unrecorded. The local JSON-lines log of ``amsctl dlq`` (``AMSCTL_AUDIT_LOG``) is kept
beside it: it records each settled window of a long replay as it happens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
import sqlalchemy.exc
from rich.markup import escape
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from amsctl.common import err_console
from amsctl.dlq.audit import who
from apps.auth import audit
from apps.auth.audit import AuditEntry, AuditOutcome, AuditSource
from shared.config import Settings
from shared.db import create_engine, session_factory
from shared.errors import AmsError, DependencyUnavailable, DomainError

T = TypeVar("T")
_DB_ERRORS = (OSError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)


class AuditNotRecorded(AmsError):
    """The action ran, but its audit entry could not be written (exit 1, said loudly)."""


@dataclass
class Trail:
    sessions: async_sessionmaker[AsyncSession]
    actor: str
    source: AuditSource = AuditSource.CLI
    """``console`` when the admin console acts (``actor`` is then the admin's email)."""

    async def record(
        self, action: str, target: str | None, outcome: AuditOutcome,
        details: dict[str, Any] | None = None,
    ) -> AuditEntry:
        try:
            return await audit.record(
                self.sessions, actor=self.actor, source=self.source, action=action,
                target=target, outcome=outcome, details=details,
            )
        except (*_DB_ERRORS, sqlalchemy.exc.DBAPIError) as exc:
            raise AuditNotRecorded(
                f"{action} ended ({outcome}) but the audit table could not record it: {exc}"
            ) from exc


@asynccontextmanager
async def trail(cfg: Settings, *, actor: str | None = None,
                source: AuditSource = AuditSource.CLI) -> AsyncIterator[Trail]:
    """The audit trail for one command (or console action: ``actor`` = the admin, ``source``
    = console); raises DependencyUnavailable before any change."""
    engine = create_engine(cfg.database.audit_url, pool_size=1)  # AUDIT_DATABASE_URL's role, if any
    try:
        await _preflight(engine.connect)
        yield Trail(session_factory(engine), actor or who(), source)
    finally:
        await engine.dispose()


async def _preflight(connect: Any) -> None:
    try:
        async with connect() as conn:
            allowed = await conn.scalar(
                sa.text("SELECT has_table_privilege('operator_audit', 'INSERT')")
            )
    except sqlalchemy.exc.DBAPIError as exc:
        if "operator_audit" in str(exc.orig):
            raise DependencyUnavailable(
                "the audit table is missing in authdb (run `amsctl db migrate`); "
                "nothing was changed"
            ) from exc
        raise DependencyUnavailable(
            f"authdb (audit table) is unreachable; nothing was changed: {exc.orig}"
        ) from exc
    except OSError as exc:
        raise DependencyUnavailable(
            f"authdb (audit table) is unreachable; nothing was changed: {exc}"
        ) from exc
    if not allowed:
        raise DependencyUnavailable(
            "this database role may not write the audit table; nothing was changed"
        )


async def run_audited(
    t: Trail,
    action: str,
    target: str | None,
    work: Callable[[], Awaitable[T]],
    *,
    details: dict[str, Any] | None = None,
    outcome_of: Callable[[T], tuple[str | None, AuditOutcome, dict[str, Any]]] | None = None,
) -> T:
    """Run ``work`` and record how it ended: ok, denied (a domain error) or failed.

    ``outcome_of`` turns the result into (target, outcome, extra details), for actions
    whose target is only known afterwards (a new key id) or that can partly succeed.
    """
    base = dict(details or {})
    try:
        result = await work()
    except DomainError as exc:
        await _record_failure(t, action, target, AuditOutcome.DENIED, base | _error(exc))
        raise
    except Exception as exc:
        await _record_failure(t, action, target, AuditOutcome.FAILED, base | _error(exc))
        raise
    outcome = AuditOutcome.OK
    if outcome_of is not None:
        target, outcome, extra = outcome_of(result)
        base |= extra
    await t.record(action, target, outcome, base)
    return result


def _error(exc: Exception) -> dict[str, str]:
    return {"error": f"{type(exc).__name__}: {exc}"[:2000]}


async def _record_failure(t: Trail, action: str, target: str | None, outcome: AuditOutcome,
                          details: dict[str, Any]) -> None:
    try:
        await t.record(action, target, outcome, details)
    except AuditNotRecorded as lost:
        # The original error is what the operator must see; the lost entry is said too.
        err_console.print(f"[bold red]audit:[/] {escape(str(lost))}")
