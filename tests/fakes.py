"""In-memory fakes of the product's ports, for the unit tier. Each one passes the contract
suite its real adapter passes (``tests/contracts``)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession

from amsctl.dlq.broker import MovePlan, Outcome, QueueInfo, replay_headers
from amsctl.dlq.model import DeadLetter, parse_dead_letter, replay_refusal, work_queue_of
from apps.auth.accounts import AccountView, Credentials, Rotation, SpentToken
from apps.auth.keys import SigningKey
from apps.auth.models import SagaStatus, StepStatus, UserStatus
from apps.auth.sagas import ACTIVE, SagaState, deadline_in
from outbox.writer import Emit
from shared import topology
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
    commands: list[tuple[Message, Emit]] = field(default_factory=list)
    """Every command sent, with the emit it went out through."""

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
        emit: Emit | None = None,
    ) -> datetime | None:
        deadline = deadline_in(timeout_s) if timeout_s is not None else None
        if command is not None:
            if emit is None:
                raise TypeError(f"step {name!r} sends {command.event_type!r}: it needs an emit")
            if deadline is not None and hasattr(command, "deadline"):
                command = msgspec.structs.replace(command, deadline=deadline)  # as authdb's
            await emit(session, command)
            self.commands.append((command, emit))
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
    ``async with sessions() as session, session.begin():`` works and does nothing; what is
    executed on it (an outbox insert by an :class:`outbox.Emitter`) is only recorded."""

    def __init__(self) -> None:
        self.executed: list[dict[str, Any]] = []

    async def execute(self, _: object, params: dict[str, Any] | None = None) -> None:
        self.executed.append(dict(params or {}))

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


@dataclass
class FakeUser:
    email: str
    password_hash: str
    roles: list[str]
    status: str = UserStatus.ACTIVE


@dataclass
class FakeFamily:
    user_id: uuid.UUID
    expires_at: datetime
    revoked: str | None = None


@dataclass
class FakeToken:
    family_id: uuid.UUID
    used_at: datetime | None = None
    replaced_by: uuid.UUID | None = None


@dataclass
class FakeAccountStore:
    """:class:`apps.auth.accounts.AccountStore` in memory."""

    users: dict[uuid.UUID, FakeUser] = field(default_factory=dict)
    families: dict[uuid.UUID, FakeFamily] = field(default_factory=dict)
    tokens: dict[uuid.UUID, FakeToken] = field(default_factory=dict)

    def add_user(self, email: str, password_hash: str, roles: tuple[str, ...] = ("user",),
                 status: str = UserStatus.ACTIVE) -> uuid.UUID:
        user_id = uuid.uuid4()
        self.users[user_id] = FakeUser(email, password_hash, list(roles), status)
        return user_id

    async def credentials(self, email: str) -> Credentials | None:
        for user_id, user in self.users.items():
            if user.email == email:
                return Credentials(user_id, user.password_hash, list(user.roles), user.status)
        return None

    async def set_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None:
        self.users[user_id].password_hash = password_hash

    async def open_family(
        self, user_id: uuid.UUID, family_id: uuid.UUID, jti: uuid.UUID, expires_at: datetime
    ) -> None:
        self.families[family_id] = FakeFamily(user_id, expires_at)
        self.tokens[jti] = FakeToken(family_id)

    async def rotate(self, jti: uuid.UUID, family_id: uuid.UUID) -> Rotation | None:
        token, family = self.tokens.get(jti), self._live(family_id)
        if token is None or token.family_id != family_id or token.used_at or family is None:
            return None
        new_jti = uuid.uuid4()
        token.used_at, token.replaced_by = datetime.now(UTC), new_jti
        self.tokens[new_jti] = FakeToken(family_id)
        roles = self.users[family.user_id].roles
        return Rotation(family.user_id, list(roles), family.expires_at, new_jti)

    async def spent(
        self, jti: uuid.UUID, family_id: uuid.UUID, *, grace_s: float
    ) -> SpentToken | None:
        token, family = self.tokens.get(jti), self._live(family_id)
        if token is None or token.family_id != family_id or family is None:
            return None
        if token.used_at is None or token.replaced_by is None:
            return None
        successor = self.tokens.get(token.replaced_by)
        fresh = token.used_at > datetime.now(UTC) - timedelta(seconds=grace_s)
        within = fresh and successor is not None and successor.used_at is None
        roles = self.users[family.user_id].roles
        return SpentToken(family.user_id, list(roles), family.expires_at, token.replaced_by, within)

    def _live(self, family_id: uuid.UUID) -> FakeFamily | None:
        family = self.families.get(family_id)
        if family is None or family.revoked is not None or family.expires_at <= datetime.now(UTC):
            return None
        return family if self.users[family.user_id].status == UserStatus.ACTIVE else None

    async def revoke_family(self, family_id: uuid.UUID, reason: str) -> None:
        family = self.families.get(family_id)
        if family is not None and family.revoked is None:
            family.revoked = reason

    async def account(self, user_id: uuid.UUID) -> AccountView | None:
        user = self.users.get(user_id)
        return None if user is None else AccountView(user.email, list(user.roles), user.status)


@dataclass
class FakeSessions:
    """:class:`apps.auth.stores.Sessions` in memory (Redis in production)."""

    live: dict[str, str] = field(default_factory=dict)
    denied: set[str] = field(default_factory=set)

    async def open(self, session_id: str, user_id: str, ttl_s: int) -> None:
        self.live[session_id] = user_id

    async def close(self, session_id: str) -> None:
        self.live.pop(session_id, None)

    async def alive(self, session_id: str) -> bool:
        return session_id in self.live

    async def deny(self, jti: str, ttl_s: int) -> None:
        self.denied.add(jti)

    async def is_revoked(self, jti: str, session_id: str | None) -> bool:
        """:class:`shared.auth.Revocations`, the verifier's view of the same sessions."""
        return jti in self.denied or (session_id is not None and session_id not in self.live)


@dataclass
class FakeLoginLimits:
    """:class:`apps.auth.stores.LoginLimits` that never refuses; it counts."""

    failures: dict[str, int] = field(default_factory=dict)

    async def check(self, account: str, client: str) -> None:
        return None

    async def failed(self, account: str, client: str) -> None:
        self.failures[account] = self.failures.get(account, 0) + 1

    async def succeeded(self, account: str, client: str) -> None:
        self.failures.pop(account, None)

    async def check_registration(self, client: str) -> None:
        return None


class MemoryKeys:
    """:class:`apps.auth.keys.KeyStore` with one Ed25519 key generated in memory."""

    def __init__(self) -> None:
        private = Ed25519PrivateKey.generate()
        jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private.public_key()))
        jwk.update(kid="test-key", alg="EdDSA", use="sig")
        self.key = SigningKey("test-key", private, jwk, datetime.now(UTC))

    async def live(self) -> list[SigningKey]:
        return [self.key]


@dataclass
class FakeDeadLetterStore:
    """:class:`amsctl.dlq.broker.DeadLetterStore` in memory: queues of dead letters, and what
    replays delivered to each work queue (message id, headers)."""

    queues: dict[str, list[DeadLetter]] = field(default_factory=dict)
    delivered: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    targets: frozenset[str] = field(default_factory=lambda: topology.DEFAULT.replay_targets)
    """The work queues of the topology (bound to the replay exchange)."""

    def add(self, queue: str, message_id: str, headers: dict[str, Any]) -> None:
        letters = self.queues.setdefault(queue, [])
        props = {"message_id": message_id, "type": "user.registered"}
        letters.append(parse_dead_letter(queue, len(letters), headers, b"{}", props))

    def dead_letter_queues(self) -> list[QueueInfo]:
        return [
            QueueInfo(name, len(letters), 0, work_queue_of(name))
            for name, letters in sorted(self.queues.items())
        ]

    async def browse(self, queue: str, *, limit: int) -> list[DeadLetter]:
        return [replace(dl, position=i) for i, dl in enumerate(self.queues[queue][:limit])]

    async def move(
        self, queue: str, plan: MovePlan, on_window: Callable[[list[Outcome]], None]
    ) -> list[Outcome]:
        kept: list[DeadLetter] = []
        outcomes: list[Outcome] = []
        window: list[Outcome] = []
        for letter in self.queues[queue]:
            room = plan.max_count is None or len(outcomes) + len(window) < plan.max_count
            if not (room and plan.select(letter)):
                kept.append(letter)
                continue
            window.append(self._settle(letter, plan, kept))
            if len(window) == plan.window:
                outcomes.extend(window)
                on_window(window)
                window = []
        if window:
            outcomes.extend(window)
            on_window(window)
        self.queues[queue] = [replace(dl, position=i) for i, dl in enumerate(kept)]
        return outcomes

    def _settle(self, letter: DeadLetter, plan: MovePlan, kept: list[DeadLetter]) -> Outcome:
        target = None if plan.replay_stamp is None else letter.failed_queue
        error = None
        if plan.replay_stamp is not None:
            error = replay_refusal(letter.queue, letter.failed_queue, self.targets)
            if error is not None:
                kept.append(letter)
            else:
                headers = replay_headers(letter.headers, plan.replay_stamp)
                self.delivered.setdefault(letter.failed_queue, []).append(
                    (letter.message_id, headers)
                )
        return Outcome(
            letter.message_id, letter.queue, target, error is None,
            None if error is None else f"ValueError: {error}", letter.type, letter.error_type,
        )
