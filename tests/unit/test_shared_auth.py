"""TokenVerifier: every token attack is refused; JWKS caching and revocation behave."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.auth import JwksCache, TokenVerifier
from shared.errors import AuthenticationFailed, DependencyUnavailable

ISS, AUD = "ams-auth", "ams-api"


def make_key(kid: str) -> tuple[Ed25519PrivateKey, dict[str, Any]]:
    private = Ed25519PrivateKey.generate()
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid=kid, alg="EdDSA", use="sig")
    return private, jwk


class FakeSource:
    def __init__(self, *jwks: dict[str, Any]) -> None:
        self.keys = list(jwks)
        self.calls = 0
        self.down = False

    async def fetch(self) -> dict[str, Any]:
        self.calls += 1
        if self.down:
            raise ConnectionError("auth service down")
        return {"keys": list(self.keys)}


class FakeRevocations:
    def __init__(self) -> None:
        self.denied: set[str] = set()
        self.sessions: set[str] = set()
        self.down = False

    async def is_revoked(self, jti: str, session_id: str | None) -> bool:
        if self.down:
            raise DependencyUnavailable("redis down")
        return jti in self.denied or (session_id is not None and session_id not in self.sessions)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISS, "aud": AUD, "sub": str(uuid.uuid4()), "iat": now, "nbf": now,
        "exp": now + 600, "jti": uuid.uuid4().hex, "typ": "access", "roles": ["user"],
        "sid": "s1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(private: Ed25519PrivateKey, kid: str = "k1", **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), private, algorithm="EdDSA", headers={"kid": kid})


@pytest.fixture
def setup() -> tuple[Ed25519PrivateKey, FakeSource, FakeRevocations, TokenVerifier]:
    private, jwk = make_key("k1")
    source, revocations = FakeSource(jwk), FakeRevocations()
    revocations.sessions.add("s1")
    verifier = TokenVerifier(
        JwksCache(source, ttl_s=300, min_refetch_interval_s=60), revocations,
        issuer=ISS, audience=AUD,
    )
    return private, source, revocations, verifier


async def test_valid_token_gives_principal(setup: Any) -> None:
    private, _, _, verifier = setup
    principal = await verifier.verify_access(sign(private, roles=["user", "admin"]))
    assert principal.roles == {"user", "admin"}
    assert principal.is_admin
    assert principal.session_id == "s1"


@pytest.mark.parametrize(
    "overrides",
    [
        {"exp": int(time.time()) - 60},
        {"aud": "someone-else"},
        {"iss": "evil"},
        {"typ": "refresh"},
        {"nbf": int(time.time()) + 600},
        {"jti": None},
        {"sub": "not-a-uuid"},
    ],
    ids=["expired", "wrong-aud", "wrong-iss", "refresh-type", "not-yet-valid", "no-jti", "bad-sub"],
)
async def test_bad_claims_are_refused(setup: Any, overrides: dict[str, Any]) -> None:
    private, _, _, verifier = setup
    with pytest.raises(AuthenticationFailed):
        await verifier.verify_access(sign(private, **overrides))


async def test_tampered_payload_is_refused(setup: Any) -> None:
    private, _, _, verifier = setup
    header, _, signature = sign(private).split(".")
    forged = base64.urlsafe_b64encode(json.dumps(claims(roles=["admin"])).encode()).rstrip(b"=")
    with pytest.raises(AuthenticationFailed):
        await verifier.verify_access(f"{header}.{forged.decode()}.{signature}")


async def test_alg_none_is_refused(setup: Any) -> None:
    _, _, _, verifier = setup
    token = jwt.encode(claims(), None, algorithm="none", headers={"kid": "k1"})
    with pytest.raises(AuthenticationFailed, match="algorithm"):
        await verifier.verify_access(token)


async def test_hmac_signed_with_public_key_is_refused(setup: Any) -> None:
    private, _, _, verifier = setup
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","kid":"k1","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    sig = hmac.new(public_pem, header + b"." + body, hashlib.sha256).digest()
    token = b".".join([header, body, base64.urlsafe_b64encode(sig).rstrip(b"=")]).decode()
    with pytest.raises(AuthenticationFailed, match="algorithm"):
        await verifier.verify_access(token)


async def test_garbage_is_refused(setup: Any) -> None:
    _, _, _, verifier = setup
    with pytest.raises(AuthenticationFailed):
        await verifier.verify_access("not.a.jwt")


async def test_denylisted_and_sessionless_tokens_are_refused(setup: Any) -> None:
    private, _, revocations, verifier = setup
    token = sign(private, jti="j1")
    revocations.denied.add("j1")
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await verifier.verify_access(token)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await verifier.verify_access(sign(private, sid="gone"))


async def test_revocation_store_down_fails_closed(setup: Any) -> None:
    private, _, revocations, verifier = setup
    revocations.down = True
    with pytest.raises(DependencyUnavailable):
        await verifier.verify_access(sign(private))


async def test_unknown_kid_refetches_once_then_rate_limits(setup: Any) -> None:
    private, source, _, verifier = setup
    await verifier.verify_access(sign(private))
    assert source.calls == 1
    rotated, jwk2 = make_key("k2")
    source.keys.append(jwk2)
    # Within the refetch interval an unknown kid is refused without hitting the source.
    with pytest.raises(AuthenticationFailed, match="unknown signing key"):
        await verifier.verify_access(sign(rotated, kid="k2"))
    assert source.calls == 1


async def test_unknown_kid_after_interval_picks_up_new_key() -> None:
    private, jwk = make_key("k1")
    rotated, jwk2 = make_key("k2")
    source, revocations = FakeSource(jwk), FakeRevocations()
    revocations.sessions.add("s1")
    now = [0.0]
    verifier = TokenVerifier(
        JwksCache(source, ttl_s=300, min_refetch_interval_s=5, clock=lambda: now[0]),
        revocations, issuer=ISS, audience=AUD,
    )
    await verifier.verify_access(sign(private))
    source.keys.append(jwk2)
    now[0] = 6.0
    principal = await verifier.verify_access(sign(rotated, kid="k2"))
    assert principal.jti
    assert source.calls == 2


async def test_cached_keys_survive_auth_outage() -> None:
    private, jwk = make_key("k1")
    source, revocations = FakeSource(jwk), FakeRevocations()
    revocations.sessions.add("s1")
    now = [0.0]
    verifier = TokenVerifier(
        JwksCache(source, ttl_s=10, min_refetch_interval_s=1, clock=lambda: now[0]),
        revocations, issuer=ISS, audience=AUD,
    )
    await verifier.verify_access(sign(private))
    source.down = True
    now[0] = 100.0  # cache expired and the auth service is down: stale keys still verify
    assert (await verifier.verify_access(sign(private))).jti
    assert source.calls == 2


async def test_stale_keys_are_trusted_only_for_a_bounded_time_while_auth_is_down() -> None:
    """Before, cached keys verified for ever during an outage, a retired key included."""
    private, jwk = make_key("k1")
    source, revocations = FakeSource(jwk), FakeRevocations()
    revocations.sessions.add("s1")
    now = [0.0]
    verifier = TokenVerifier(
        JwksCache(source, ttl_s=10, min_refetch_interval_s=1, max_stale_s=60,
                  clock=lambda: now[0]),
        revocations, issuer=ISS, audience=AUD,
    )
    await verifier.verify_access(sign(private))
    source.down = True
    now[0] = 69.0  # within ttl + max_stale: still verifies
    assert (await verifier.verify_access(sign(private))).jti
    now[0] = 71.0
    with pytest.raises(DependencyUnavailable, match="JWKS_MAX_STALE_S"):
        await verifier.verify_access(sign(private))
    source.down = False  # the auth service is back: keys refreshed, tokens verify again
    now[0] = 73.0
    assert (await verifier.verify_access(sign(private))).jti
