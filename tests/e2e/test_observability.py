"""Every process serves Prometheus metrics; every log line is JSON; at the default level
(INFO) one correlation id follows a registration through the auth access line, the authdb
outbox, the relay log, the worker log and the follow-up event."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shared.messaging import H_CORRELATION_ID, H_TRACEPARENT
from tests.e2e.stack import Stack, declare_tap, next_tapped, running_stack, wait_until
from tests.support import isolated_settings

TAP = "e2e.obs_profile_created"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    log_dir: Path = tmp_path_factory.mktemp("obs-logs")
    with (
        isolated_settings(
            "obs", redis_key_prefix=f"o{uuid.uuid4().hex[:8]}:", ocr_engine="tesseract"
        ) as settings,
        running_stack(settings, log_level="INFO", log_dir=log_dir, with_admin=True) as running,
    ):
        yield running


def test_every_process_serves_prometheus_text(stack: Stack) -> None:
    assert set(stack.metrics_urls) == {"auth", "users", "admin", "profiles", "ocr", "relay"}
    httpx.get(f"{stack.auth_url}/health")
    for name, url in stack.metrics_urls.items():
        r = httpx.get(url, timeout=5)
        assert r.status_code == 200, name
        assert r.headers["content-type"].startswith("text/plain"), name
        assert "# TYPE " in r.text, name
        assert "process_resident_memory_bytes" in r.text, name
    relay = httpx.get(stack.metrics_urls["relay"]).text
    assert "outbox" in relay


def _log_events(stack: Stack, name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stack.log_text(name).splitlines() if line.strip()]


def _with_id(stack: Stack, name: str, correlation_id: str) -> list[str]:
    return [
        str(e.get("event")) for e in _log_events(stack, name)
        if e.get("correlation_id") == correlation_id
    ]


def test_one_correlation_id_follows_a_registration(stack: Stack) -> None:
    asyncio.run(declare_tap(stack.direct.broker.url, TAP, "profile.created"))
    correlation_id = str(uuid.uuid4())
    trace_id = uuid.uuid4().hex
    r = httpx.post(
        f"{stack.auth_url}/auth/register",
        json={"email": f"o{uuid.uuid4().hex[:8]}@example.com", "password": "correct horse ok!"},
        headers={"X-Correlation-ID": correlation_id, "traceparent": f"00-{trace_id}-{'1' * 16}-01"},
    )
    assert r.status_code == 201, r.text
    assert r.headers["x-correlation-id"] == correlation_id
    user_id = r.json()["user_id"]

    def relayed() -> list[dict[str, object]]:
        return [
            e for e in _log_events(stack, "relay")
            if e.get("correlation_id") == correlation_id and e.get("event") == "outbox_published"
        ]

    def seen_everywhere() -> bool:
        # The relay published both the user.registered (authdb) and the follow-up
        # profile.created (apidb), the worker logged its effect.
        return (
            {e["event_type"] for e in relayed()} == {"user.registered", "profile.created"}
            and "profile.created" in _with_id(stack, "profiles", correlation_id)
        )

    wait_until(seen_everywhere, 15, "correlation id in the auth, relay and worker logs")
    assert "user.registered" in _with_id(stack, "auth", correlation_id)
    message = asyncio.run(next_tapped(stack.direct.broker.url, TAP))
    assert message.headers[H_CORRELATION_ID] == correlation_id
    # Tracing is off here: the caller's trace context is passed on to every event all the same.
    assert str(message.headers[H_TRACEPARENT]).split("-")[1] == trace_id
    assert {e.get("trace_id") for e in relayed()} == {trace_id}
    assert message.correlation_id == correlation_id
    assert json.loads(message.body)["user_id"] == user_id
    access = [
        e for e in _log_events(stack, "auth")
        if e.get("event") == "request" and e.get("correlation_id") == correlation_id
    ]
    assert len(access) == 1, access
    assert access[0]["method"] == "POST"
    assert access[0]["route"] == "/auth/register"
    assert access[0]["status"] == 201
    assert access[0]["trace_id"] == trace_id
    assert isinstance(access[0]["duration_ms"], float)


def test_every_log_line_is_json(stack: Stack) -> None:
    """uvicorn's, aio-pika's, SQLAlchemy's and our own lines alike, in every process."""
    httpx.get(f"{stack.auth_url}/nowhere")  # an unknown route is logged too
    written = set()
    for name in stack.processes:
        lines = [line for line in stack.log_text(name).splitlines() if line.strip()]
        written |= {name} if lines else set()
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                pytest.fail(f"{name} wrote a line that is not JSON: {line[:300]}")
            assert {"event", "level", "timestamp"} <= event.keys(), (name, line)
    assert {"auth", "relay", "profiles"} <= written
    loggers = {e.get("logger") for e in _log_events(stack, "auth")}
    assert "uvicorn.error" in loggers  # "Started server process", "Application startup …"

    def not_found_logged() -> bool:
        # The access line is written once the response has gone out: the client can be
        # reading the log before the server has written it.
        return any(
            e.get("route") == "<unmatched>" and e["status"] == 404 and e["path"] == "/nowhere"
            for e in _log_events(stack, "auth")
        )

    wait_until(not_found_logged, 5, "the access line of a 404 on an unknown route")
