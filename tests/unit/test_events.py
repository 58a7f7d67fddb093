import uuid

import pytest

from outbox.writer import aggregate_partition
from shared.errors import InvalidMessage
from shared.events import CATALOGUE, UserRegistered, decode, encode


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
