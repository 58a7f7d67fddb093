"""The account store's contract (login, refresh rotation, logout), for any AccountStore.

A subclass provides ``world``: the store and a way to add a user.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apps.auth.accounts import AccountStore, AccountView
from apps.auth.models import UserStatus


class World(Protocol):
    store: AccountStore

    async def add_user(self, email: str, status: str = UserStatus.ACTIVE) -> uuid.UUID: ...


def _later(hours: float = 1) -> datetime:
    return datetime.now(UTC) + timedelta(hours=hours)


async def _family(world: World, status: str = UserStatus.ACTIVE) -> tuple[uuid.UUID, ...]:
    user_id = await world.add_user(f"{uuid.uuid4().hex[:8]}@example.org", status)
    family_id, jti = uuid.uuid4(), uuid.uuid4()
    await world.store.open_family(user_id, family_id, jti, _later())
    return user_id, family_id, jti


class AccountStoreContract:
    async def test_credentials_by_email(self, world: World) -> None:
        email = f"{uuid.uuid4().hex[:8]}@example.org"
        user_id = await world.add_user(email)
        found = await world.store.credentials(email)
        assert found is not None and found.user_id == user_id and found.roles == ["user"]
        assert found.status == UserStatus.ACTIVE
        assert await world.store.credentials("nobody@example.org") is None

    async def test_a_new_password_hash_is_stored(self, world: World) -> None:
        email = f"{uuid.uuid4().hex[:8]}@example.org"
        user_id = await world.add_user(email)
        await world.store.set_password_hash(user_id, "$new$hash")
        found = await world.store.credentials(email)
        assert found is not None and found.password_hash == "$new$hash"

    async def test_a_token_rotates_once(self, world: World) -> None:
        user_id, family_id, jti = await _family(world)
        assert await world.store.spent(jti, family_id, grace_s=10) is None
        rotation = await world.store.rotate(jti, family_id)
        assert rotation is not None and rotation.user_id == user_id
        assert rotation.new_jti != jti and rotation.roles == ["user"]
        assert await world.store.rotate(jti, family_id) is None
        spent = await world.store.spent(jti, family_id, grace_s=10)
        assert spent is not None and spent.replaced_by == rotation.new_jti
        assert spent.within_grace
        assert await world.store.rotate(rotation.new_jti, family_id) is not None

    async def test_a_spent_token_is_in_grace_only_while_fresh_and_its_successor_unused(
        self, world: World
    ) -> None:
        _, family_id, jti = await _family(world)
        rotation = await world.store.rotate(jti, family_id)
        assert rotation is not None
        no_grace = await world.store.spent(jti, family_id, grace_s=0)
        assert no_grace is not None and not no_grace.within_grace
        await world.store.rotate(rotation.new_jti, family_id)  # the successor is spent
        later = await world.store.spent(jti, family_id, grace_s=10)
        assert later is not None and not later.within_grace

    async def test_a_token_of_another_family_or_unknown_does_not_rotate(
        self, world: World
    ) -> None:
        _, family_id, jti = await _family(world)
        assert await world.store.rotate(jti, uuid.uuid4()) is None
        assert await world.store.rotate(uuid.uuid4(), family_id) is None
        assert await world.store.spent(uuid.uuid4(), family_id, grace_s=10) is None

    async def test_a_revoked_family_does_not_rotate(self, world: World) -> None:
        _, family_id, jti = await _family(world)
        assert await world.store.rotate(jti, family_id) is not None
        await world.store.revoke_family(family_id, "logout")
        assert await world.store.rotate(jti, family_id) is None
        assert await world.store.spent(jti, family_id, grace_s=10) is None

    async def test_an_inactive_user_does_not_rotate(self, world: World) -> None:
        _, family_id, jti = await _family(world, UserStatus.DELETING)
        assert await world.store.rotate(jti, family_id) is None

    async def test_the_account_view(self, world: World) -> None:
        email = f"{uuid.uuid4().hex[:8]}@example.org"
        user_id = await world.add_user(email)
        assert await world.store.account(user_id) == AccountView(email, ["user"], "active")
        assert await world.store.account(uuid.uuid4()) is None
