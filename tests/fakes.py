"""In-memory fakes of the product's ports, for the unit tier. Each one passes the contract
suite its real adapter passes (``tests/contracts``)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from apps.auth.models import SagaStatus, StepStatus, UserStatus
from apps.auth.sagas import ACTIVE, SagaState, deadline_in
from shared.events import Message
from workers.runtime.context import MessageContext


@dataclass
class FakeStep:
    kind: str
    status: StepStatus
    deadline: datetime | None
    detail: str | None = None
    late_replies: int = 0


@dataclass
class FakeSagaStore:
    """:class:`apps.auth.sagas.SagaStore` in memory; the session argument is ignored."""

    sagas: dict[uuid.UUID, SagaState] = field(default_factory=dict)
    deadlines: dict[uuid.UUID, datetime | None] = field(default_factory=dict)
    steps: dict[tuple[uuid.UUID, str], FakeStep] = field(default_factory=dict)
    users: dict[uuid.UUID, UserStatus] = field(default_factory=dict)
    commands: list[tuple[Message, dict[str, str] | None]] = field(default_factory=list)

    def add(self, user_status: UserStatus = UserStatus.DELETING) -> SagaState:
        """A running saga of a new user (what ``start_deletion`` leaves before its first step)."""
        saga = SagaState(uuid.uuid4(), uuid.uuid4(), SagaStatus.RUNNING, None, None)
        self.sagas[saga.id] = saga
        self.deadlines[saga.id] = None
        self.users[saga.user_id] = user_status
        return saga

    async def lock(self, session: AsyncSession, saga_id: uuid.UUID) -> SagaState | None:
        return self.sagas.get(saga_id)

    async def step_status(
        self, session: AsyncSession, saga_id: uuid.UUID, step: str
    ) -> StepStatus | None:
        found = self.steps.get((saga_id, step))
        return None if found is None else found.status

    async def start_step(
        self, session: AsyncSession, saga_id: uuid.UUID, name: str, kind: str = "action",
        timeout_s: float | None = None, command: Message | None = None,
        headers: dict[str, str] | None = None,
    ) -> datetime | None:
        deadline = deadline_in(timeout_s) if timeout_s is not None else None
        if command is not None:
            if deadline is not None and hasattr(command, "deadline"):
                command = msgspec.structs.replace(command, deadline=deadline)  # as authdb's
            self.commands.append((command, headers))
        self.steps[(saga_id, name)] = FakeStep(kind, StepStatus.PENDING, deadline)
        self.sagas[saga_id] = replace(self.sagas[saga_id], current_step=name)
        self.deadlines[saga_id] = deadline
        return deadline

    async def finish_step(
        self, session: AsyncSession, saga_id: uuid.UUID, name: str, status: StepStatus,
        detail: str | None = None,
    ) -> bool:
        step = self.steps.get((saga_id, name))
        if step is None or step.status != StepStatus.PENDING:
            return False
        step.status, step.detail = status, detail
        return True

    async def recover_step(
        self, session: AsyncSession, saga_id: uuid.UUID, name: str, detail: str
    ) -> bool:
        step = self.steps.get((saga_id, name))
        if step is None or step.status != StepStatus.TIMED_OUT:
            return False
        step.status, step.detail = StepStatus.COMPLETED, detail
        return True

    async def note_late_reply(self, session: AsyncSession, saga_id: uuid.UUID, step: str) -> None:
        found = self.steps.get((saga_id, step))
        if found is not None:
            found.late_replies += 1

    async def set_status(
        self, session: AsyncSession, saga_id: uuid.UUID, status: SagaStatus, *,
        reason: str | None = None, final: bool = False,
    ) -> None:
        saga = self.sagas[saga_id]
        changes: dict[str, Any] = {"status": status}
        if reason is not None:
            changes["reason"] = reason
        if final:
            changes["current_step"] = None
            self.deadlines[saga_id] = None
        self.sagas[saga_id] = replace(saga, **changes)

    async def overdue(self, session: AsyncSession, limit: int) -> list[SagaState]:
        now = datetime.now(UTC)
        late = [
            (deadline, self.sagas[saga_id])
            for saga_id, deadline in self.deadlines.items()
            if deadline is not None and deadline < now and self.sagas[saga_id].status in ACTIVE
        ]
        return [saga for _, saga in sorted(late, key=lambda pair: pair[0])][:limit]

    async def delete_user(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        if self.users.get(user_id) == UserStatus.DELETING:
            self.users[user_id] = UserStatus.DELETED

    async def reactivate_user(self, session: AsyncSession, user_id: uuid.UUID) -> None:
        if self.users.get(user_id) == UserStatus.DELETING:
            self.users[user_id] = UserStatus.ACTIVE


class FakePasswords:
    """:class:`apps.auth.passwords.PasswordHasher` without argon2's cost: a salted HMAC.

    ``scheme`` marks the hashes it makes; a hash of another scheme needs a rehash.
    """

    def __init__(self, scheme: str = "fake1") -> None:
        self.scheme = scheme

    async def hash(self, password: str) -> str:
        salt = secrets.token_hex(8)
        return f"${self.scheme}${salt}${self._digest(salt, password)}"

    async def verify(self, password_hash: str | None, password: str) -> bool:
        if password_hash is None:
            return False
        try:
            _, _, salt, digest = password_hash.split("$")
        except ValueError:
            return False
        return hmac.compare_digest(digest, self._digest(salt, password))

    def needs_rehash(self, password_hash: str) -> bool:
        return not password_hash.startswith(f"${self.scheme}$")

    @staticmethod
    def _digest(salt: str, password: str) -> str:
        return hmac.new(salt.encode(), password.encode(), hashlib.sha256).hexdigest()


class NullSession:
    """Stands in for an ``AsyncSession`` where a fake store ignores the session:
    ``async with sessions() as session, session.begin():`` works and does nothing."""

    async def __aenter__(self) -> NullSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def begin(self) -> NullSession:
        return self


class RecordingContext(MessageContext):
    """A :class:`MessageContext` whose follow-up events are recorded, not written."""

    def __init__(self, event_type: str, consumer: str = "saga") -> None:
        super().__init__(
            message_id=str(uuid.uuid4()), event_type=event_type, correlation_id="corr-1",
            causation_id=None, headers={}, redelivered=False, attempts=0, consumer=consumer,
        )
        object.__setattr__(self, "emitted", [])

    async def emit(self, session: AsyncSession, event: Message) -> uuid.UUID:
        self.emitted.append(event)
        return uuid.uuid4()

    emitted: list[Message]
