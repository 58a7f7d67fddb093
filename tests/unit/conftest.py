"""The unit tier reaches no service: every address points at a closed port, and any TCP
connect is refused.

A unit test that needs PostgreSQL, RabbitMQ or Redis belongs in ``tests/integration``. The
closed port is a socket bound on loopback that never listens (the kernel refuses connects
to it); the connect guard also covers addresses built from ``Settings()`` defaults, which
point at the local services.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import tracing
from shared.config import ObservabilitySettings, Settings

# The URLs the test support reads (tests/support.py) beside the settings' own.
TEST_URLS = (
    "TEST_POSTGRES_URL",
    "TEST_RABBITMQ_URL",
    "TEST_RABBITMQ_MANAGEMENT_URL",
    "TEST_REDIS_URL",
)


def service_url_variables() -> list[str]:
    """Every environment variable that holds a service address."""
    names = [
        f.metadata["env"] for _, f in Settings.variables() if f.metadata["env"].endswith("_URL")
    ]
    return [*names, *TEST_URLS]


def pointed_at(url: str, port: int) -> str:
    """``url`` with its host and port replaced by ``127.0.0.1:port`` (user and path kept); an
    empty URL (a setting that defaults to another one, as AUDIT_DATABASE_URL does) stays empty."""
    if not url:
        return url
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@127.0.0.1:{port}" if user else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def refused(address: Any) -> ConnectionRefusedError:
    return ConnectionRefusedError(
        errno.ECONNREFUSED,
        f"unit tier: no service is reachable (connect to {address!r} refused by "
        "tests/unit/conftest.py; a test that needs a service belongs in tests/integration)",
    )


@pytest.fixture(scope="session")
def closed_port() -> Iterator[int]:
    """A loopback port that is bound (nobody else gets it) and never listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture(autouse=True)
def _no_service_reachable(closed_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = {f.metadata["env"]: f.default for _, f in Settings.variables()}
    for name in service_url_variables():
        url = defaults.get(name, "tcp://127.0.0.1/")
        monkeypatch.setenv(name, pointed_at(str(url), closed_port))

    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise refused(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            return errno.ECONNREFUSED
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for one test, its spans kept in memory; off again after it."""
    exporter = InMemorySpanExporter()
    assert tracing.configure_tracing(ObservabilitySettings(), service="unit", exporter=exporter)
    try:
        yield exporter
    finally:
        tracing.shutdown_tracing()
    assert not tracing.enabled()
