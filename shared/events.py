"""Typed, versioned event and command schemas: the event catalogue (:data:`CATALOGUE`).

The routing key of a message is its ``event_type``. Events are named in the past tense
(``UserRegistered``), saga commands in the imperative (``DeleteProfile``). Payloads are
``msgspec`` structs: decoding validates types, unknown fields are ignored so that a
newer producer can add optional fields without breaking older consumers. A breaking
change gets a new ``schema_version`` and a new struct registered beside the old one.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar

import msgspec

from shared.errors import InvalidMessage


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every payload that travels through the ``events`` exchange."""

    event_type: ClassVar[str]
    """Routing key and AMQP ``type``."""
    aggregate_type: ClassVar[str]
    """What the event is about; events of one aggregate keep their commit order."""
    aggregate_field: ClassVar[str]
    """Name of the field that holds the aggregate id."""
    schema_version: ClassVar[int] = 1

    @property
    def aggregate_id(self) -> str:
        return str(getattr(self, self.aggregate_field))


# --- users ------------------------------------------------------------------------------
class UserRegistered(Message, frozen=True, kw_only=True):
    event_type = "user.registered"
    aggregate_type = "user"
    aggregate_field = "user_id"
    user_id: uuid.UUID
    email: str
    display_name: str | None = None


class ProfileCreated(Message, frozen=True, kw_only=True):
    event_type = "profile.created"
    aggregate_type = "user"
    aggregate_field = "user_id"
    user_id: uuid.UUID
    display_name: str | None = None


class UserDeletionRequested(Message, frozen=True, kw_only=True):
    event_type = "user.deletion_requested"
    aggregate_type = "user"
    aggregate_field = "user_id"
    user_id: uuid.UUID
    saga_id: uuid.UUID
    requested_by: uuid.UUID | None = None


class UserDeleted(Message, frozen=True, kw_only=True):
    event_type = "user.deleted"
    aggregate_type = "user"
    aggregate_field = "user_id"
    user_id: uuid.UUID
    saga_id: uuid.UUID | None = None


# --- documents --------------------------------------------------------------------------
class DocumentUploaded(Message, frozen=True, kw_only=True):
    event_type = "document.uploaded"
    aggregate_type = "document"
    aggregate_field = "document_id"
    document_id: uuid.UUID
    owner_id: uuid.UUID
    media_type: str
    size_bytes: int


class DocumentOcrCompleted(Message, frozen=True, kw_only=True):
    event_type = "document.ocr_completed"
    aggregate_type = "document"
    aggregate_field = "document_id"
    document_id: uuid.UUID
    owner_id: uuid.UUID
    pages: int
    engine: str
    # Summary of the result (added compatibly: optional, so older payloads still decode).
    words: int = 0
    """Words found on all pages."""
    mean_confidence: float | None = None
    """Mean confidence (0..1) of those words; ``None`` when there are none."""
    sources: dict[str, int] = msgspec.field(default_factory=dict)
    """Pages per source: ``{"ocr": n, "text_layer": m}`` (a source with no page is left out)."""


class DocumentOcrFailed(Message, frozen=True, kw_only=True):
    event_type = "document.ocr_failed"
    aggregate_type = "document"
    aggregate_field = "document_id"
    document_id: uuid.UUID
    owner_id: uuid.UUID
    reason: str


# --- deletion saga: commands (orchestrator -> participant) ------------------------------
class DeleteProfile(Message, frozen=True, kw_only=True):
    """Archive the user's profile (a deletion saga's first step); ordered after the user's
    ``user.registered``."""

    # Keyed on the user, not the saga: user.registered is in the same outbox (authdb), so
    # the relay and the partitions deliver this command after it. Keyed on the saga, a
    # deletion requested right after registering archived nothing and the profile appeared
    # afterwards, live, for a deleted user (seen under load by tests/cluster).
    event_type = "profile.delete"
    aggregate_type = "user"
    aggregate_field = "user_id"
    saga_id: uuid.UUID
    user_id: uuid.UUID
    deadline: datetime | None = None
    """When the orchestrator stops waiting; a participant refuses the command after it."""


class DeleteDocuments(Message, frozen=True, kw_only=True):
    event_type = "documents.delete"
    aggregate_type = "saga"
    aggregate_field = "saga_id"
    saga_id: uuid.UUID
    user_id: uuid.UUID
    deadline: datetime | None = None
    """When the orchestrator stops waiting; a participant refuses the command after it."""


class RestoreProfile(Message, frozen=True, kw_only=True):
    event_type = "profile.restore"
    aggregate_type = "user"  # after the DeleteProfile it compensates (same aggregate)
    aggregate_field = "user_id"
    saga_id: uuid.UUID
    user_id: uuid.UUID


# --- deletion saga: replies (participant -> orchestrator) -------------------------------
class ProfileDeleted(Message, frozen=True, kw_only=True):
    event_type = "profile.deleted"
    aggregate_type = "saga"
    aggregate_field = "saga_id"
    saga_id: uuid.UUID
    user_id: uuid.UUID


class DocumentsDeleted(Message, frozen=True, kw_only=True):
    event_type = "documents.deleted"
    aggregate_type = "saga"
    aggregate_field = "saga_id"
    saga_id: uuid.UUID
    user_id: uuid.UUID
    count: int


class DocumentsDeletionFailed(Message, frozen=True, kw_only=True):
    event_type = "documents.deletion_failed"
    aggregate_type = "saga"
    aggregate_field = "saga_id"
    saga_id: uuid.UUID
    user_id: uuid.UUID
    reason: str


class ProfileRestored(Message, frozen=True, kw_only=True):
    event_type = "profile.restored"
    aggregate_type = "saga"
    aggregate_field = "saga_id"
    saga_id: uuid.UUID
    user_id: uuid.UUID


CATALOGUE: dict[tuple[str, int], type[Message]] = {
    (cls.event_type, cls.schema_version): cls
    for cls in (
        UserRegistered,
        ProfileCreated,
        UserDeletionRequested,
        UserDeleted,
        DocumentUploaded,
        DocumentOcrCompleted,
        DocumentOcrFailed,
        DeleteProfile,
        DeleteDocuments,
        RestoreProfile,
        ProfileDeleted,
        DocumentsDeleted,
        DocumentsDeletionFailed,
        ProfileRestored,
    )
}
"""(event type, schema version) -> payload struct."""

_encoder = msgspec.json.Encoder()


def encode(message: Message) -> bytes:
    """JSON body of a message (the payload only; metadata travels in AMQP properties)."""
    return _encoder.encode(message)


def decode(event_type: str, schema_version: int, body: bytes) -> Message:
    """Validate and decode a body; raises :class:`InvalidMessage` on any mismatch."""
    cls = CATALOGUE.get((event_type, schema_version))
    if cls is None:
        raise InvalidMessage(f"unknown event type {event_type!r} version {schema_version}")
    try:
        return msgspec.json.decode(body, type=cls)
    except msgspec.DecodeError as exc:
        raise InvalidMessage(f"invalid {event_type} v{schema_version} payload: {exc}") from exc
