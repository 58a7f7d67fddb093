"""Request and response bodies of the users API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from shared.http import NO_NUL


class Profile(msgspec.Struct, kw_only=True):
    user_id: uuid.UUID
    """The account's id (from the auth service)."""
    email: str
    """The account's email."""
    display_name: str | None
    """Shown to others."""
    bio: str | None
    """Free text, at most 2,000 characters."""
    created_at: datetime
    """When the profiles worker created it."""
    updated_at: datetime
    """Last change."""


class ProfilePatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields to change; absent fields stay as they are, ``null`` clears a field."""

    display_name: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=NO_NUL)]
        | msgspec.UnsetType
        | None
    ) = msgspec.UNSET
    """Shown to others; absent: unchanged, ``null``: cleared."""
    bio: (
        Annotated[str, msgspec.Meta(max_length=2000, pattern=NO_NUL)] | msgspec.UnsetType | None
    ) = msgspec.UNSET
    """Free text; absent: unchanged, ``null``: cleared."""
