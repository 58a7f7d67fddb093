"""In-memory fakes of the product's ports, for the unit tier. Each one passes the contract
suite its real adapter passes (``tests/contracts``)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import random
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
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
from apps.auth.login_delays import Bucket, DelayRule, LoginClient
from apps.auth.models import SagaStatus, StepStatus, UserStatus
from apps.auth.sagas import ACTIVE, SagaState, deadline_in
from apps.auth.stores import device_id
from outbox.publisher import PublisherUnavailable, RejectedByBroker
from outbox.rows import OutboxRow
from outbox.schema import PARTITIONS
from outbox.store import Failure, OutboxStatus
from outbox.writer import Emit, aggregate_partition
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
    clients: list[LoginClient] = field(default_factory=list)

    async def check(self, account: str, client: LoginClient) -> None:
        self.clients.append(client)

    async def failed(self, account: str, client: LoginClient) -> None:
        self.failures[account] = self.failures.get(account, 0) + 1

    async def succeeded(self, account: str, client: LoginClient) -> None:
        self.failures.pop(account, None)

    async def check_registration(self, client: str) -> None:
        return None


@dataclass
class FakeClock:
    now: float = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class MemoryLimitCounters:
    """:class:`apps.auth.login_delays.LimitCounters` in a dict, on a :class:`FakeClock`
    (Redis in production: :class:`apps.auth.stores.RedisLimitCounters`)."""

    clock: FakeClock = field(default_factory=FakeClock)
    counts: dict[str, tuple[int, float]] = field(default_factory=dict)
    """key -> (count, expires at)."""
    buckets: dict[str, tuple[Bucket, float]] = field(default_factory=dict)

    async def hit(self, key: str, window_s: int) -> tuple[int, int]:
        count, expires = await self._live(key)
        if not count:
            expires = self.clock() + window_s
        self.counts[key] = (count + 1, expires)
        return count + 1, math.ceil(expires - self.clock())

    async def peek(self, key: str) -> tuple[int, int]:
        count, expires = await self._live(key)
        return (count, math.ceil(expires - self.clock())) if count else (0, 0)

    async def _live(self, key: str) -> tuple[int, float]:
        count, expires = self.counts.get(key, (0, 0.0))
        return (count, expires) if expires > self.clock() else (0, 0.0)

    async def admit(self, key: str, rule: DelayRule) -> None:
        now = self.clock()
        bucket, expires = self.buckets.get(key, (Bucket(), 0.0))
        if expires <= now:
            bucket = Bucket()
        admitted = rule.admit(bucket, now)
        self.buckets[key] = (admitted, now + rule.keep_for(admitted, now))

    async def forget(self, key: str) -> None:
        self.buckets.pop(key, None)
        self.counts.pop(key, None)


@dataclass
class FakeKnownDevices:
    """:class:`apps.auth.stores.KnownDevices` in a dict: token -> account."""

    tokens: dict[str, str] = field(default_factory=dict)

    async def recognise(self, account: str, token: str) -> str | None:
        return device_id(token) if self.tokens.get(token) == account else None

    async def remember(self, account: str, token: str | None) -> str:
        if token is None or self.tokens.get(token) != account:
            token = secrets.token_urlsafe(32)
        self.tokens[token] = account
        return token


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


class FakePublisher:
    """:class:`outbox.publisher.Publisher` in memory: a broker that routes every routing key
    but ``unroutable`` to one queue (``published``, in order).

    The relay's tests steer it: ``nack(event_id, times)`` refuses an event that many times;
    ``hold()`` keeps every batch waiting for its confirms until ``release()``;
    ``break_next_confirm()`` lets the next batch reach the queue and then drops the connection
    before its confirms (the relay must count no attempt and publish it again); ``down``
    refuses connections (after ``connect_s``) and publishes.
    """

    def __init__(self, *, unroutable: Sequence[str] = ()) -> None:
        self.published: list[OutboxRow] = []
        """What reached the queue, in order (an unconfirmed batch's rows too)."""
        self.confirmed: list[OutboxRow] = []
        """What the broker confirmed, in order."""
        self.batches: list[list[OutboxRow]] = []
        """Every batch handed to :meth:`publish`, as handed."""
        self.unroutable = set(unroutable)
        self.connected = False
        self.down = False
        self.connect_s = 0.0
        """How long a connect takes (to succeed, or to fail when ``down``)."""
        self._nacks: dict[uuid.UUID, int] = {}
        self._open = asyncio.Event()
        self._open.set()
        self._break_next = False

    def nack(self, event_id: uuid.UUID, times: int = 1) -> None:
        self._nacks[event_id] = times

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def break_next_confirm(self) -> None:
        self._break_next = True

    async def connect(self) -> None:
        await asyncio.sleep(self.connect_s)
        if self.down:
            raise PublisherUnavailable("fake broker is down")
        self.connected = True

    async def close(self) -> None:
        self.connected = False

    async def publish(self, rows: Sequence[OutboxRow]) -> list[RejectedByBroker | None]:
        if self._cut_off():
            raise PublisherUnavailable("fake broker is down")
        self.batches.append(list(rows))
        outcomes = [self._route(row) for row in rows]
        if self._break_next:
            self._break_next, self.connected = False, False
            raise PublisherUnavailable("fake broker: connection lost before the confirms")
        await self._open.wait()
        if self._cut_off():  # went down while the confirms were held
            raise PublisherUnavailable("fake broker: connection lost before the confirms")
        sent = zip(rows, outcomes, strict=True)
        self.confirmed.extend(row for row, outcome in sent if outcome is None)
        return outcomes

    def _cut_off(self) -> bool:
        if self.down:
            self.connected = False
        return not self.connected

    def _route(self, row: OutboxRow) -> RejectedByBroker | None:
        if self._nacks.get(row.event_id, 0) > 0:
            self._nacks[row.event_id] -= 1
            return RejectedByBroker("nacked by the broker")
        if row.routing_key in self.unroutable:
            return RejectedByBroker("unroutable")
        self.published.append(row)
        return None


MINUS_INFINITY = datetime.min.replace(tzinfo=UTC)


@dataclass
class FakeOutboxRow:
    """One row of the fake outbox: what the relay reads, and the columns it keeps for itself."""

    row: OutboxRow
    partition: int
    next_attempt_at: datetime = MINUS_INFINITY
    last_error: str | None = None
    parked_at: datetime | None = None

    @property
    def waiting(self) -> bool:
        """An earlier attempt failed and the row is not parked: its aggregate waits."""
        return self.row.attempts > 0 and self.parked_at is None


class FakeOutbox:
    """One database's outbox table, its partition locks and its commit notifications, in
    memory; the :class:`FakeLeases` and :class:`FakeOutboxQueue` of several relays share it.

    ``notify`` off: commits are silent (relays find rows by polling). ``down``: new
    connections are refused (open connections stay until :meth:`drop`).
    """

    def __init__(self) -> None:
        self.rows: dict[int, FakeOutboxRow] = {}
        self.holders: dict[int, FakeLeases] = {}
        """Partition -> the leases holding its lock."""
        self.members: list[FakeLeases] = []
        self.notify = True
        self.down = False
        self.vacuums = 0
        self.may_vacuum = True
        """False: the relay's role does not own the outbox (a least-privilege role)."""
        self.vacuums_asked = 0
        self._next_id = 1

    def add(
        self, aggregate_id: str = "a", *, routing_key: str = "user.registered",
        aggregate_type: str = "user", payload: str = "{}",
    ) -> OutboxRow:
        """Commit one event of ``aggregate_id`` (its partition as the writer computes it)."""
        row = OutboxRow(
            id=self._next_id, event_id=uuid.uuid4(), event_type=routing_key,
            routing_key=routing_key, aggregate_type=aggregate_type, aggregate_id=aggregate_id,
            schema_version=1, payload=payload, headers="{}", correlation_id=None,
            traceparent=None, tracestate=None, created_at=datetime.now(UTC), attempts=0,
        )
        self._next_id += 1
        self.rows[row.id] = FakeOutboxRow(row, aggregate_partition(aggregate_type, aggregate_id))
        if self.notify:
            for member in list(self.members):
                member.notified()
        return row

    def drop(self, leases: FakeLeases) -> None:
        """The lease connection breaks: its locks are gone, its owner finds out on next use."""
        leases.broken = True
        self.leave(leases)

    def leave(self, leases: FakeLeases) -> None:
        """Free the locks and the membership of ``leases``."""
        for partition, holder in list(self.holders.items()):
            if holder is leases:
                del self.holders[partition]
        if leases in self.members:
            self.members.remove(leases)


class FakeLeases:
    """:class:`outbox.leases.PartitionLeases` on a :class:`FakeOutbox`."""

    def __init__(self, outbox: FakeOutbox) -> None:
        self._outbox = outbox
        self.owned: set[int] = set()
        self.broken = False
        self._open = False
        self._on_notify: Callable[[], None] = lambda: None

    @property
    def alive(self) -> bool:
        return self._open and not self.broken

    async def open(self, on_notify: Callable[[], None]) -> None:
        if self._outbox.down:
            raise ConnectionError("fake outbox: connection refused")
        self._open, self.broken, self.owned = True, False, set()
        self._on_notify = on_notify
        self._outbox.members.append(self)

    async def close(self) -> None:
        self.lost()

    def lost(self) -> None:
        self._outbox.leave(self)
        self._open, self.owned = False, set()

    def notified(self) -> None:
        if self.alive:
            self._on_notify()

    async def share(self) -> int:
        self._require()
        return math.ceil(PARTITIONS / max(1, len(self._outbox.members)))

    async def acquire_up_to(self, share: int) -> None:
        self._require()
        free = [p for p in range(PARTITIONS) if p not in self.owned]
        random.shuffle(free)
        for partition in free:
            if len(self.owned) >= share:
                return
            if self._outbox.holders.setdefault(partition, self) is self:
                self.owned.add(partition)

    async def release_down_to(self, share: int) -> None:
        self._require()
        for partition in sorted(self.owned, reverse=True)[: max(0, len(self.owned) - share)]:
            del self._outbox.holders[partition]
            self.owned.discard(partition)

    def _require(self) -> None:
        if not self.alive:
            raise ConnectionError("the fake lease connection is closed")


class FakeOutboxQueue:
    """:class:`outbox.store.OutboxQueue` on a :class:`FakeOutbox`: claims need ``leases``
    alive, as the SQL adapter's run on the lease connection. Records every claim (time,
    partitions, limit) and every failure written; ``fail_writes`` makes that many next
    writes raise :class:`ConnectionError`."""

    def __init__(self, outbox: FakeOutbox, leases: FakeLeases) -> None:
        self._outbox = outbox
        self._leases = leases
        self.connected = False
        self.claims: list[tuple[float, list[int], int]] = []
        self.failures: list[Failure] = []
        self.fail_writes = 0

    async def connect(self) -> None:
        if self.connected:
            return
        if self._outbox.down:
            raise ConnectionError("fake outbox: connection refused")
        self.connected = True

    async def close(self) -> None:
        self.connected = False

    async def claim(
        self, partitions: Sequence[int], in_flight: Sequence[int], limit: int, *,
        delete: Sequence[int] = (),
        busy: Sequence[tuple[str, str]] = (),
    ) -> list[OutboxRow]:
        if not self._leases.alive:
            raise ConnectionError("the fake lease connection is closed")
        self.claims.append((time.monotonic(), list(partitions), limit))
        rows = self._claimable(set(partitions), set(in_flight), set(busy))[:limit]
        for row_id in delete:  # after the selection: one statement, one snapshot
            self._outbox.rows.pop(row_id, None)
        return rows

    def _claimable(
        self, partitions: set[int], skip: set[int], busy: set[tuple[str, str]]
    ) -> list[OutboxRow]:
        now = datetime.now(UTC)
        held = set(busy)
        found = []
        for row_id in sorted(self._outbox.rows):
            stored = self._outbox.rows[row_id]
            key = (stored.row.aggregate_type, stored.row.aggregate_id)
            if (
                stored.partition in partitions and stored.parked_at is None
                and stored.next_attempt_at <= now and row_id not in skip and key not in held
            ):
                found.append(stored.row)
            if stored.waiting:
                held.add(key)
        return found

    async def delete_sent(self, ids: Sequence[int]) -> None:
        self._write()
        for row_id in ids:
            self._outbox.rows.pop(row_id, None)

    async def record_failures(self, failures: Sequence[Failure], max_attempts: int) -> None:
        self._write()
        now = datetime.now(UTC)
        for failure in failures:
            stored = self._outbox.rows.get(failure.row_id)
            if stored is None:
                continue
            stored.row = stored.row._replace(attempts=stored.row.attempts + 1)
            stored.last_error = failure.error[:2000]
            stored.next_attempt_at = now + timedelta(seconds=failure.delay_s)
            stored.parked_at = now if stored.row.attempts >= max_attempts else None
            self.failures.append(failure)

    async def status(self) -> OutboxStatus:
        self._require()
        rows = list(self._outbox.rows.values())
        unsent = [r for r in rows if r.parked_at is None]
        oldest = min((r.row.created_at for r in unsent), default=None)
        age = None if oldest is None else (datetime.now(UTC) - oldest).total_seconds()
        retrying = sum(1 for r in unsent if r.row.attempts > 0)
        return OutboxStatus(len(unsent), len(rows) - len(unsent), retrying, age)

    async def vacuum(self) -> bool:
        self._require()
        self._outbox.vacuums_asked += 1
        if not self._outbox.may_vacuum:
            return False
        self._outbox.vacuums += 1
        return True

    def _write(self) -> None:
        self._require()
        if self.fail_writes > 0:
            self.fail_writes -= 1
            raise ConnectionError("fake outbox: connection lost")

    def _require(self) -> None:
        if not self.connected:
            raise ConnectionError("the fake outbox queue is closed")
