"""Test tiers and the session-wide fixtures.

Every test lives in one tier folder and gets that tier's marker from it: ``tests/unit``
(``unit``: no service reachable, fakes only), ``tests/integration`` (``integration``: the
local PostgreSQL, RabbitMQ and Redis) and ``tests/e2e`` (``e2e``: processes started as a
user starts them) and ``tests/cluster`` (``cluster``: the system as deployed, one network
namespace per process, a three-node RabbitMQ cluster, faults; needs root). ``make test-fast``
runs the unit tier; ``make test`` runs lint and the unit tier first, then the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import Settings

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "e2e", "cluster")


def tier_of(path: Path) -> str | None:
    """The tier of a test file: the name of its folder right under ``tests/``."""
    try:
        first = path.resolve().relative_to(TESTS).parts[0]
    except (ValueError, IndexError):
        return None
    return first if first in TIERS else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    outside = sorted({str(item.path) for item in items if tier_of(item.path) is None})
    if outside:
        raise pytest.UsageError(
            "tests outside a tier folder (tests/unit, tests/integration, tests/e2e, "
            "tests/cluster): "
            + ", ".join(outside)
        )
    for item in items:
        item.add_marker(getattr(pytest.mark, str(tier_of(item.path))))


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    """One set of migrated databases and one vhost for the whole test session."""
    from tests.support import isolated_settings

    with isolated_settings("s") as s:
        yield s
