"""The auth service over HTTP against real PostgreSQL and Redis (in-process ASGI)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient

from apps.auth.app import create_app
from apps.auth.keys import KeySealer, KeyStore
from shared.config import Settings
from shared.db import create_engine, session_factory
from shared.redis_client import create_redis
from tests.faults import TcpProxy
from tests.support import isolated_settings

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def auth_settings() -> Iterator[Settings]:
    with isolated_settings(
        "auth",
        redis_key_prefix=f"t{uuid.uuid4().hex[:8]}:",
        login_max_failures_per_account=3,
        login_delay_base_s=30.0,  # the 4th attempt comes well within it, however slow CI is
        login_max_attempts_per_client=30,
    ) as s:
        yield s


@pytest.fixture
async def client(auth_settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(create_app(auth_settings)) as c:
        yield c


def email() -> str:
    return f"User.{uuid.uuid4().hex[:10]}@Example.COM"


async def register_and_login(client: AsyncTestClient[Any]) -> tuple[str, dict[str, Any]]:
    address = email()
    r = await client.post("/auth/register", json={"email": address, "password": PASSWORD})
    assert r.status_code == 201, r.text
    r = await client.post("/auth/login", json={"email": address, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return address, r.json()


async def test_register_writes_user_and_event_in_one_transaction(
    client: AsyncTestClient[Any], auth_settings: Settings
) -> None:
    address = email()
    r = await client.post(
        "/auth/register",
        json={"email": address, "password": PASSWORD, "display_name": "Ann"},
        headers={"X-Correlation-ID": "corr-reg-1"},
    )
    assert r.status_code == 201
    body = r.json()
    assert body["email"] == address.lower()
    engine = create_engine(auth_settings.database.auth_url)
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "SELECT event_type, aggregate_id, correlation_id, payload FROM outbox "
                    "WHERE aggregate_id = :id"
                ),
                {"id": body["user_id"]},
            )
        ).one()
    await engine.dispose()
    assert row.event_type == "user.registered"
    assert row.correlation_id == "corr-reg-1"
    assert row.payload["display_name"] == "Ann"


async def test_duplicate_email_is_409_in_any_case(client: AsyncTestClient[Any]) -> None:
    """Concurrent duplicates against a real server: tests/e2e/test_races.py."""
    address = email()
    payload = {"email": address, "password": PASSWORD}
    assert (await client.post("/auth/register", json=payload)).status_code == 201
    again = await client.post("/auth/register", json={**payload, "email": address.upper()})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"


@pytest.mark.parametrize(
    "payload",
    [
        {"email": "not-an-email", "password": PASSWORD},
        {"email": "a@b.co", "password": "short"},
        {"email": "a@b.co", "password": "password123"},
        {"email": "a@b.co", "password": "x" * 129},
        {"email": "a@b.co"},
        {"email": 5, "password": PASSWORD},
        {"email": "a@b.co", "password": PASSWORD, "extra": 1},
    ],
    ids=["bad-email", "short", "common", "too-long", "missing", "wrong-type", "unknown-field"],
)
async def test_malformed_registration_is_422(
    client: AsyncTestClient[Any], payload: dict[str, Any]
) -> None:
    r = await client.post("/auth/register", json=payload)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_failed"


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/auth/register", {"email": "a\u0000b@example.com", "password": PASSWORD}),
        ("/auth/register", {"email": "nul@example.com", "password": PASSWORD,
                            "display_name": "A\u0000"}),
        ("/auth/login", {"email": "a\u0000b@example.com", "password": PASSWORD}),
    ],
    ids=["register-email", "register-name", "login-email"],
)
async def test_nul_character_is_422_not_500(
    client: AsyncTestClient[Any], path: str, payload: dict[str, Any]
) -> None:
    """PostgreSQL refuses NUL in text; the request is invalid input, not a server error."""
    r = await client.post(path, json=payload)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"][0]["key"] in {"email", "display_name"}


async def test_long_password_is_not_truncated(client: AsyncTestClient[Any]) -> None:
    address = email()
    long_password = "p" * 100 + "-unique-tail-1"
    assert (
        await client.post("/auth/register", json={"email": address, "password": long_password})
    ).status_code == 201
    wrong_tail = long_password[:-1] + "2"
    r = await client.post("/auth/login", json={"email": address, "password": wrong_tail})
    assert r.status_code == 401


async def test_login_and_me(client: AsyncTestClient[Any]) -> None:
    address, tokens = await register_and_login(client)
    assert tokens["token_type"] == "Bearer"
    assert 0 < tokens["expires_in"] <= 900
    header = jwt.get_unverified_header(tokens["access_token"])
    assert header["alg"] == "EdDSA"
    assert header["kid"]
    r = await client.get("/auth/me", headers=bearer(tokens["access_token"]))
    assert r.status_code == 200
    assert r.json()["email"] == address.lower()
    assert r.json()["roles"] == ["user"]
    assert r.json()["status"] == "active"
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert header["kid"] in {k["kid"] for k in jwks["keys"]}


async def test_unknown_email_and_wrong_password_answer_alike(client: AsyncTestClient[Any]) -> None:
    address, _ = await register_and_login(client)
    wrong = await client.post("/auth/login", json={"email": address, "password": PASSWORD + "x"})
    unknown = await client.post("/auth/login", json={"email": email(), "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_refresh_rotates_and_reuse_revokes_family(auth_settings: Settings) -> None:
    """Without a reuse grace, the very next reuse of a spent token ends the session (with
    one, concurrent refreshes share the successor: tests/e2e/test_races.py)."""
    no_grace = auth_settings.replace(refresh_reuse_grace_s=0.0)
    async with AsyncTestClient(create_app(no_grace)) as client:
        _, first = await register_and_login(client)
        r = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert r.status_code == 200
        second = r.json()
        assert second["refresh_token"] != first["refresh_token"]
        # Re-using the spent token is refused and kills the whole family...
        reuse = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
        assert reuse.status_code == 401
        # ... including the new refresh token and the access tokens of the session.
        r = await client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
        assert r.status_code == 401
        me = await client.get("/auth/me", headers=bearer(second["access_token"]))
        assert me.status_code == 401


async def test_a_spent_token_within_the_grace_gets_the_same_successor(
    client: AsyncTestClient[Any],
) -> None:
    _, first = await register_and_login(client)
    a = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    b = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert (a.status_code, b.status_code) == (200, 200)
    claims = [
        jwt.decode(r.json()["refresh_token"], options={"verify_signature": False}) for r in (a, b)
    ]
    assert claims[0]["jti"] == claims[1]["jti"]
    assert claims[0]["exp"] == claims[1]["exp"]  # rotation never extends the family


async def test_refresh_token_is_not_an_access_token(client: AsyncTestClient[Any]) -> None:
    _, tokens = await register_and_login(client)
    r = await client.get("/auth/me", headers=bearer(tokens["refresh_token"]))
    assert r.status_code == 401
    r = await client.post("/auth/refresh", json={"refresh_token": tokens["access_token"]})
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "wrong token type (expected refresh)"


async def test_logout_revokes_access_token_at_once(client: AsyncTestClient[Any]) -> None:
    _, tokens = await register_and_login(client)
    assert (
        await client.post("/auth/logout", headers=bearer(tokens["access_token"]))
    ).status_code == 204
    assert (await client.get("/auth/me", headers=bearer(tokens["access_token"]))).status_code == 401
    r = await client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 401


async def test_account_rate_limit_is_temporary_429(client: AsyncTestClient[Any]) -> None:
    address, _ = await register_and_login(client)
    for _ in range(3):
        r = await client.post("/auth/login", json={"email": address, "password": "wrong-password"})
        assert r.status_code == 401
    r = await client.post("/auth/login", json={"email": address, "password": PASSWORD})
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "rate_limited"
    assert 25 <= int(r.headers["retry-after"]) <= 30  # the first delay, not a window


async def test_health_ready_schema(client: AsyncTestClient[Any]) -> None:
    assert (await client.get("/health")).status_code == 200
    ready = await client.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}
    schema = (await client.get("/schema/openapi.json")).json()
    operations = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {"register", "login", "refreshTokens", "logout", "getMe", "getJwks", "getHealth",
            "getReady"} <= operations


async def test_client_address_rate_limit(auth_settings: Settings) -> None:
    settings = auth_settings.replace(
        login_max_attempts_per_client=2, redis_key_prefix=f"c{uuid.uuid4().hex[:8]}:"
    )
    async with AsyncTestClient(create_app(settings)) as c:
        for _ in range(2):
            r = await c.post("/auth/login", json={"email": email(), "password": PASSWORD})
            assert r.status_code == 401
        r = await c.post("/auth/login", json={"email": email(), "password": PASSWORD})
        assert r.status_code == 429
        assert "retry-after" in r.headers


async def test_redis_down_fails_closed_with_503(auth_settings: Settings) -> None:
    async with AsyncTestClient(create_app(auth_settings)) as c:
        _, tokens = await register_and_login(c)
    db_index = auth_settings.redis.url.rsplit("/", 1)[1]
    with TcpProxy("127.0.0.1", 6379) as proxy:
        app = create_app(
            auth_settings, redis=create_redis(f"redis://127.0.0.1:{proxy.port}/{db_index}")
        )
        async with AsyncTestClient(app) as c:
            assert (
                await c.get("/auth/me", headers=bearer(tokens["access_token"]))
            ).status_code == 200
            proxy.cut()
            r = await c.get("/auth/me", headers=bearer(tokens["access_token"]))
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "dependency_unavailable"
            r = await c.post("/auth/login", json={"email": email(), "password": PASSWORD})
            assert r.status_code == 503
            r = await c.post("/auth/logout", headers=bearer(tokens["access_token"]))
            assert r.status_code == 503
            proxy.restore()
            assert (
                await c.get("/auth/me", headers=bearer(tokens["access_token"]))
            ).status_code == 200


async def test_key_rotation_keeps_old_tokens_until_retired(auth_settings: Settings) -> None:
    settings = auth_settings.replace(signing_key_cache_s=0.0)
    async with AsyncTestClient(create_app(settings)) as c:
        _, old = await register_and_login(c)
        engine = create_engine(settings.database.auth_url)
        store = KeyStore(session_factory(engine), KeySealer(settings.tokens.signing_kek()))
        old_kid = jwt.get_unverified_header(old["access_token"])["kid"]
        new_kid = await store.create()
        _, new = await register_and_login(c)
        assert jwt.get_unverified_header(new["access_token"])["kid"] == new_kid
        kids = {k["kid"] for k in (await c.get("/.well-known/jwks.json")).json()["keys"]}
        assert {old_kid, new_kid} <= kids
        await asyncio.sleep(1.1)  # the verifier refetches keys at most once a second
        assert (await c.get("/auth/me", headers=bearer(old["access_token"]))).status_code == 200
        for key in await store.live():
            if key.kid != new_kid:
                await store.retire(key.kid)
        await engine.dispose()
        await asyncio.sleep(1.1)
        assert (await c.get("/auth/me", headers=bearer(old["access_token"]))).status_code == 401
        assert (await c.get("/auth/me", headers=bearer(new["access_token"]))).status_code == 200


async def test_login_rehashes_when_parameters_change(auth_settings: Settings) -> None:
    address = email()
    async with AsyncTestClient(create_app(auth_settings)) as c:
        r = await c.post("/auth/register", json={"email": address, "password": PASSWORD})
        assert r.status_code == 201
    stronger = auth_settings.replace(argon2_time_cost=3)
    async with AsyncTestClient(create_app(stronger)) as c:
        r = await c.post("/auth/login", json={"email": address, "password": PASSWORD})
        assert r.status_code == 200
    engine = create_engine(auth_settings.database.auth_url)
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                sa.text("SELECT password_hash FROM users WHERE email = :e"), {"e": address.lower()}
            )
        ).scalar_one()
    await engine.dispose()
    assert stored.startswith("$argon2id$")
    assert ",t=3," in stored


async def test_own_deletion_returns_a_watch_token_that_reads_only_that_saga(
    client: AsyncTestClient[Any],
) -> None:
    _, tokens = await register_and_login(client)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    me = (await client.get("/auth/me", headers=bearer)).json()
    r = await client.delete(f"/auth/users/{me['user_id']}", headers=bearer)
    assert r.status_code == 202, r.text
    saga_id, watch = r.json()["saga_id"], r.json()["watch_token"]
    # The person's own tokens end with the request; the watch token still reads the saga.
    assert (await client.get(f"/auth/sagas/{saga_id}", headers=bearer)).status_code == 401
    watched = await client.get(f"/auth/sagas/{saga_id}/watch",
                               headers={"Authorization": f"Bearer {watch}"})
    assert watched.status_code == 200, watched.text
    assert watched.json()["saga_id"] == saga_id
    assert watched.json()["user_id"] == me["user_id"]
    # It is no access token, and it reads no other saga.
    as_access = await client.get("/auth/me", headers={"Authorization": f"Bearer {watch}"})
    assert as_access.status_code == 401
    other = await client.get(f"/auth/sagas/{uuid.uuid4()}/watch",
                             headers={"Authorization": f"Bearer {watch}"})
    assert other.status_code == 404
    plain = await client.get(f"/auth/sagas/{saga_id}/watch",
                             headers={"Authorization": f"Bearer {tokens['refresh_token']}"})
    assert plain.status_code == 401


async def test_token_answers_are_not_stored_and_401s_carry_no_library_text(
    client: AsyncTestClient[Any],
) -> None:
    address, tokens = await register_and_login(client)
    r = await client.post("/auth/login", json={"email": address, "password": PASSWORD})
    assert "no-store" in r.headers["cache-control"]
    r = await client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200 and "no-store" in r.headers["cache-control"]

    head, payload, signature = r.json()["access_token"].split(".")
    flipped = "B" if signature[0] != "B" else "C"
    forged = f"{head}.{payload}.{flipped}{signature[1:]}"
    r = await client.get("/auth/me", headers=bearer(forged))
    assert r.status_code == 401
    assert r.json()["error"]["message"] == "invalid token"  # not PyJWT's "Signature verif…"


async def test_sign_ups_are_limited_per_client(auth_settings: Settings) -> None:
    settings = auth_settings.replace(
        register_max_per_client=3, redis_key_prefix=f"r{uuid.uuid4().hex[:8]}:"
    )
    async with AsyncTestClient(create_app(settings)) as c:
        codes = [(await c.post("/auth/register", json={"email": email(), "password": PASSWORD}
                               )).status_code for _ in range(4)]
        assert codes == [201, 201, 201, 429]

