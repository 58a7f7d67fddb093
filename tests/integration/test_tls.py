"""TLS on every link, against private TLS-enabled servers started for this module from the
installed binaries (the machine's shared services are never reconfigured):

- PostgreSQL (the installed server's initdb/pg_ctl, own port and data directory,
  ``ssl=on``, TLS-only pg_hba),
- redis-server with only a ``--tls-port``,
- RabbitMQ behind a TLS-terminating proxy (``tests.faults.TcpProxy(tls=...)``) in front of the
  local broker: a whole AMQP session runs over the TLS link aiormq opens,
- the auth API itself over https (``HTTP_TLS_CERT_FILE``) serving the JWKS.

A throw-away CA (``scripts.dev_tls``) signs one server certificate for ``localhost``; a second
CA signs nothing. Each link: the right CA connects, the other CA is refused, and so is the
right CA at a name the certificate does not carry (``127.0.0.1``).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import pytest
import redis.exceptions
import sqlalchemy as sa

from scripts.dev_tls import issue, new_ca
from shared.auth import HttpJwksSource
from shared.broker import BrokerUnavailable, connect
from shared.config import Settings
from shared.db import asyncpg_dsn, create_engine
from shared.redis_client import create_redis
from shared.tls import TlsConfigError
from tests.faults import TcpProxy
from tests.live import live_api
from tests.support import ROOT, env_for, free_port, isolated_settings

PG_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
PG_BIN = PG_BINS[-1] if PG_BINS else Path("/usr/lib/postgresql/15/bin")
"""The newest installed server (Debian's layout; 15 here)."""
VERIFY_FAILED = "certificate verify failed"


@dataclass(frozen=True)
class Pki:
    ca: str
    other_ca: str
    cert: str
    key: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca, other = new_ca("ams test CA"), new_ca("some other CA")
    cert, key = issue(ca, ["localhost"])
    files = {"ca.pem": ca.pem, "other-ca.pem": other.pem, "server.pem": cert, "server-key.pem": key}
    for name, data in files.items():
        (directory / name).write_bytes(data)
    (directory / "server-key.pem").chmod(0o600)
    return Pki(*(str(directory / n) for n in ("ca.pem", "other-ca.pem", "server.pem",
                                               "server-key.pem")))


def settings_with(ca: str, **urls: str) -> Settings:
    return Settings.build(tls_ca_file=ca, **urls)


# --- PostgreSQL -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def postgres(pki: Pki) -> Iterator[int]:
    """A private PostgreSQL that accepts TLS connections only; its port."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail(f"PostgreSQL server binaries not found in {PG_BIN}")
    home = Path(tempfile.mkdtemp(prefix="ams-tls-pg-"))
    data, port = home / "data", free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:  # initdb refuses to run as root
        shutil.chown(home, "postgres", "postgres")
    subprocess.run([*as_postgres, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                    "--auth=trust", "-N"], check=True, capture_output=True)
    for name, source in (("server.crt", pki.cert), ("server.key", pki.key)):
        shutil.copy(source, data / name)
        (data / name).chmod(0o600)
        if as_postgres:
            shutil.chown(data / name, "postgres", "postgres")
    with (data / "postgresql.conf").open("a") as conf:
        conf.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
                   f"unix_socket_directories = '{home}'\nssl = on\nfsync = off\n")
    (data / "pg_hba.conf").write_text("hostssl all all 127.0.0.1/32 trust\n")
    ctl = [*as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(home / "log")]
    subprocess.run([*ctl, "-w", "start"], check=True, capture_output=True)
    try:
        yield port
    finally:
        subprocess.run([*ctl, "-m", "immediate", "stop"], check=False, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def pg_url(host: str, port: int, mode: str) -> str:
    return f"postgresql+asyncpg://postgres@{host}:{port}/postgres?sslmode={mode}"


async def over_tls(url: str) -> tuple[bool, bool]:
    """(engine's connection uses TLS, plain asyncpg connection uses TLS) for ``url``."""
    engine = create_engine(url, pool_size=1)
    query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    try:
        async with engine.connect() as conn:
            via_engine = bool(await conn.scalar(sa.text(query)))
    finally:
        await engine.dispose()
    conn2 = await asyncpg.connect(asyncpg_dsn(url))
    try:
        via_asyncpg = bool(await conn2.fetchval(query))
    finally:
        await conn2.close()
    return via_engine, via_asyncpg


async def test_postgres_verify_full_with_the_right_ca(postgres: int, pki: Pki) -> None:
    s = settings_with(pki.ca, auth_database_url=pg_url("localhost", postgres, "verify-full"))
    assert "sslrootcert=" in s.database.auth_url  # TLS_CA_FILE written into the URL
    assert await over_tls(s.database.auth_url) == (True, True)
    # verify-ca checks the CA only, so the address the certificate does not name passes.
    s = settings_with(pki.ca, auth_database_url=pg_url("127.0.0.1", postgres, "verify-ca"))
    assert await over_tls(s.database.auth_url) == (True, True)


async def test_postgres_refuses_another_ca_and_a_wrong_host_name(postgres: int, pki: Pki) -> None:
    other = settings_with(pki.other_ca,
                          auth_database_url=pg_url("localhost", postgres, "verify-full"))
    wrong_host = settings_with(pki.ca,
                               auth_database_url=pg_url("127.0.0.1", postgres, "verify-full"))
    for s, why in ((other, "unable to get local issuer certificate"),
                   (wrong_host, "IP address mismatch")):
        engine = create_engine(s.database.auth_url, pool_size=1)
        with pytest.raises(ssl.SSLCertVerificationError, match=why):
            async with engine.connect():
                pass
        await engine.dispose()
        with pytest.raises(ssl.SSLCertVerificationError, match=why):
            await asyncpg.connect(asyncpg_dsn(s.database.auth_url))
    # The private server takes TLS only: without it the server refuses the connection.
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        await asyncpg.connect(asyncpg_dsn(pg_url("localhost", postgres, "disable")))


def test_amsctl_with_another_ca_exits_3_naming_the_tls_error(postgres: int, pki: Pki) -> None:
    url = pg_url("localhost", postgres, "verify-full")
    env = env_for(Settings(), TLS_CA_FILE=pki.other_ca, AUTH_DATABASE_URL=url,
                  USERS_DATABASE_URL=url, ADMIN_DATABASE_URL=url)
    done = subprocess.run([sys.executable, "-m", "amsctl", "outbox", "status"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3, done.stdout + done.stderr
    message = " ".join(done.stderr.split())  # wrapped at the terminal's width
    assert "PostgreSQL is unreachable: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify " \
        "failed: unable to get local issuer certificate" in message
    assert "Traceback" not in done.stdout + done.stderr


def test_postgres_settings_refuse_a_missing_ca_or_an_unknown_mode(postgres: int) -> None:
    with pytest.raises(TlsConfigError, match=r"TLS_CA_FILE '/nonexistent/ca\.pem' does not exist"):
        settings_with("/nonexistent/ca.pem",
                      users_database_url=pg_url("localhost", postgres, "verify-full"))
    with pytest.raises(TlsConfigError, match="unknown sslmode 'verify_full'"):
        settings_with("", users_database_url=pg_url("localhost", postgres, "verify_full"))


# --- Redis ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def redis_tls(pki: Pki) -> Iterator[int]:
    """A private redis-server listening on a TLS port only; the port."""
    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="ams-tls-redis-"))
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", pki.cert, "--tls-key-file", pki.key, "--tls-ca-cert-file", pki.ca,
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(home)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        _wait_port(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(home, ignore_errors=True)


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {proc.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


async def test_rediss_with_the_right_ca_and_refused_otherwise(redis_tls: int, pki: Pki) -> None:
    good = settings_with(pki.ca, redis_url=f"rediss://localhost:{redis_tls}/0")
    client = create_redis(good.redis.url, timeout_s=5)
    assert await client.ping()
    await client.aclose()
    for s, why in (
        (settings_with(pki.other_ca, redis_url=f"rediss://localhost:{redis_tls}/0"),
         VERIFY_FAILED),
        (settings_with(pki.ca, redis_url=f"rediss://127.0.0.1:{redis_tls}/0"),
         "IP address mismatch"),
    ):
        client = create_redis(s.redis.url, timeout_s=5)
        with pytest.raises(redis.exceptions.ConnectionError, match=why):
            await client.ping()
        await client.aclose()


def test_a_rediss_url_that_turns_verification_off_is_refused(pki: Pki) -> None:
    for query in ("ssl_cert_reqs=none", "ssl_check_hostname=false"):
        with pytest.raises(TlsConfigError, match="turns verification off"):
            settings_with(pki.ca, redis_url=f"rediss://localhost:6380/0?{query}")


# --- RabbitMQ -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def amqps_port(pki: Pki) -> Iterator[int]:
    """TLS terminated in front of the local broker: aiormq's TLS link is the one tested."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(pki.cert, pki.key)
    with TcpProxy("127.0.0.1", 5672, tls=server) as proxy:
        yield proxy.port


async def test_amqps_with_the_right_ca_runs_a_session(amqps_port: int, pki: Pki) -> None:
    s = settings_with(pki.ca, rabbitmq_url=f"amqps://guest:guest@localhost:{amqps_port}/")
    assert "cafile=" in s.broker.url
    connection = await connect(s.broker.url, name="tls test")
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await channel.default_exchange.publish(aio_pika.Message(b"over tls"), queue.name)
        message = await queue.get(timeout=5, fail=False)
        for _ in range(50):
            if message is not None:
                break
            message = await queue.get(timeout=5, fail=False)
        assert message is not None
        assert message.body == b"over tls"
    finally:
        await connection.close()


async def test_amqps_refuses_another_ca_and_a_wrong_host_name(amqps_port: int, pki: Pki) -> None:
    for s, why in (
        (settings_with(pki.other_ca,
                       rabbitmq_url=f"amqps://guest:guest@localhost:{amqps_port}/"),
         VERIFY_FAILED),
        (settings_with(pki.ca, rabbitmq_url=f"amqps://guest:guest@127.0.0.1:{amqps_port}/"),
         "IP address mismatch"),
    ):
        with pytest.raises(BrokerUnavailable, match=why):
            await connect(s.broker.url, name="tls test")
    with pytest.raises(TlsConfigError, match="no_verify_ssl turns verification off"):
        settings_with(pki.ca, rabbitmq_url="amqps://localhost:5671/?no_verify_ssl=1")


# --- JWKS over https ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def https_auth(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The auth API as a process, serving https with the test CA's certificate; its port."""
    log = tmp_path_factory.mktemp("auth") / "auth.log"
    with isolated_settings("tls", redis_key_prefix=f"tls{uuid.uuid4().hex[:8]}:") as s:
        served = s.replace(http_tls_cert_file=pki.cert, http_tls_key_file=pki.key,
                           log_level="WARNING")
        probe = ssl.create_default_context(cafile=pki.ca)
        probe.check_hostname = False  # the probe dials 127.0.0.1
        with live_api(served, "auth", scheme="https", verify=probe, log=log) as url:
            yield int(url.rsplit(":", 1)[1])


async def test_jwks_over_https_with_the_right_ca(https_auth: int, pki: Pki) -> None:
    source = HttpJwksSource(f"https://localhost:{https_auth}/.well-known/jwks.json",
                            ca_file=pki.ca)
    try:
        document = await source.fetch()
    finally:
        await source.aclose()
    assert document["keys"]
    assert all(k["kty"] == "OKP" and "d" not in k for k in document["keys"])


async def test_jwks_refuses_another_ca_and_a_wrong_host_name(https_auth: int, pki: Pki) -> None:
    for url, ca, why in (
        (f"https://localhost:{https_auth}/.well-known/jwks.json", pki.other_ca, VERIFY_FAILED),
        (f"https://127.0.0.1:{https_auth}/.well-known/jwks.json", pki.ca, "IP address mismatch"),
    ):
        source = HttpJwksSource(url, ca_file=ca)
        try:
            with pytest.raises(httpx.ConnectError, match=why):
                await source.fetch()
        finally:
            await source.aclose()


def test_an_api_with_plain_http_jwks_to_another_host_refuses_to_start() -> None:
    env = env_for(Settings(), AUTH_JWKS_URL="http://auth:8002/.well-known/jwks.json",
                  USERS_PORT=str(free_port()))
    done = subprocess.run([sys.executable, "-m", "apps.users"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "users: configuration error: AUTH_JWKS_URL='http://auth:8002/.well-known/jwks.json': "
        "the signing keys must come over https (plain http is accepted only from a loopback "
        "address, for development)"
    ]
    assert "Traceback" not in done.stderr + done.stdout
