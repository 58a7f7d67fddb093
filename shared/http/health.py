"""Health and readiness: ``GET /health`` (the process answers) and ``GET /ready`` (its
dependencies answer), with the checks ``/ready`` runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import msgspec
from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.logging import get_logger

log = get_logger("shared.http")
"""The package's name: its log lines are the same as before it was split."""

ReadyCheck = Callable[[], Awaitable[object]]


class HealthBody(msgspec.Struct, kw_only=True):
    status: Literal["ok"]
    """Always ``ok``: the process answers."""


class ReadyBody(msgspec.Struct, kw_only=True):
    status: Literal["ready", "unavailable"]
    """``unavailable`` when any check failed (the answer is then a 503)."""
    checks: dict[str, str]
    """Dependency -> ``ok`` or the reason it failed."""


def database_check(engine: AsyncEngine) -> ReadyCheck:
    async def check() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return check


def redis_check(redis: Any) -> ReadyCheck:
    async def check() -> None:
        await redis.ping()

    return check


async def run_checks(checks: Mapping[str, ReadyCheck], timeout_s: float = 2.0) -> ReadyBody:
    """Run every check concurrently, each bounded by ``timeout_s``."""

    async def one(name: str, check: ReadyCheck) -> str:
        try:
            await asyncio.wait_for(check(), timeout_s)
        except TimeoutError:
            log.warning("ready.check_failed", check=name, error="timeout")
            return "error: timeout"
        except Exception as exc:
            # The log gets the driver's text; the answer only the kind of failure, never the
            # host names, ports and user names that text carries.
            log.warning("ready.check_failed", check=name, error=str(exc)[:300],
                        error_type=type(exc).__name__)
            return f"error: {type(exc).__name__}"
        return "ok"

    results = await asyncio.gather(*(one(n, c) for n, c in checks.items()))
    ok = all(r == "ok" for r in results)
    return ReadyBody(
        status="ready" if ok else "unavailable", checks=dict(zip(checks, results, strict=True))
    )


def health_routes(checks: Mapping[str, ReadyCheck]) -> list[HTTPRouteHandler]:
    """``GET /health`` (process alive) and ``GET /ready`` (dependencies reachable)."""

    @get(
        "/health", operation_id="getHealth", tags=["ops"], summary="Process is alive",
        sync_to_thread=False,
    )
    def health() -> HealthBody:
        """Answers while the process runs; checks nothing else (a liveness probe)."""
        return HealthBody(status="ok")

    @get(
        "/ready", operation_id="getReady", tags=["ops"], summary="Dependencies are reachable",
        responses={503: ResponseSpec(
            ReadyBody, description="A dependency is unreachable", generate_examples=False
        )},
    )
    async def ready() -> Response[ReadyBody]:
        """200 when every dependency (database, Redis) answers within 2 s, else 503 with
        the reason per dependency (a readiness probe)."""
        body = await run_checks(checks)
        return Response(body, status_code=200 if body.status == "ready" else 503)

    return [health, ready]
