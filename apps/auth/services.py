"""The auth service: registration, login, refresh rotation, logout, and who-am-I.

Services raise :mod:`shared.errors`; ``shared.http`` maps them to HTTP once.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apps.auth import sagas
from apps.auth.accounts import AccountStore, SqlAccountStore
from apps.auth.login_delays import LoginClient
from apps.auth.models import UserStatus, refresh_families, users
from apps.auth.passwords import Passwords, check_password_policy, normalise_password
from apps.auth.schemas import EMAIL_PATTERN, Saga
from apps.auth.stores import KnownDevices, LoginLimits, Sessions
from apps.auth.tokens import TokenIssuer
from outbox.writer import Emitter
from shared.auth import REFRESH, SAGA_WATCH, Principal, TokenVerifier, require_self_or_admin
from shared.errors import AuthenticationFailed, Conflict, NotFound, ValidationFailed
from shared.events import UserRegistered
from shared.logging import get_logger

log = get_logger(__name__)

_EMAIL = re.compile(EMAIL_PATTERN)
INVALID_CREDENTIALS = "invalid email or password"
"""The one answer for an unknown email and a wrong password."""


def normalise_email(email: str) -> str:
    """NFKC, trimmed, lower case: the form stored and compared."""
    normalised = unicodedata.normalize("NFKC", email).strip().lower()
    if len(normalised) > 254 or not _EMAIL.match(normalised):
        raise ValidationFailed("email is not a valid address")
    return normalised


@dataclass(frozen=True)
class Account:
    user_id: uuid.UUID
    email: str
    roles: list[str]
    status: str


async def register_user(  # noqa: PLR0917 - mirrors the register request
    sessions: async_sessionmaker[AsyncSession],
    passwords: Passwords,
    email: str,
    password: str,
    display_name: str | None = None,
    roles: tuple[str, ...] = ("user",),
) -> Account:
    """Validate, hash, then insert the user and ``user.registered`` in one transaction."""
    email = normalise_email(email)
    password = normalise_password(password)
    check_password_policy(password, email=email)
    password_hash = await passwords.hash(password)
    user_id = uuid.uuid4()
    try:
        async with sessions() as session, session.begin():
            await session.execute(
                sa.insert(users).values(
                    id=user_id,
                    email=email,
                    password_hash=password_hash,
                    display_name=display_name,
                    roles=list(roles),
                )
            )
            await Emitter.current()(
                session,
                UserRegistered(
                    user_id=user_id,
                    email=email,
                    display_name=display_name,
                ),
            )
    except IntegrityError as exc:
        raise Conflict("email is already registered") from exc
    log.info("user.registered", user_id=str(user_id), roles=list(roles))
    return Account(user_id, email, list(roles), UserStatus.ACTIVE)


async def grant_role(sessions: async_sessionmaker[AsyncSession], email: str, role: str) -> bool:
    """Add ``role`` to the user with ``email``; False when there is no such user."""
    async with sessions() as session, session.begin():
        result = await session.execute(_GRANT, {"email": normalise_email(email), "role": role})
        return result.first() is not None


_GRANT = sa.text(
    """
    UPDATE users SET updated_at = now(),
      roles = CASE WHEN CAST(:role AS text) = ANY(roles) THEN roles
                   ELSE array_append(roles, CAST(:role AS text)) END
    WHERE email = :email RETURNING id
    """
)


@dataclass(frozen=True)
class Tokens:
    access_token: str
    refresh_token: str
    expires_in: int
    device_token: str | None = None
    """Set by a login: proof of this device for the account's next logins."""


class AuthService:
    """Owns users, refresh-token families and sessions."""

    def __init__(  # noqa: PLR0917 - the composition root passes collaborators in order
        self,
        sessions: async_sessionmaker[AsyncSession],
        passwords: Passwords,
        issuer: TokenIssuer,
        verifier: TokenVerifier,
        redis_sessions: Sessions,
        limits: LoginLimits,
        *,
        refresh_ttl_s: int,
        saga_step_timeout_s: float = 30.0,
        saga_watch_ttl_s: int = 3600,
        refresh_reuse_grace_s: float = 0.0,
        accounts: AccountStore | None = None,
        devices: KnownDevices | None = None,
    ) -> None:
        self._db = sessions
        self._accounts = accounts or SqlAccountStore(sessions)
        self._passwords = passwords
        self._issuer = issuer
        self._verifier = verifier
        self._redis = redis_sessions
        self._limits = limits
        self._devices = devices
        self._refresh_ttl_s = refresh_ttl_s
        self._saga_step_timeout_s = saga_step_timeout_s
        self._saga_watch_ttl_s = saga_watch_ttl_s
        self._reuse_grace_s = refresh_reuse_grace_s

    # --- registration ---------------------------------------------------------------------
    async def register(
        self,
        email: str,
        password: str,
        display_name: str | None = None,
        roles: tuple[str, ...] = ("user",),
        *,
        client: str | None = None,
    ) -> Account:
        """Create the user and its ``user.registered`` event in one transaction; sign-ups
        are limited per client address (429)."""
        if client is not None:
            await self._limits.check_registration(client)
        return await register_user(self._db, self._passwords, email, password, display_name, roles)

    # --- login ------------------------------------------------------------------------------
    async def login(
        self, email: str, password: str, *, client: str, device_token: str | None = None
    ) -> Tokens:
        """Tokens for valid credentials; the same 401 for unknown email and wrong password.

        Failed attempts delay the next ones per account and client
        (:mod:`apps.auth.login_delays`); a ``device_token`` from an earlier successful login
        of this account makes the client that device, apart from everyone else's failures.
        Each success returns the device token to present next time.
        """
        account = unicodedata.normalize("NFKC", email).strip().lower()
        device = None
        if device_token and self._devices is not None:
            device = await self._devices.recognise(account, device_token)
        who = LoginClient(client, device)
        await self._limits.check(account, who)
        row = await self._accounts.credentials(account)
        password = normalise_password(password)
        valid = await self._passwords.verify(row.password_hash if row else None, password)
        if row is None or not valid:
            await self._limits.failed(account, who)
            raise AuthenticationFailed(INVALID_CREDENTIALS)
        if row.status != UserStatus.ACTIVE:
            raise AuthenticationFailed("account is not active")
        await self._limits.succeeded(account, who)
        if self._passwords.needs_rehash(row.password_hash):
            await self._rehash(row.user_id, password)
        tokens = await self._open_family(row.user_id, row.roles)
        if self._devices is None:
            return tokens
        kept = await self._devices.remember(account, device_token if device else None)
        return replace(tokens, device_token=kept)

    async def _rehash(self, user_id: uuid.UUID, password: str) -> None:
        new_hash = await self._passwords.hash(password)
        await self._accounts.set_password_hash(user_id, new_hash)
        log.info("user.password_rehashed", user_id=str(user_id))

    async def _open_family(self, user_id: uuid.UUID, roles: list[str]) -> Tokens:
        family_id, jti = uuid.uuid4(), uuid.uuid4()
        expires_at = datetime.now(UTC) + timedelta(seconds=self._refresh_ttl_s)
        await self._accounts.open_family(user_id, family_id, jti, expires_at)
        await self._redis.open(str(family_id), str(user_id), self._refresh_ttl_s)
        return await self._tokens(user_id, roles, family_id, jti, expires_at)

    async def _tokens(
        self,
        user_id: uuid.UUID,
        roles: list[str],
        family_id: uuid.UUID,
        jti: uuid.UUID,
        expires_at: datetime,
    ) -> Tokens:
        access = await self._issuer.access(user_id, roles, family_id)
        refresh = await self._issuer.refresh(user_id, jti, family_id, int(expires_at.timestamp()))
        return Tokens(access, refresh, self._issuer.access_ttl_s)

    # --- refresh ------------------------------------------------------------------------------
    async def refresh(self, refresh_token: str) -> Tokens:
        """Rotate: spend the token, issue a new pair; a spent token revokes its family.

        Within the reuse grace (``REFRESH_REUSE_GRACE_S``) a just-spent token whose successor
        is still unused answers with that successor instead (see :meth:`_refused`).
        """
        claims = await self._verifier.decode(refresh_token, expected_type=REFRESH)
        jti, family_id = _uuid(claims["jti"]), _uuid(claims.get("sid"))
        if not await self._redis.alive(str(family_id)):
            await self._revoke_family(family_id, "session ended")
            raise AuthenticationFailed("session has ended")
        rotation = await self._accounts.rotate(jti, family_id)
        if rotation is None:
            return await self._refused(jti, family_id)
        return await self._tokens(
            rotation.user_id, rotation.roles, family_id, rotation.new_jti, rotation.expires_at
        )

    async def _refused(self, jti: uuid.UUID, family_id: uuid.UUID) -> Tokens:
        """A token that could not be spent: within the grace, its successor; spent: reuse."""
        spent = await self._accounts.spent(jti, family_id, grace_s=self._reuse_grace_s)
        if spent is not None and spent.within_grace:
            log.info("refresh.reused_within_grace", family_id=str(family_id), jti=str(jti))
            return await self._tokens(
                spent.user_id, spent.roles, family_id, spent.replaced_by, spent.expires_at
            )
        if spent is not None:
            log.warning("refresh.reuse_detected", family_id=str(family_id), jti=str(jti))
            await self._revoke_family(family_id, "refresh token reused")
        raise AuthenticationFailed("refresh token is not valid")

    async def _revoke_family(self, family_id: uuid.UUID, reason: str) -> None:
        await self._accounts.revoke_family(family_id, reason)
        await self._redis.close(str(family_id))

    # --- logout and me ---------------------------------------------------------------------------
    async def logout(self, principal: Principal) -> None:
        """Denylist the access token until it expires and end its session."""
        remaining = int((principal.expires_at - datetime.now(UTC)).total_seconds()) + 1
        await self._redis.deny(principal.jti, remaining)
        if principal.session_id is not None:
            await self._revoke_family(_uuid(principal.session_id), "logout")

    async def me(self, principal: Principal) -> Account:
        found = await self._accounts.account(principal.user_id)
        if found is None:
            raise NotFound("user not found")
        return Account(principal.user_id, found.email, found.roles, found.status)

    # --- deletion saga ------------------------------------------------------------------------
    async def request_deletion(self, principal: Principal, user_id: uuid.UUID) -> uuid.UUID:
        """Start deleting ``user_id`` (self or admin); the saga id. Asking again returns it.

        One transaction: the user becomes ``deleting`` (login and refresh refused), every
        refresh-token family is revoked, the saga row and its first command are written.
        Then the sessions end in Redis, which revokes the access tokens bound to them.
        """
        require_self_or_admin(principal, user_id)
        async with self._db() as session, session.begin():
            status = (
                await session.execute(
                    sa.select(users.c.status).where(users.c.id == user_id).with_for_update()
                )
            ).scalar_one_or_none()
            if status is None or status == UserStatus.DELETED:
                raise NotFound("user not found")
            if status == UserStatus.DELETING:
                existing = await sagas.active_saga_of(session, user_id)
                if existing is not None:
                    return existing
            await session.execute(
                sa.update(users)
                .where(users.c.id == user_id)
                .values(status=UserStatus.DELETING, updated_at=sa.func.now())
            )
            families = (
                await session.execute(
                    sa.update(refresh_families)
                    .where(
                        refresh_families.c.user_id == user_id,
                        refresh_families.c.revoked_at.is_(None),
                    )
                    .values(revoked_at=sa.func.now(), revoked_reason="account deletion")
                    .returning(refresh_families.c.id)
                )
            ).scalars().all()
            saga_id = await sagas.start_deletion(
                session, user_id, requested_by=principal.user_id,
                step_timeout_s=self._saga_step_timeout_s,
            )
        for family_id in families:
            await self._redis.close(str(family_id))
        log.info("user.deletion_requested", user_id=str(user_id), saga_id=str(saga_id))
        return saga_id

    async def watch_token(self, principal: Principal, saga_id: uuid.UUID) -> str:
        """A ``saga_watch`` token for the saga of the caller's own deletion (others: None)."""
        return await self._issuer.saga_watch(principal.user_id, saga_id, self._saga_watch_ttl_s)

    async def watched_saga(self, watch_token: str, saga_id: uuid.UUID) -> Saga:
        """The saga a ``saga_watch`` token was issued for (any other: not found)."""
        claims = await self._verifier.decode(watch_token, expected_type=SAGA_WATCH)
        if claims.get("saga") != str(saga_id):
            raise NotFound("saga not found")
        async with self._db() as session:
            view = await sagas.load(session, saga_id)
        if view is None or str(view.user_id) != claims["sub"]:
            raise NotFound("saga not found")
        return view

    async def saga(self, principal: Principal, saga_id: uuid.UUID) -> Saga:
        """The saga with its steps, for its user or an admin (others: not found)."""
        async with self._db() as session:
            view = await sagas.load(session, saga_id)
        if view is None or not (principal.is_admin or principal.user_id == view.user_id):
            raise NotFound("saga not found")
        return view


def _uuid(value: object) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise AuthenticationFailed("malformed token") from exc
