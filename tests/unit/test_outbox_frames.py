"""The relay's own frame encoder against pamqp's codec, and the batch confirm bookkeeping."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pamqp import frame as pamqp_frame
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

from outbox import store
from outbox.frames import FrameEncoder
from outbox.publisher import _OPEN, RejectedByBroker, _Batch, mandatory, properties
from outbox.rows import OutboxRow
from shared.messaging import (
    H_AGGREGATE_SLOT,
    H_CORRELATION_ID,
    H_TRACEPARENT,
    H_TRACESTATE,
    aggregate_slot,
)


def row(
    *,
    payload: str = '{"user_id": "u1", "email": "a@example.org"}',
    headers: str = "{}",
    correlation_id: str | None = "corr-1",
    routing_key: str = "user.registered",
    traceparent: str | None = None,
    tracestate: str | None = None,
) -> OutboxRow:
    return OutboxRow(
        id=7,
        event_id=uuid.uuid4(),
        event_type=routing_key,
        routing_key=routing_key,
        aggregate_type="user",
        aggregate_id="8d0c0f7e-aggregate",
        schema_version=1,
        payload=payload,
        headers=headers,
        correlation_id=correlation_id,
        traceparent=traceparent,
        tracestate=tracestate,
        created_at=datetime(2026, 11, 29, 5, 1, 2, 345678, tzinfo=UTC),
        attempts=0,
    )


def decode(buffer: bytes) -> list[tuple[int, object]]:
    frames: list[tuple[int, object]] = []
    offset = 0
    while offset < len(buffer):
        used, channel, value = pamqp_frame.unmarshal(buffer[offset:])
        frames.append((channel, value))
        offset += used
    return frames


def encoder(frame_max: int = 131072) -> FrameEncoder:
    return FrameEncoder(channel=3, frame_max=frame_max, exchange="events", producer="authdb")


@pytest.mark.parametrize(
    ("headers", "correlation_id"),
    [
        ("{}", "corr-1"),
        ("{}", None),
        ('{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}', "c"),
        ('{"n": 5, "big": 70000, "flag": true, "nested": {"a": "b"}, "none": null}', "c"),
    ],
)
def test_frames_decode_to_what_the_library_would_send(
    headers: str, correlation_id: str | None
) -> None:
    r = row(headers=headers, correlation_id=correlation_id)
    frames = decode(encoder().batch([r], mandatory))
    assert [channel for channel, _ in frames] == [3, 3, 3]
    (_, publish), (_, header), (_, body) = frames
    assert isinstance(publish, Basic.Publish)
    assert (publish.exchange, publish.routing_key, publish.mandatory, publish.immediate) == (
        "events", "user.registered", True, False,
    )
    assert isinstance(header, ContentHeader)
    assert header.body_size == len(r.payload.encode())
    expected = properties(r, "authdb")
    # pamqp decodes a timestamp as a naive UTC datetime, seconds only
    expected.timestamp = r.created_at.replace(microsecond=0, tzinfo=None)
    assert vars(header.properties) == vars(expected)
    sent_headers = header.properties.headers or {}
    assert sent_headers[H_AGGREGATE_SLOT] == aggregate_slot(r.aggregate_id)
    assert (H_CORRELATION_ID in sent_headers) == bool(correlation_id)
    assert isinstance(body, ContentBody)
    assert body.value == r.payload.encode()


@pytest.mark.parametrize("tracestate", [None, "vendor=opaque"])
def test_the_rows_trace_context_becomes_the_w3c_headers(tracestate: str | None) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = row(traceparent=traceparent, tracestate=tracestate)
    (_, _), (_, header), (_, _) = decode(encoder().batch([r], mandatory))
    assert isinstance(header, ContentHeader)
    sent = header.properties.headers or {}
    assert sent[H_TRACEPARENT] == traceparent
    assert sent.get(H_TRACESTATE) == tracestate
    assert H_TRACEPARENT not in (decode_headers(row()) or {})


def decode_headers(r: OutboxRow) -> object:
    (_, _), (_, header), (_, _) = decode(encoder().batch([r], mandatory))
    assert isinstance(header, ContentHeader)
    return header.properties.headers


def test_body_larger_than_a_frame_is_split_and_keeps_its_bytes() -> None:
    payload = '{"text": "' + "é" * 5000 + '"}'
    frames = decode(encoder(frame_max=4096).batch([row(payload=payload)], mandatory))
    bodies = [value for _, value in frames[2:] if isinstance(value, ContentBody)]
    assert len(bodies) == len(frames) - 2 == 3
    assert all(len(b.value) <= 4096 - 8 for b in bodies)
    assert b"".join(b.value for b in bodies) == payload.encode()


def test_a_batch_is_its_rows_in_order_and_unconsumed_events_are_not_mandatory() -> None:
    rows = [row(), row(routing_key="profile.created"), row()]
    frames = decode(encoder().batch(rows, mandatory))
    publishes = [value for _, value in frames if isinstance(value, Basic.Publish)]
    headers = [value for _, value in frames if isinstance(value, ContentHeader)]
    assert [p.mandatory for p in publishes] == [True, False, True]
    assert [h.properties.message_id for h in headers] == [str(r.event_id) for r in rows]


def test_short_string_over_255_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="255"):
        encoder().batch([row(correlation_id="x" * 256)], mandatory)


def test_batch_settles_by_tag_ranges_single_tags_and_returns() -> None:
    loop_future: object = object()
    batch = _Batch(10, ["a", "b", "c", "d"], loop_future)  # type: ignore[arg-type]
    returned = RejectedByBroker("unroutable")
    batch.settle(1, returned)  # the return precedes its ack
    batch.settle_through(11, None)  # multiple ack through tag 11 ignores the returned one
    assert batch.outcomes[:2] == [None, returned]
    assert batch.open == 2
    batch.settle(3, RejectedByBroker("nacked"))
    assert batch.outcomes[2] is _OPEN
    batch.settle_through(13, None)
    assert batch.open == 0
    assert batch.outcomes[2] is None
    assert isinstance(batch.outcomes[3], RejectedByBroker)


@pytest.mark.parametrize("correlation_id", ["corr-1", None])
@pytest.mark.parametrize("headers", ["{}", '{"x-extra": "e", "a-first": 1}'])
@pytest.mark.parametrize(
    ("traceparent", "tracestate"),
    [(None, None), ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
     ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "vendor=opaque")],
)
def test_frames_are_byte_for_byte_what_pamqp_marshals(
    headers: str, correlation_id: str | None, traceparent: str | None, tracestate: str | None
) -> None:
    r = row(
        headers=headers, correlation_id=correlation_id, traceparent=traceparent,
        tracestate=tracestate,
    )
    body = r.payload.encode()
    expected = b"".join(
        (
            pamqp_frame.marshal(
                Basic.Publish(exchange="events", routing_key=r.routing_key, mandatory=True), 3
            ),
            pamqp_frame.marshal(ContentHeader(0, len(body), properties(r, "authdb")), 3),
            pamqp_frame.marshal(ContentBody(body), 3),
        )
    )
    assert encoder().batch([r], mandatory) == expected


def test_claim_selects_the_columns_in_outbox_row_order() -> None:
    selected = store.CLAIM_SQL.split("FROM outbox")[0].removeprefix("\nSELECT").split(",")
    names = [column.split(" AS ")[-1].split("::")[0].strip() for column in selected]
    assert names == list(OutboxRow._fields)
