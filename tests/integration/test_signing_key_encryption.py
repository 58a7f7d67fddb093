"""Private signing keys are stored encrypted under a key-encryption key from outside authdb."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from amsctl.main import app as amsctl
from apps.auth.audit import AuditAction
from apps.auth.keys import KeyEncryptionError, KeySealer, KeyStore
from shared.config import Settings
from shared.db import asyncpg_dsn, create_engine, session_factory
from tests.integration.test_operator_audit import entries
from tests.support import TEST_KEK, env_for, free_port, isolated_settings

ROOT = Path(__file__).resolve().parents[2]
PEM = re.compile(r"-----BEGIN ([A-Z ]*PRIVATE KEY)-----[^-]+-----END \1-----")
NEW_KEK = "a brand new key-encryption key of 40 chars"


@pytest.fixture(scope="module")
def cfg() -> Iterator[Settings]:
    with isolated_settings("kek") as s:
        yield s


async def _store(cfg: Settings, kek: str | None) -> tuple[KeyStore, object]:
    engine = create_engine(cfg.database.auth_url, pool_size=1)
    return KeyStore(session_factory(engine), KeySealer(kek) if kek else None), engine


def _pg_dump(url: str) -> str:
    u = make_url(url)
    done = subprocess.run(
        ["pg_dump", "-h", u.host or "127.0.0.1", "-p", str(u.port or 5432),
         "-U", u.username or "postgres", "--data-only", "-t", "signing_keys", u.database or ""],
        capture_output=True, text=True, timeout=60, check=True,
    )
    return done.stdout


async def test_a_dump_of_authdb_gives_no_usable_private_key(cfg: Settings) -> None:
    store, engine = await _store(cfg, TEST_KEK)
    try:
        await store.create()
        await store.create()
        live = await store.live()
    finally:
        await engine.dispose()  # type: ignore[attr-defined]
    dump = _pg_dump(cfg.database.auth_url).replace("\\n", "\n")
    blocks = [m.group(0) for m in PEM.finditer(dump)]
    assert len(blocks) >= 2
    assert {m.group(1) for m in PEM.finditer(dump)} == {"ENCRYPTED PRIVATE KEY"}
    for block in blocks:
        with pytest.raises(TypeError, match="not given"):
            serialization.load_pem_private_key(block.encode(), password=None)
        with pytest.raises(ValueError):
            serialization.load_pem_private_key(block.encode(), password=b"guess" * 8)
    # ... while the key-encryption key opens them (the dump holds the real keys, sealed).
    opened = [serialization.load_pem_private_key(b.encode(), password=TEST_KEK.encode())
              for b in blocks]
    assert all(isinstance(k, Ed25519PrivateKey) for k in opened)
    assert len(live) >= 2


async def test_clear_rows_from_before_are_sealed_when_auth_starts(cfg: Settings) -> None:
    clear = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    conn = await asyncpg.connect(asyncpg_dsn(cfg.database.auth_url))
    try:
        await conn.execute(
            "INSERT INTO signing_keys (kid, algorithm, private_pem, public_jwk, retired_at)"
            " VALUES ('legacy-1', 'EdDSA', $1, '{}', now())", clear)
        store, engine = await _store(cfg, TEST_KEK)
        try:
            assert await store.seal_clear_rows() == 1
            assert await store.seal_clear_rows() == 0
        finally:
            await engine.dispose()  # type: ignore[attr-defined]
        stored = await conn.fetchval("SELECT private_pem FROM signing_keys WHERE kid='legacy-1'")
    finally:
        await conn.close()
    assert stored.startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    reopened = KeySealer(TEST_KEK).open("legacy-1", stored)
    assert reopened.private_bytes_raw() == serialization.load_pem_private_key(
        clear.encode(), None).private_bytes_raw()  # type: ignore[union-attr]


def test_rewrap_moves_every_key_to_a_new_kek(cfg: Settings, tmp_path: Path) -> None:
    new_file = tmp_path / "kek"
    new_file.write_text(NEW_KEK + "\n")
    env = env_for(cfg)
    result = CliRunner().invoke(amsctl, ["keys", "rewrap", "--new-kek-file", str(new_file),
                                         "--yes"], env=env)
    assert result.exit_code == 0, result.output
    assert "re-encrypted" in result.output

    async def check() -> None:
        old_store, engine = await _store(cfg, TEST_KEK)
        new_store, engine2 = await _store(cfg, NEW_KEK)
        try:
            with pytest.raises(KeyEncryptionError, match="does not decrypt"):
                await old_store.live()
            assert await new_store.live()
            back = KeySealer(TEST_KEK)
            assert await new_store.rewrap(back) >= 2  # leave the module's keys as they were
        finally:
            await engine.dispose()  # type: ignore[attr-defined]
            await engine2.dispose()  # type: ignore[attr-defined]

    asyncio.run(check())
    short = tmp_path / "short"
    short.write_text("too short")
    result = CliRunner().invoke(amsctl, ["keys", "rewrap", "--new-kek-file", str(short), "--yes"],
                                env=env)
    assert result.exit_code == 2 and "at least 32" in result.output

    [row] = entries(cfg, action=AuditAction.KEYS_REWRAP)
    assert row.outcome == "ok" and row.details["keys"] >= 2


@pytest.mark.parametrize(("kek", "message"), [
    ("", "SIGNING_KEY_KEK (or SIGNING_KEY_KEK_FILE) is not set"),
    ("the wrong key-encryption key, 32+ characters", "does not decrypt"),
])
def test_auth_refuses_to_start_without_the_right_kek(cfg: Settings, kek: str,
                                                      message: str) -> None:
    env = env_for(cfg, SIGNING_KEY_KEK=kek, AUTH_PORT=str(free_port()), LOG_FORMAT="console")
    done = subprocess.run([sys.executable, "-m", "apps.auth"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3, done.stdout + done.stderr
    assert message in done.stdout + done.stderr
