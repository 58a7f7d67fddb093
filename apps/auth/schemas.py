"""Request and response bodies of the auth service (msgspec: validated and documented)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from apps.auth.models import SagaStatus, StepStatus, UserStatus
from apps.auth.passwords import MAX_LENGTH, MIN_LENGTH
from shared.http import NO_NUL

_NOT_AT_OR_SPACE = r"[^@\x00-\x20\x7f-\xa0\u1680\u2000-\u200b\u2028\u2029\u202f\u205f\u3000\ufeff]"
EMAIL_PATTERN = rf"^{_NOT_AT_OR_SPACE}{{1,64}}@{_NOT_AT_OR_SPACE}+\.{_NOT_AT_OR_SPACE}+$"
"""One ``@``, a dot in the domain, no control character or space. The spaces are spelled out
(not ``\\s``): Python's and JSON Schema's (ECMAScript's) ``\\s`` differ, and clients check
the pattern of the OpenAPI document while the server checks this one."""
Email = Annotated[str, msgspec.Meta(
    min_length=3, max_length=254, pattern=EMAIL_PATTERN, description="Email address",
    examples=["ada@example.org"],
)]
Password = Annotated[str, msgspec.Meta(
    min_length=1, max_length=1024, description="The account's password",
)]
NewPassword = Annotated[str, msgspec.Meta(
    min_length=MIN_LENGTH, max_length=MAX_LENGTH,
    description=f"{MIN_LENGTH}-{MAX_LENGTH} characters, not a common one, not the email",
    examples=["correct horse battery staple"],
)]
DisplayName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=NO_NUL)]


class RegisterRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: Email
    password: NewPassword
    display_name: DisplayName | None = None
    """Shown on the profile; may be set later."""


class RegisterResponse(msgspec.Struct, kw_only=True):
    user_id: uuid.UUID
    """The new account's id."""
    email: str
    """The email as stored: trimmed, lower case."""


class LoginRequest(msgspec.Struct, kw_only=True):
    email: Email
    password: Password


class RefreshRequest(msgspec.Struct, kw_only=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    """The refresh token of the last pair; it works once."""


class TokenPair(msgspec.Struct, kw_only=True):
    access_token: str
    """EdDSA JWT for `Authorization: Bearer` (at most 15 minutes)."""
    refresh_token: str
    """Opaque; exchange it once at `POST /auth/refresh`."""
    token_type: str = "Bearer"  # noqa: S105 - the scheme name, not a secret
    """Always `Bearer`."""
    expires_in: int
    """Seconds until the access token expires."""


class MeResponse(msgspec.Struct, kw_only=True):
    user_id: uuid.UUID
    """The account's id."""
    email: str
    """The email as stored."""
    roles: list[str]
    """`user`, and `admin` for operators."""
    status: UserStatus
    """``deleting`` while the account's deletion saga runs."""


class Jwk(msgspec.Struct, kw_only=True, omit_defaults=True):
    kty: str
    """Key type: `OKP`."""
    kid: str
    """Key id, as in the tokens' `kid` header."""
    alg: str
    """`EdDSA`."""
    use: str = "sig"
    """`sig`: the key verifies signatures."""
    crv: str | None = None
    """`Ed25519`."""
    x: str | None = None
    """The public key, base64url."""


class Jwks(msgspec.Struct, kw_only=True):
    keys: list[Jwk]
    """Every live key; more than one during a rotation."""


class DeletionAccepted(msgspec.Struct, kw_only=True, omit_defaults=True):
    saga_id: uuid.UUID
    """Follow it with ``GET /auth/sagas/{saga_id}``."""
    watch_token: str | None = None
    """For a deletion of one's own account (whose tokens end now): a token that reads only
    this saga, ``GET /auth/sagas/{saga_id}/watch`` with ``Authorization: Bearer``."""


class SagaStep(msgspec.Struct, kw_only=True):
    name: str
    """The step (`profile.delete`, `documents.delete`, `profile.restore` …)."""
    kind: Literal["action", "compensation"]
    """An action of the saga, or the compensation of one."""
    status: StepStatus
    """``pending`` until its reply, its deadline or a local action."""
    detail: str | None
    """What the participant answered, or why the step failed."""
    started_at: datetime
    """When the command was sent."""
    deadline: datetime | None
    """When the step counts as failed without an answer."""
    finished_at: datetime | None
    """When the answer (or the deadline) ended the step."""
    late_replies: int
    """Duplicate or late replies that were recognised and ignored."""


class Saga(msgspec.Struct, kw_only=True):
    saga_id: uuid.UUID
    """The saga's id."""
    user_id: uuid.UUID
    """The account being deleted."""
    requested_by: uuid.UUID | None
    """Who asked (the user or an admin)."""
    status: SagaStatus
    """``running`` and ``compensating`` are in flight; the other three are final."""
    current_step: str | None
    """The step waiting for its answer, if any."""
    step_deadline: datetime | None
    """When the current step times out."""
    reason: str | None
    """Why it compensated or failed."""
    created_at: datetime
    """When the deletion was requested."""
    updated_at: datetime
    """Last change."""
    finished_at: datetime | None
    """When it reached a final status."""
    steps: list[SagaStep]
    """Every step so far, oldest first."""
