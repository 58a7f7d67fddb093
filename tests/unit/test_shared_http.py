"""The shared HTTP layer: one error shape, correlation ids, health/readiness, body limit."""

from __future__ import annotations

import msgspec
from litestar import get, post
from litestar.params import JSONBody
from litestar.testing import AsyncTestClient
from sqlalchemy import exc as sa_exc

from shared.correlation import current as current_correlation_id
from shared.errors import Conflict, DependencyUnavailable, NotYetAvailable, RateLimited
from shared.http import api_app


class Body(msgspec.Struct):
    name: str


@get("/conflict", operation_id="conflict", sync_to_thread=False)
def conflict() -> None:
    raise Conflict("email already registered")


@get("/limited", operation_id="limited", sync_to_thread=False)
def limited() -> None:
    raise RateLimited("slow down", retry_after=7)


@get("/later", operation_id="later", sync_to_thread=False)
def later() -> None:
    raise NotYetAvailable("not yet", retry_after=1)


@get("/down", operation_id="down", sync_to_thread=False)
def down() -> None:
    raise DependencyUnavailable("redis down")


@get("/boom", operation_id="boom", sync_to_thread=False)
def boom() -> None:
    raise RuntimeError("secret internals")


class PgError(Exception):
    """What the asyncpg dialect wraps: an error with its SQLSTATE."""

    def __init__(self, message: str, sqlstate: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@get("/pg-restarting", operation_id="pgRestarting", sync_to_thread=False)
def pg_restarting() -> None:
    raise sa_exc.DBAPIError("SELECT 1", None, PgError("the database system is shutting down",
                                                      "57P01"))


@get("/pg-unique", operation_id="pgUnique", sync_to_thread=False)
def pg_unique() -> None:
    raise sa_exc.DBAPIError("INSERT", None, PgError("duplicate key", "23505"))


@get("/cid", operation_id="cid", sync_to_thread=False)
def cid() -> dict[str, str | None]:
    return {"cid": current_correlation_id()}


@post("/echo", operation_id="echo", sync_to_thread=False)
def echo(data: JSONBody[Body]) -> Body:
    return data


async def failing_check() -> None:
    raise ConnectionError("connect to secret-host (10.1.2.3:5432) as user ams_auth failed")


async def ok_check() -> None:
    return None


def app(ready_ok: bool = True) -> AsyncTestClient:  # type: ignore[type-arg]
    checks = {"database": ok_check, "redis": ok_check if ready_ok else failing_check}
    return AsyncTestClient(api_app(
        title="t",
        route_handlers=[conflict, limited, later, down, boom, cid, echo, pg_restarting, pg_unique],
        ready_checks=checks, max_body_bytes=1024,
    ))


async def test_domain_errors_map_to_status_and_shape() -> None:
    async with app() as client:
        r = await client.get("/conflict")
        assert r.status_code == 409
        assert r.json() == {"error": {"code": "conflict", "message": "email already registered"}}
        r = await client.get("/limited")
        assert r.status_code == 429
        assert r.headers["retry-after"] == "7"
        r = await client.get("/later")
        assert r.status_code == 404
        assert r.headers["retry-after"] == "1"
        r = await client.get("/down")
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "dependency_unavailable"


async def test_a_restarting_database_is_503_a_broken_statement_500() -> None:
    async with app() as client:
        r = await client.get("/pg-restarting")
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "dependency_unavailable"
        assert r.headers["retry-after"] == "1"
        r = await client.get("/pg-unique")
        assert r.status_code == 500


async def test_unexpected_error_is_500_without_internals() -> None:
    async with app() as client:
        r = await client.get("/boom")
        assert r.status_code == 500
        assert r.json()["error"]["code"] == "internal_error"
        assert "secret" not in r.text
        assert "Traceback" not in r.text


async def test_validation_unknown_route_and_body_limit() -> None:
    async with app() as client:
        r = await client.post("/echo", json={"name": 3})
        assert r.status_code == 422
        assert r.json()["error"]["code"] == "validation_failed"
        r = await client.get("/nope")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
        r = await client.post("/echo", json={"name": "x" * 5000})
        assert r.status_code == 413
        assert "error" in r.json()


async def test_correlation_id_is_echoed_and_bound() -> None:
    async with app() as client:
        r = await client.get("/cid", headers={"X-Correlation-ID": "abc-123"})
        assert r.headers["x-correlation-id"] == "abc-123"
        assert r.json() == {"cid": "abc-123"}
        r = await client.get("/cid")
        assert r.json()["cid"] == r.headers["x-correlation-id"]


async def test_health_ready_and_schema() -> None:
    async with app() as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        assert (await client.get("/ready")).status_code == 200
        schema = (await client.get("/schema/openapi.json")).json()
        assert "/echo" in schema["paths"]
    async with app(ready_ok=False) as client:
        r = await client.get("/ready")
        assert r.status_code == 503
        assert r.json()["checks"]["redis"].startswith("error")
        assert "10.1.2.3" not in r.text and "secret-host" not in r.text  # no internal names


def _conflict_count(metrics_text: str) -> float:
    for line in metrics_text.splitlines():
        if line.startswith("ams_http_requests_total{") and 'path="/conflict"' in line:
            assert 'status_code="409"' in line
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_count_requests_by_route_template_and_status() -> None:
    async with app() as client:
        before = _conflict_count((await client.get("/metrics")).text)
        await client.get("/conflict")
        await client.get("/cid")
        r = await client.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        assert _conflict_count(r.text) == before + 1
        assert 'path="/metrics"' not in r.text


@get("/refused", operation_id="refused", sync_to_thread=False)
def refused() -> None:
    raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")


@get("/dropped", operation_id="dropped", sync_to_thread=False)
def dropped() -> None:
    raise sa_exc.InterfaceError("SELECT 1", {}, ConnectionError("connection was closed"))


@get("/integrity", operation_id="integrity", sync_to_thread=False)
def integrity() -> None:
    raise sa_exc.IntegrityError("INSERT", {}, ValueError("duplicate key"))


async def test_lost_database_connection_is_503_not_500() -> None:
    client = AsyncTestClient(api_app(
        title="t2", route_handlers=[refused, dropped, integrity],
        ready_checks={"database": ok_check}, max_body_bytes=1024,
    ))
    async with client:
        for path in ("/refused", "/dropped"):
            r = await client.get(path)
            assert r.status_code == 503, path
            assert r.json()["error"]["code"] == "dependency_unavailable"
            assert r.headers["retry-after"] == "1"
            assert "5432" not in r.text
        r = await client.get("/integrity")
        assert r.status_code == 500
        assert r.json()["error"]["code"] == "internal_error"
