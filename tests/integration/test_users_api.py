"""The users API with the real auth service in-process, real PostgreSQL and Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient

from apps.auth.app import create_app as create_auth
from apps.users.app import create_app as create_users
from shared.config import Settings
from shared.db import create_engine, session_factory
from shared.events import UserRegistered
from shared.redis_client import create_redis
from tests.faults import TcpProxy
from tests.support import isolated_settings
from workers.profiles import handle_user_registered
from workers.runtime.context import MessageContext

PASSWORD = "correct horse battery staple"


class ClientJwks:
    """JWKS fetched from the in-process auth app; ``down`` simulates an auth outage."""

    def __init__(self, client: AsyncTestClient[Any]) -> None:
        self.client = client
        self.down = False

    async def fetch(self) -> dict[str, Any]:
        if self.down:
            raise ConnectionError("auth service unreachable")
        response = await self.client.get("/.well-known/jwks.json")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


@dataclass
class System:
    settings: Settings
    auth: AsyncTestClient[Any]
    users: AsyncTestClient[Any]
    jwks: ClientJwks
    cache_proxy: TcpProxy
    deny_proxy: TcpProxy


@pytest.fixture(scope="module")
def users_settings() -> Iterator[Settings]:
    with isolated_settings(
        "users", redis_key_prefix=f"t{uuid.uuid4().hex[:8]}:", jwks_refetch_min_interval_s=0.0
    ) as s:
        yield s


@pytest.fixture
async def system(users_settings: Settings) -> AsyncIterator[System]:
    with TcpProxy("127.0.0.1", 6379) as cache_proxy, TcpProxy("127.0.0.1", 6379) as deny_proxy:
        db_index = users_settings.redis.url.rsplit("/", 1)[1]
        auth_app = create_auth(users_settings)
        async with AsyncTestClient(auth_app) as auth:
            jwks = ClientJwks(auth)
            users_app = create_users(
                users_settings,
                jwks_source=jwks,
                redis=create_redis(f"redis://127.0.0.1:{deny_proxy.port}/{db_index}"),
                cache_redis=create_redis(f"redis://127.0.0.1:{cache_proxy.port}/{db_index}"),
            )
            async with AsyncTestClient(users_app) as users:
                yield System(users_settings, auth, users, jwks, cache_proxy, deny_proxy)


async def signup(system: System, *, profile: bool = True) -> tuple[str, dict[str, str]]:
    email = f"u{uuid.uuid4().hex[:10]}@example.com"
    r = await system.auth.post(
        "/auth/register", json={"email": email, "password": PASSWORD, "display_name": "U"}
    )
    user_id = r.json()["user_id"]
    if profile:
        await create_profile(system.settings, uuid.UUID(user_id), email)
    r = await system.auth.post("/auth/login", json={"email": email, "password": PASSWORD})
    return user_id, {"Authorization": f"Bearer {r.json()['access_token']}"}


async def create_profile(settings: Settings, user_id: uuid.UUID, email: str) -> None:
    engine = create_engine(settings.database.users_url)
    ctx = MessageContext(
        message_id=str(uuid.uuid4()),
        event_type="user.registered",
        correlation_id=None,
        causation_id=None,
        headers={},
        redelivered=False,
        attempts=0,
        consumer="profiles",
    )
    try:
        async with session_factory(engine)() as session, session.begin():
            event = UserRegistered(user_id=user_id, email=email, display_name="U")
            await handle_user_registered(session, event, ctx)
    finally:
        await engine.dispose()


async def test_profile_not_created_yet_is_404_with_retry_after(system: System) -> None:
    _, auth = await signup(system, profile=False)
    r = await system.users.get("/profiles/me", headers=auth)
    assert r.status_code == 404
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "not_found"


async def test_get_and_patch_my_profile(system: System) -> None:
    user_id, auth = await signup(system)
    r = await system.users.get("/profiles/me", headers=auth)
    assert r.status_code == 200
    assert r.json()["user_id"] == user_id
    assert r.json()["display_name"] == "U"
    r = await system.users.patch("/profiles/me", headers=auth, json={"bio": "hello"})
    assert r.status_code == 200
    assert r.json()["bio"] == "hello"
    # The cached copy was replaced by the update, not served stale.
    assert (await system.users.get("/profiles/me", headers=auth)).json()["bio"] == "hello"
    r = await system.users.patch("/profiles/me", headers=auth, json={"display_name": ""})
    assert r.status_code == 422
    for field in ("display_name", "bio"):  # PostgreSQL refuses NUL: 422, not a 500
        r = await system.users.patch("/profiles/me", headers=auth, json={field: "a\u0000b"})
        assert r.status_code == 422, r.text


async def test_other_profiles_need_admin(system: System) -> None:
    other_id, _ = await signup(system)
    _, auth = await signup(system)
    r = await system.users.get(f"/profiles/{other_id}", headers=auth)
    assert r.status_code == 403
    admin_email = f"a{uuid.uuid4().hex[:8]}@example.com"
    await system.auth.post("/auth/register", json={"email": admin_email, "password": PASSWORD})
    engine = create_engine(system.settings.database.auth_url)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE users SET roles = '{user,admin}' WHERE email = :e"), {"e": admin_email}
        )
    await engine.dispose()
    r = await system.auth.post("/auth/login", json={"email": admin_email, "password": PASSWORD})
    admin = {"Authorization": f"Bearer {r.json()['access_token']}"}
    r = await system.users.get(f"/profiles/{other_id}", headers=admin)
    assert r.status_code == 200
    assert r.json()["user_id"] == other_id


async def test_token_attacks_are_401(system: System) -> None:
    _, auth = await signup(system)
    token = auth["Authorization"].split()[1]
    head, body, sig = token.split(".")
    tampered = f"{head}.{body[:-2]}AA.{sig}"
    for bad in ("", "Bearer", f"Bearer {tampered}", "Basic abc", f"Bearer {token}x"):
        r = await system.users.get("/profiles/me", headers={"Authorization": bad})
        assert r.status_code == 401, bad
        assert r.json()["error"]["code"] == "authentication_failed"


async def test_logout_is_honoured_by_the_users_api_at_once(system: System) -> None:
    _, auth = await signup(system)
    assert (await system.users.get("/profiles/me", headers=auth)).status_code == 200
    assert (await system.auth.post("/auth/logout", headers=auth)).status_code == 204
    assert (await system.users.get("/profiles/me", headers=auth)).status_code == 401


async def test_cache_redis_down_serves_from_database(system: System) -> None:
    _, auth = await signup(system)
    assert (await system.users.get("/profiles/me", headers=auth)).status_code == 200
    system.cache_proxy.cut()
    try:
        r = await system.users.get("/profiles/me", headers=auth)
        assert r.status_code == 200
        r = await system.users.patch("/profiles/me", headers=auth, json={"bio": "offline"})
        assert r.status_code == 200
    finally:
        system.cache_proxy.restore()


async def test_denylist_redis_down_fails_closed_with_503(system: System) -> None:
    _, auth = await signup(system)
    system.deny_proxy.cut()
    try:
        r = await system.users.get("/profiles/me", headers=auth)
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "dependency_unavailable"
        assert "retry-after" in r.headers
    finally:
        system.deny_proxy.restore()
    assert (await system.users.get("/profiles/me", headers=auth)).status_code == 200


async def test_keeps_verifying_with_cached_keys_while_auth_is_down(system: System) -> None:
    _, auth = await signup(system)
    assert (await system.users.get("/profiles/me", headers=auth)).status_code == 200
    system.jwks.down = True
    assert (await system.users.get("/profiles/me", headers=auth)).status_code == 200


async def test_ready_and_schema(system: System) -> None:
    r = await system.users.get("/ready")
    assert r.status_code == 200
    schema = (await system.users.get("/schema/openapi.json")).json()
    ops = {op["operationId"] for p in schema["paths"].values() for op in p.values()}
    assert {"getMyProfile", "updateMyProfile", "getProfile", "getHealth", "getReady"} <= ops
