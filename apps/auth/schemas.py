"""Request and response bodies of the auth service (msgspec: validated and documented)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from shared.http import NO_NUL

Email = Annotated[
    str, msgspec.Meta(min_length=3, max_length=254, pattern=NO_NUL, description="Email address")
]
Password = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=1024, description="8-128 characters, not a common one"),
]
DisplayName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=NO_NUL)]


class RegisterRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    email: Email
    password: Password
    display_name: DisplayName | None = None


class RegisterResponse(msgspec.Struct, kw_only=True):
    user_id: uuid.UUID
    email: str


class LoginRequest(msgspec.Struct, kw_only=True):
    email: Email
    password: Password


class RefreshRequest(msgspec.Struct, kw_only=True):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]


class TokenPair(msgspec.Struct, kw_only=True):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 - the scheme name, not a secret
    expires_in: int
    """Seconds until the access token expires."""


class MeResponse(msgspec.Struct, kw_only=True):
    user_id: uuid.UUID
    email: str
    roles: list[str]
    status: str
    """``active``, ``deleting`` or ``deleted``."""


class Jwk(msgspec.Struct, kw_only=True, omit_defaults=True):
    kty: str
    kid: str
    alg: str
    use: str = "sig"
    crv: str | None = None
    x: str | None = None


class Jwks(msgspec.Struct, kw_only=True):
    keys: list[Jwk]


class DeletionAccepted(msgspec.Struct, kw_only=True, omit_defaults=True):
    saga_id: uuid.UUID
    """Follow it with ``GET /auth/sagas/{saga_id}``."""
    watch_token: str | None = None
    """For a deletion of one's own account (whose tokens end now): a token that reads only
    this saga, ``GET /auth/sagas/{saga_id}/watch`` with ``Authorization: Bearer``."""


class SagaStep(msgspec.Struct, kw_only=True):
    name: str
    kind: str
    """``action`` or ``compensation``."""
    status: str
    """``pending``, ``completed``, ``failed`` or ``timed_out``."""
    detail: str | None
    started_at: datetime
    deadline: datetime | None
    finished_at: datetime | None
    late_replies: int
    """Duplicate or late replies that were recognised and ignored."""


class Saga(msgspec.Struct, kw_only=True):
    saga_id: uuid.UUID
    user_id: uuid.UUID
    requested_by: uuid.UUID | None
    status: str
    """``running``, ``compensating``, ``completed``, ``compensated``, ``compensation_failed``."""
    current_step: str | None
    step_deadline: datetime | None
    reason: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    steps: list[SagaStep]
