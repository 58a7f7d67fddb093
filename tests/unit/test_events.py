import json
import uuid

import msgspec
import pytest

from outbox.writer import aggregate_partition
from shared.errors import InvalidMessage
from shared.events import CATALOGUE, DocumentOcrCompleted, UserRegistered, decode, encode


def test_round_trip_keeps_every_field() -> None:
    event = UserRegistered(user_id=uuid.uuid4(), email="a@example.org", display_name="A")
    assert decode(event.event_type, 1, encode(event)) == event


def test_unknown_type_and_bad_payload_are_invalid_messages() -> None:
    with pytest.raises(InvalidMessage, match="unknown event type"):
        decode("user.exploded", 1, b"{}")
    with pytest.raises(InvalidMessage, match=r"invalid user\.registered"):
        decode("user.registered", 1, b'{"user_id": "not-a-uuid", "email": "x"}')
    with pytest.raises(InvalidMessage):
        decode("user.registered", 1, b"\xff garbage")


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    uid = uuid.uuid4()
    body = f'{{"user_id": "{uid}", "email": "a@b.c", "new_field": 1}}'.encode()
    assert decode("user.registered", 1, body) == UserRegistered(user_id=uid, email="a@b.c")


def test_catalogue_names_are_unique_routing_keys() -> None:
    names = [event_type for event_type, _ in CATALOGUE]
    assert len(names) == len(set(names))
    assert "user.registered" in names and "documents.deletion_failed" in names


def test_partition_is_stable_and_spread() -> None:
    assert aggregate_partition("user", "42") == aggregate_partition("user", "42")
    spread = {aggregate_partition("user", str(i)) for i in range(1000)}
    assert len(spread) == 16


def test_ocr_completed_summary_is_a_compatible_extension() -> None:
    document_id, owner_id = uuid.uuid4(), uuid.uuid4()
    # A payload written before the summary existed still decodes, with empty defaults.
    old = json.dumps({"document_id": str(document_id), "owner_id": str(owner_id), "pages": 2,
                      "engine": "tesseract"}).encode()
    decoded = decode("document.ocr_completed", 1, old)
    assert isinstance(decoded, DocumentOcrCompleted)
    assert (decoded.words, decoded.mean_confidence, decoded.sources) == (0, None, {})
    # A consumer that knows only the old fields reads a new payload (unknown fields ignored).
    new = DocumentOcrCompleted(document_id=document_id, owner_id=owner_id, pages=2,
                               engine="tesseract", words=120, mean_confidence=0.93,
                               sources={"text_layer": 1, "ocr": 1})

    class OldDocumentOcrCompleted(msgspec.Struct, frozen=True, kw_only=True):
        document_id: uuid.UUID
        owner_id: uuid.UUID
        pages: int
        engine: str

    assert msgspec.json.decode(encode(new), type=OldDocumentOcrCompleted).pages == 2
    assert decode("document.ocr_completed", 1, encode(new)) == new
    assert DocumentOcrCompleted.schema_version == 1
