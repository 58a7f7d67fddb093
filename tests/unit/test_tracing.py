"""W3C trace context parsing and the two modes of shared.tracing (off: pass-through; on:
spans), without any service."""

from __future__ import annotations

import gc

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shared import tracing
from shared.config import ObservabilitySettings

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
VALID = f"00-{TRACE_ID}-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    "value",
    [
        None, 42, "", "garbage", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        f"00-{'0' * 32}-b7ad6b7169203331-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero span id
        f"ff-{TRACE_ID}-b7ad6b7169203331-01",  # version ff is invalid
        f"00-{TRACE_ID}-b7ad6b7169203331-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE_ID.upper()}-b7ad6b7169203331-01",  # lowercase hex only
        "00-" + "a" * 600,
    ],
)
def test_malformed_traceparent_is_refused_not_raised(value: object) -> None:
    assert tracing.parse_traceparent(value) is None


def test_valid_traceparent_and_future_versions() -> None:
    context = tracing.parse_traceparent(VALID)
    assert context is not None and context.is_remote
    assert format(context.trace_id, "032x") == TRACE_ID
    assert context.trace_flags.sampled
    future = tracing.parse_traceparent(f"01-{TRACE_ID}-b7ad6b7169203331-00-more")
    assert future is not None and not future.trace_flags.sampled


def test_off_events_carry_the_incoming_context_and_nothing_else() -> None:
    assert not tracing.enabled()
    assert tracing.outgoing() == (None, None)
    with tracing.incoming_http([(b"traceparent", VALID.encode()), (b"tracestate", b"k=v")]):
        assert tracing.outgoing() == (VALID, "k=v")
        assert tracing.current_trace_ids() == (TRACE_ID, "b7ad6b7169203331")
    with tracing.incoming_http([(b"traceparent", b"00-nonsense-01")]):
        assert tracing.outgoing() == (None, None)
    with tracing.consuming({"traceparent": VALID}, queue="q", event_type="e", message_id="m"):
        assert tracing.outgoing() == (VALID, None)
    with tracing.consuming({"traceparent": "zz"}, queue="q", event_type="e", message_id="m"):
        assert tracing.outgoing() == (None, None)
    assert tracing.outgoing() == (None, None)


def test_off_hot_paths_enter_one_shared_no_op() -> None:
    nothing = tracing.consuming({}, queue="q", event_type="e", message_id="m")
    assert nothing is tracing.handling("e")
    assert nothing is tracing.handling("e", 64)
    assert nothing is tracing.publishing("authdb", "events", iter(()), 0)
    origins = [tracing.carried({"traceparent": VALID}), None]
    assert nothing is tracing.consuming_batch("q", iter(origins), 2)
    assert nothing is tracing.continuing(None)


def test_a_message_of_a_batch_carries_its_own_context_on() -> None:
    assert tracing.carried({}) is None
    assert tracing.carried({"traceparent": "00-broken"}) is None
    origin = tracing.carried({"traceparent": f" {VALID} ", "tracestate": "k=v"})
    assert origin is not None and origin.headers == (VALID, "k=v")
    with tracing.continuing(origin):
        assert tracing.outgoing() == (VALID, "k=v")
        assert tracing.current_trace_ids() == (TRACE_ID, "b7ad6b7169203331")
    assert tracing.outgoing() == (None, None)


def test_on_a_consumed_message_continues_its_trace_and_follow_ups_carry_it(
    spans: InMemorySpanExporter,
) -> None:
    with (
        tracing.consuming({"traceparent": VALID}, queue="profiles", event_type="e",
                          message_id="m1"),
        tracing.handling("e"),
    ):
        traceparent, _ = tracing.outgoing()
        ids = tracing.current_trace_ids()
    consume, handle = sorted(spans.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert consume.kind is SpanKind.CONSUMER and consume.name == "profiles process"
    assert consume.parent is not None
    assert format(consume.parent.span_id, "016x") == "b7ad6b7169203331"
    assert handle.parent is not None and consume.context is not None
    assert handle.parent.span_id == consume.context.span_id
    assert handle.context is not None
    assert traceparent == f"00-{TRACE_ID}-{handle.context.span_id:016x}-01"
    assert ids == (TRACE_ID, f"{handle.context.span_id:016x}")


def test_on_a_malformed_or_missing_context_starts_a_new_trace(
    spans: InMemorySpanExporter,
) -> None:
    for headers in ({"traceparent": "00-broken"}, {}):
        with tracing.consuming(headers, queue="q", event_type="e", message_id="m"):
            pass
    first, second = spans.get_finished_spans()
    assert first.parent is None and second.parent is None
    assert first.context is not None and second.context is not None
    assert first.context.trace_id != second.context.trace_id


def test_on_publish_span_links_the_origins(spans: InMemorySpanExporter) -> None:
    origins = [VALID, None, "junk", *([VALID] * 200)]
    with tracing.publishing("authdb", "events", iter(origins), len(origins)):
        pass
    (publish,) = spans.get_finished_spans()
    assert publish.kind is SpanKind.PRODUCER and publish.name == "events publish"
    assert (publish.attributes or {})["messaging.batch.message_count"] == 203
    assert len(publish.links) == 128  # the SDK's default link limit, OTEL_SPAN_LINK_COUNT_LIMIT
    assert all(format(link.context.trace_id, "032x") == TRACE_ID for link in publish.links)


def test_an_unknown_exporter_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ValueError, match="unknown exporter 'zipkin'"):
        tracing.configure_tracing(ObservabilitySettings(tracing_enabled=True), service="unit")
    assert not tracing.enabled()


def test_on_the_tracestate_travels_with_the_trace(spans: InMemorySpanExporter) -> None:
    headers = {"traceparent": VALID, "tracestate": "vendor=opaque,other=1"}
    with (
        tracing.consuming(headers, queue="q", event_type="e", message_id="m"),
        tracing.handling("e"),
    ):
        traceparent, tracestate = tracing.outgoing()
    assert traceparent is not None and traceparent.split("-")[1] == TRACE_ID
    assert tracestate == "vendor=opaque,other=1"


def test_on_an_unsampled_message_records_nothing_and_passes_its_context_on(
    spans: InMemorySpanExporter,
) -> None:
    unsampled = f"00-{TRACE_ID}-b7ad6b7169203331-00"
    with (
        tracing.consuming({"traceparent": unsampled}, queue="q", event_type="e", message_id="m"),
        tracing.handling("e"),
    ):
        traceparent, _ = tracing.outgoing()
        ids = tracing.current_trace_ids()
    assert spans.get_finished_spans() == ()
    assert traceparent == unsampled  # the follow-ups stay in the trace, unsampled
    assert ids == (TRACE_ID, "b7ad6b7169203331")


def test_on_a_batch_is_one_span_in_the_first_trace_linked_to_the_others(
    spans: InMemorySpanExporter,
) -> None:
    other, third = "1" * 32, "2" * 32
    origins = [
        tracing.carried({"traceparent": VALID, "tracestate": "k=v"}),
        tracing.carried({"traceparent": f"00-{other}-00f067aa0ba902b7-01"}),
        tracing.carried({"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b8-01"}),  # the first's
        tracing.carried({"traceparent": f"00-{third}-00f067aa0ba902b9-01"}),
        tracing.carried({"traceparent": f"00-{other}-00f067aa0ba902ba-01"}),  # linked already
    ]
    with tracing.consuming_batch("profiles", iter(origins), 5), tracing.handling("e", 5):
        with tracing.continuing(origins[1]):
            follow_up, _ = tracing.outgoing()
        ids = tracing.current_trace_ids()
    handle, batch = spans.get_finished_spans()
    assert batch.kind is SpanKind.CONSUMER and batch.name == "profiles process"
    assert batch.parent is not None and batch.context is not None  # the first message's trace
    assert (f"{batch.parent.trace_id:032x}", f"{batch.parent.span_id:016x}") == (
        TRACE_ID, "b7ad6b7169203331"
    )
    assert batch.context.trace_state.get("k") == "v"
    # One link per other trace: none to the parent's, none twice to the same trace.
    assert [format(link.context.trace_id, "032x") for link in batch.links] == [other, third]
    assert (batch.attributes or {})["messaging.batch.message_count"] == 5
    assert handle.parent is not None and batch.context is not None
    assert handle.parent.span_id == batch.context.span_id
    assert follow_up == f"00-{other}-00f067aa0ba902b7-01"  # the message's own trace goes on
    assert ids is not None and handle.context is not None
    assert ids == (f"{handle.context.trace_id:032x}", f"{handle.context.span_id:016x}")


def test_on_a_batch_of_unsampled_messages_records_nothing_and_links_no_unsampled_trace(
    spans: InMemorySpanExporter,
) -> None:
    unsampled = tracing.carried({"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-00"})
    with tracing.consuming_batch("q", iter([unsampled, unsampled]), 2):
        pass
    assert spans.get_finished_spans() == ()
    sampled = tracing.carried({"traceparent": VALID})
    assert sampled is not None
    with tracing.consuming_batch("q", iter([unsampled, None, sampled]), 3):  # None: a trace
        pass
    (batch,) = spans.get_finished_spans()
    assert batch.parent is not None  # the sampled message's trace; unsampled: no link
    assert batch.parent.trace_id == sampled.context.trace_id and not batch.links
    with tracing.consuming_batch("q", iter([unsampled, None]), 2):  # None: a trace of its own
        pass
    _, root = spans.get_finished_spans()
    assert root.parent is None and not root.links


def test_on_a_batch_span_links_no_more_than_the_span_limit(
    spans: InMemorySpanExporter,
) -> None:
    origins = [
        tracing.carried({"traceparent": f"00-{i + 1:032x}-b7ad6b7169203331-01"})
        for i in range(300)
    ]
    with tracing.consuming_batch("q", iter(origins), len(origins)):
        pass
    (batch,) = spans.get_finished_spans()
    assert len(batch.links) == 128 and batch.dropped_links == 0  # none built past the limit
    assert (batch.attributes or {})["messaging.batch.message_count"] == 300


def test_on_an_exception_leaving_a_span_is_recorded_on_it(spans: InMemorySpanExporter) -> None:
    with (
        pytest.raises(KeyError),
        tracing.consuming({"traceparent": VALID}, queue="q", event_type="e", message_id="m"),
    ):
        raise KeyError("boom")
    (consume,) = spans.get_finished_spans()
    assert consume.status.status_code is StatusCode.ERROR
    assert consume.status.description == "KeyError: 'boom'"
    assert [event.name for event in consume.events] == ["exception"]
    assert tracing.current_trace_ids() is None  # the span's context is left behind


def test_on_the_young_generation_is_collected_less_often() -> None:
    before = gc.get_threshold()
    assert tracing.configure_tracing(
        ObservabilitySettings(), service="unit", exporter=InMemorySpanExporter()
    )
    try:
        assert gc.get_threshold() == (
            max(before[0], tracing.YOUNG_GC_THRESHOLD), *before[1:]
        )
    finally:
        tracing.shutdown_tracing()
    assert gc.get_threshold() == before
