from __future__ import annotations

from collections.abc import Iterator

import pytest

from shared.config import Settings
from tests.support import isolated_settings


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    """One set of migrated databases and one vhost for the whole test session."""
    with isolated_settings("s") as s:
        yield s
