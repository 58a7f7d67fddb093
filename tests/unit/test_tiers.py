"""The unit tier is what it says: no service reachable, every test marked by its folder."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from shared.config import Settings
from tests.conftest import tier_of
from tests.unit.conftest import service_url_variables

TESTS = Path(__file__).resolve().parents[1]


def test_every_service_address_points_at_a_closed_port(closed_port: int) -> None:
    for name in service_url_variables():
        # An empty one defaults to another setting (AUDIT_DATABASE_URL: AUTH_DATABASE_URL).
        assert not os.environ[name] or urlsplit(os.environ[name]).port == closed_port, name
    settings = Settings.from_env()
    for url in (settings.database.auth_url, settings.database.audit_url, settings.broker.url,
                settings.redis.url):
        assert urlsplit(url).port == closed_port


@pytest.mark.parametrize("port", [5432, 5672, 15672, 6379])
def test_the_local_services_are_out_of_reach(port: int) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock,
        pytest.raises(ConnectionRefusedError, match="unit tier"),
    ):
        sock.connect(("127.0.0.1", port))


async def test_asyncio_connections_are_refused_too() -> None:
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", 5432)


def test_this_test_carries_the_unit_marker(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("unit") is not None
    assert request.node.get_closest_marker("integration") is None


def test_every_test_file_sits_in_a_tier_folder() -> None:
    files = list(TESTS.rglob("test_*.py"))
    assert files
    assert [str(p) for p in files if tier_of(p) is None] == []
    assert tier_of(TESTS / "e2e" / "test_soak.py") == "e2e"
    assert tier_of(TESTS / "support.py") is None
