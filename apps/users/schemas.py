"""Request and response bodies of the users API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import msgspec

from shared.http import NO_NUL


class Profile(msgspec.Struct, kw_only=True):
    user_id: uuid.UUID
    email: str
    display_name: str | None
    bio: str | None
    created_at: datetime
    updated_at: datetime


class ProfilePatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields to change; absent fields stay as they are, ``null`` clears a field."""

    display_name: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=NO_NUL)]
        | msgspec.UnsetType
        | None
    ) = msgspec.UNSET
    bio: (
        Annotated[str, msgspec.Meta(max_length=2000, pattern=NO_NUL)] | msgspec.UnsetType | None
    ) = msgspec.UNSET
