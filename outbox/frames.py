"""AMQP 0-9-1 frames of an outbox row, encoded once, straight to bytes.

A client library builds a method object, a properties object and a body object per
message and marshals each through generic encoders; the relay publishes thousands of
rows a second with the same few shapes, so it writes the bytes itself: the
``Basic.Publish`` method frame is cached per (exchange, routing key, mandatory), the
content header is packed from the row in one pass, and a whole batch becomes one buffer
that goes to the socket in one write. ``tests/unit/test_outbox_frames.py`` decodes what
this module writes with pamqp (the client library's own codec) and compares it with the
properties the library would have sent.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from typing import Any

from pamqp import encode

from outbox.rows import OutboxRow
from shared.messaging import (
    CONTENT_TYPE,
    H_AGGREGATE_ID,
    H_AGGREGATE_SLOT,
    H_AGGREGATE_TYPE,
    H_CORRELATION_ID,
    H_PRODUCER,
    H_SCHEMA_VERSION,
    H_TRACEPARENT,
    H_TRACESTATE,
    aggregate_slot,
)

FRAME_METHOD, FRAME_HEADER, FRAME_BODY = 1, 2, 3
FRAME_END = b"\xce"
FRAME_OVERHEAD = 8
"""type (1) + channel (2) + size (4) + frame end (1)."""
BASIC_CLASS = 60
BASIC_PUBLISH = 40

# Basic content-header property flags (AMQP 0-9-1, 4.2.6.1: the first property is bit 15).
_F_CONTENT_TYPE = 1 << 15
_F_HEADERS = 1 << 13
_F_DELIVERY_MODE = 1 << 12
_F_CORRELATION_ID = 1 << 10
_F_MESSAGE_ID = 1 << 7
_F_TIMESTAMP = 1 << 6
_F_TYPE = 1 << 5
_F_APP_ID = 1 << 3

_frame_head = struct.Struct(">BHI").pack
_header_head = struct.Struct(">HHQH").pack
_u32 = struct.Struct(">I").pack
_u64 = struct.Struct(">Q").pack
_PERSISTENT = b"\x02"


def _shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise ValueError(f"AMQP short string longer than 255 bytes: {value[:40]!r}…")
    return bytes((len(raw),)) + raw


def _entry(key: str, value: Any) -> bytes:
    """One field-table entry; strings (nearly every header) inline, the rest by pamqp."""
    if type(value) is str:
        raw = value.encode()
        return _shortstr(key) + b"S" + _u32(len(raw)) + raw
    return _shortstr(key) + encode.encode_table_value(value)


def _table(headers: dict[str, Any]) -> bytes:
    """A field table, keys sorted as pamqp sorts them."""
    body = b"".join(_entry(key, value) for key, value in sorted(headers.items()))
    return _u32(len(body)) + body


def _str_entry(key: bytes, value: str) -> bytes:
    raw = value.encode()
    return key + _u32(len(raw)) + raw


class FrameEncoder:
    """Encodes rows for one channel of one connection (frame size from its tuning)."""

    def __init__(self, *, channel: int, frame_max: int, exchange: str, producer: str) -> None:
        self._channel = channel
        self._chunk = frame_max - FRAME_OVERHEAD if frame_max else 1 << 20
        self._exchange = exchange
        self._producer = producer
        self._app_id = _shortstr(producer)
        self._content_type = _shortstr(CONTENT_TYPE)
        self._publish_frames: dict[tuple[str, bool], bytes] = {}
        # The routing headers every message has, keys encoded once (with the 'S' tag):
        self._k_slot = _shortstr(H_AGGREGATE_SLOT) + b"S"
        self._k_agg_id = _shortstr(H_AGGREGATE_ID) + b"S"
        self._k_agg_type = _shortstr(H_AGGREGATE_TYPE) + b"S"
        self._k_correlation = _shortstr(H_CORRELATION_ID) + b"S"
        self._k_traceparent = _shortstr(H_TRACEPARENT) + b"S"
        self._k_tracestate = _shortstr(H_TRACESTATE) + b"S"
        self._producer_entry = _entry(H_PRODUCER, producer)
        self._versions: dict[int, bytes] = {}

    def publish_frame(self, routing_key: str, mandatory: bool) -> bytes:
        """The ``Basic.Publish`` method frame, built once per routing key."""
        frame = self._publish_frames.get((routing_key, mandatory))
        if frame is None:
            payload = (
                struct.pack(">HHH", BASIC_CLASS, BASIC_PUBLISH, 0)
                + _shortstr(self._exchange)
                + _shortstr(routing_key)
                + bytes((1 if mandatory else 0,))
            )
            frame = _frame_head(FRAME_METHOD, self._channel, len(payload)) + payload + FRAME_END
            self._publish_frames[(routing_key, mandatory)] = frame
        return frame

    def headers(self, row: OutboxRow) -> dict[str, Any]:
        """The message headers: the row's own (trace context…) plus the routing ones."""
        headers: dict[str, Any] = json.loads(row.headers) if row.headers != "{}" else {}
        headers[H_AGGREGATE_TYPE] = row.aggregate_type
        headers[H_AGGREGATE_ID] = row.aggregate_id
        headers[H_AGGREGATE_SLOT] = aggregate_slot(row.aggregate_id)
        headers[H_SCHEMA_VERSION] = row.schema_version
        headers[H_PRODUCER] = self._producer
        if row.correlation_id:
            headers[H_CORRELATION_ID] = row.correlation_id
        if row.traceparent:  # the origin's trace context: the consumer continues it
            headers[H_TRACEPARENT] = row.traceparent
            if row.tracestate:
                headers[H_TRACESTATE] = row.tracestate
        return headers

    def _headers_table(self, row: OutboxRow) -> bytes:
        """:meth:`headers` encoded; the fixed routing headers without a dict on the way."""
        if row.headers != "{}":
            return _table(self.headers(row))  # the row carries headers of its own
        version = self._versions.get(row.schema_version)
        if version is None:
            version = self._versions[row.schema_version] = _entry(
                H_SCHEMA_VERSION, row.schema_version
            )
        # In key order, as pamqp sorts them: aggregate-slot < traceparent < tracestate <
        # x-aggregate-id < … < x-schema-version (a unit test compares the bytes).
        entries = [_str_entry(self._k_slot, aggregate_slot(row.aggregate_id))]
        if row.traceparent:
            entries.append(_str_entry(self._k_traceparent, row.traceparent))
            if row.tracestate:
                entries.append(_str_entry(self._k_tracestate, row.tracestate))
        entries.append(_str_entry(self._k_agg_id, row.aggregate_id))
        entries.append(_str_entry(self._k_agg_type, row.aggregate_type))
        if row.correlation_id:
            entries.append(_str_entry(self._k_correlation, row.correlation_id))
        entries.append(self._producer_entry)
        entries.append(version)
        body = b"".join(entries)
        return _u32(len(body)) + body

    def message(self, row: OutboxRow, mandatory: bool, out: list[bytes]) -> None:
        """Append the frames of ``row`` (publish, content header, body) to ``out``."""
        body = row.payload.encode()
        flags = (
            _F_CONTENT_TYPE | _F_HEADERS | _F_DELIVERY_MODE | _F_MESSAGE_ID | _F_TIMESTAMP
            | _F_TYPE | _F_APP_ID
        )
        correlation = b""
        if row.correlation_id:
            flags |= _F_CORRELATION_ID
            correlation = _shortstr(row.correlation_id)
        header = b"".join(
            (
                _header_head(BASIC_CLASS, 0, len(body), flags),
                self._content_type,
                self._headers_table(row),
                _PERSISTENT,
                correlation,
                _shortstr(str(row.event_id)),
                _u64(int(row.created_at.timestamp())),
                _shortstr(row.event_type),
                self._app_id,
            )
        )
        channel = self._channel
        out.append(self.publish_frame(row.routing_key, mandatory))
        out.append(_frame_head(FRAME_HEADER, channel, len(header)))
        out.append(header)
        out.append(FRAME_END)
        chunk = self._chunk
        for start in range(0, len(body), chunk):
            part = body[start : start + chunk]
            out.append(_frame_head(FRAME_BODY, channel, len(part)))
            out.append(part)
            out.append(FRAME_END)

    def batch(self, rows: Sequence[OutboxRow], mandatory: Callable[[str], bool]) -> bytes:
        """Every frame of ``rows``, in order, as one buffer."""
        out: list[bytes] = []
        for row in rows:
            self.message(row, mandatory(row.routing_key), out)
        return b"".join(out)
