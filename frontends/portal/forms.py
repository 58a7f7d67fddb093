"""The portal's forms: what a person typed, checked enough to answer at once, and the API's
answers translated into messages beside the fields they concern."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from frontends.bff.api import BackendError
from shared.config import UploadSettings

MIN_PASSWORD = 8
"""Mirrors the auth API's rule, so a person hears it before a round trip."""


@dataclass
class RegisterForm:
    email: str = ""
    password: str = ""
    display_name: str = ""

    def check(self) -> dict[str, str]:
        errors = {}
        if "@" not in self.email.strip():
            errors["email"] = "Enter an email address such as ada@example.org."
        if len(self.password) < MIN_PASSWORD:
            errors["password"] = f"Use at least {MIN_PASSWORD} characters."
        if len(self.display_name) > 100:
            errors["display_name"] = "Use at most 100 characters."
        return errors

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {"email": self.email.strip(), "password": self.password}
        if self.display_name.strip():
            body["display_name"] = self.display_name.strip()
        return body

    def blank_password(self) -> RegisterForm:
        """The form shown again: a password is never sent back to the browser."""
        return replace(self, password="")


def register_errors(exc: BackendError) -> dict[str, str]:
    if exc.status == 409:
        return {"email": "An account with this email already exists. Sign in instead?"}
    if exc.status == 422:
        fields = _by_field(exc)
        about = "password" if "password" in exc.message.lower() else "email"
        return fields or {about: exc.message[:1].upper() + exc.message[1:] + "."}
    raise exc


@dataclass
class LoginForm:
    email: str = ""
    password: str = ""
    next: str = ""


@dataclass
class ProfileForm:
    display_name: str = ""

    def payload(self) -> dict[str, Any]:
        return {"display_name": self.display_name.strip() or None}


def profile_errors(exc: BackendError) -> dict[str, str]:
    return _by_field(exc) or {"display_name": exc.message}


def _by_field(exc: BackendError) -> dict[str, str]:
    """The API names body fields as ``display_name`` or ``data.display_name``."""
    return {key.rsplit(".", 1)[-1]: message for key, message in exc.field_errors().items()}


@dataclass(frozen=True)
class UploadLimits:
    """What the upload form states before anything is sent."""

    max_bytes: int
    max_megabytes: str
    max_pages: int
    max_megapixels: str
    types: str = "PNG, JPEG, TIFF or PDF"


def upload_limits(settings: UploadSettings) -> UploadLimits:
    return UploadLimits(
        max_bytes=settings.max_bytes,
        max_megabytes=f"{settings.max_bytes / 1_048_576:g}",
        max_pages=settings.max_pages,
        max_megapixels=f"{settings.max_pixels / 1_000_000:g}",
    )
