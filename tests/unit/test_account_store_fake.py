"""The account store's contract on the in-memory fake the auth unit tests use."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest

from apps.auth.models import UserStatus
from tests.contracts.account_store import AccountStoreContract
from tests.fakes import FakeAccountStore


@dataclass
class FakeWorld:
    store: FakeAccountStore = field(default_factory=FakeAccountStore)

    async def add_user(self, email: str, status: str = UserStatus.ACTIVE) -> uuid.UUID:
        return self.store.add_user(email, "$fake1$x$y", status=status)


class TestFakeAccountStore(AccountStoreContract):
    @pytest.fixture
    def world(self) -> FakeWorld:
        return FakeWorld()
