"""TLS settings: each link's URL carries its CA bundle, verification cannot be turned off,
libpq's parameters become asyncpg's ``ssl``; plain-http JWKS only from loopback. (The
handshakes themselves: tests/integration/test_tls.py.)"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from scripts.dev_tls import new_ca, write
from shared.auth import HttpJwksSource
from shared.config import Settings
from shared.tls import TlsConfigError, postgres_connect_args


@pytest.fixture
def ca(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_bytes(new_ca().pem)
    return str(path)


def test_tls_ca_file_goes_into_every_tls_url_that_names_none(ca: str, tmp_path: Path) -> None:
    own = tmp_path / "own.pem"
    own.write_bytes(Path(ca).read_bytes())
    s = Settings.build(
        tls_ca_file=ca,
        auth_database_url="postgresql+asyncpg://u@db:5432/authdb?sslmode=verify-full",
        users_database_url=f"postgresql+asyncpg://u@db/apidb?sslmode=verify-ca&sslrootcert={own}",
        admin_database_url="postgresql+asyncpg://u@db/admindb",  # no TLS: left alone
        redis_url="rediss://redis:6380/0",
        rabbitmq_url="amqps://g:g@mq-1:5671/, amqps://g:g@mq-2:5671/,amqp://g:g@mq-3:5672/",
    )
    assert s.database.auth_url.endswith(f"?sslmode=verify-full&sslrootcert={ca}")
    assert s.database.users_url.endswith(f"sslrootcert={own}")
    assert s.database.admin_url == "postgresql+asyncpg://u@db/admindb"
    assert s.redis.url == f"rediss://redis:6380/0?ssl_ca_certs={ca}"
    assert s.broker.url.split(",") == [
        f"amqps://g:g@mq-1:5671/?cafile={ca}", f"amqps://g:g@mq-2:5671/?cafile={ca}",
        "amqp://g:g@mq-3:5672/",
    ]
    # Built again (replace, env_for round trips): nothing is added twice.
    assert s.replace() == s
    assert Settings.from_env(s.environment()) == s


@pytest.mark.parametrize(
    ("field", "url", "error"),
    [
        ("redis_url", "rediss://r/0?ssl_cert_reqs=none", "REDIS_URL: ssl_cert_reqs=none turns"),
        ("redis_url", "rediss://r/0?ssl_check_hostname=false", "ssl_check_hostname=false"),
        ("rabbitmq_url", "amqps://mq/?no_verify_ssl=1", "RABBITMQ_URL: no_verify_ssl turns"),
        ("auth_database_url", "postgresql+asyncpg://u@db/a?sslmode=verify", "unknown sslmode"),
        ("auth_database_url", "postgresql+asyncpg://u@db/a?sslmode=verify-full&sslrootcert=/x.pem",
         "AUTH_DATABASE_URL: sslrootcert '/x.pem' does not exist"),
        ("redis_url", "rediss://r/0?ssl_ca_certs=/nope.pem", "ssl_ca_certs '/nope.pem' does not"),
    ],
)
def test_a_tls_url_that_would_not_verify_is_refused(field: str, url: str, error: str) -> None:
    with pytest.raises(TlsConfigError) as caught:
        Settings.build(**{field: url})
    assert error in str(caught.value)


def test_a_missing_ca_bundle_is_refused_once_a_link_uses_it() -> None:
    no_link_yet = Settings.build(tls_ca_file="/missing.pem")
    assert no_link_yet.tls.ca_file == "/missing.pem"
    with pytest.raises(TlsConfigError, match=r"TLS_CA_FILE '/missing\.pem' does not exist"):
        Settings.build(tls_ca_file="/missing.pem", redis_url="rediss://r:6380/0")


def test_libpq_parameters_become_asyncpgs_ssl_argument(ca: str) -> None:
    base = "postgresql+asyncpg://u@db:5432/authdb"
    assert postgres_connect_args(base) == (base, {})
    url, args = postgres_connect_args(f"{base}?sslmode=verify-full&sslrootcert={ca}&x=1")
    assert url == f"{base}?x=1"
    context = args["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    _, args = postgres_connect_args(f"{base}?sslmode=verify-ca&sslrootcert={ca}")
    assert not args["ssl"].check_hostname
    assert args["ssl"].verify_mode == ssl.CERT_REQUIRED
    # libpq: ``require`` with a root certificate verifies it; without, it only encrypts.
    _, args = postgres_connect_args(f"{base}?sslmode=require&sslrootcert={ca}")
    assert args["ssl"].verify_mode == ssl.CERT_REQUIRED
    assert postgres_connect_args(f"{base}?sslmode=require")[1] == {"ssl": "require"}
    assert postgres_connect_args(f"{base}?sslmode=disable")[1] == {"ssl": False}


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("http://127.0.0.1:8002/.well-known/jwks.json", True),
        ("http://127.8.9.10:8002/.well-known/jwks.json", True),
        ("http://localhost:8002/.well-known/jwks.json", True),
        ("http://[::1]:8002/.well-known/jwks.json", True),
        ("https://auth.internal/.well-known/jwks.json", True),
        ("http://auth:8002/.well-known/jwks.json", False),
        ("http://10.0.0.5:8002/.well-known/jwks.json", False),
        ("http://localhost.example.com/.well-known/jwks.json", False),
        ("ftp://127.0.0.1/jwks.json", False),
    ],
)
def test_plain_http_jwks_only_from_loopback(url: str, accepted: bool) -> None:
    if accepted:
        HttpJwksSource(url)
    else:
        with pytest.raises(TlsConfigError, match="must come over https"):
            HttpJwksSource(url)


def test_the_development_ca_is_made_once_and_renewed_when_hosts_change(tmp_path: Path) -> None:
    assert write(tmp_path, ["auth", "127.0.0.1"])
    first = (tmp_path / "ca.pem").read_bytes()
    assert not write(tmp_path, ["auth", "127.0.0.1"])  # a restart keeps them
    assert (tmp_path / "ca.pem").read_bytes() == first
    assert (tmp_path / "server-key.pem").stat().st_mode & 0o777 == 0o600
    context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server-key.pem")
    assert write(tmp_path, ["auth", "users"])  # other names: a new CA and certificate
    assert (tmp_path / "ca.pem").read_bytes() != first
