"""In JSON mode every stderr line is one JSON object: our own events, any library's stdlib
records, and the access line each request writes.

Each scenario runs in a fresh interpreter: logging is configured once per process, and
structlog caches loggers on first use.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
PRELUDE = """
import asyncio, logging, warnings
from shared.config import ObservabilitySettings
from shared.correlation import correlated
from shared.logging import bound, configure_logging, get_logger
configure_logging(ObservabilitySettings(log_format="json", log_level="INFO"), service="test")
"""


def _run(script: str) -> list[dict[str, object]]:
    code = PRELUDE + textwrap.dedent(script)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        check=False,
    )
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    return parsed


def test_own_and_library_lines_are_json_with_the_correlation_id() -> None:
    lines = _run("""
        with correlated("c-1"), bound(message_id="m-1"):
            get_logger("x").info("own_event", answer=42)
            logging.getLogger("aiormq.connection").warning("Connection lost %s", "somewhere")
            logging.getLogger("uvicorn.error").info("Started server process [%d]", 7)
            logging.getLogger("sqlalchemy.engine.Engine").info("SELECT 1")  # quiet at INFO
            warnings.warn("careful", UserWarning, stacklevel=1)
    """)
    own, aiormq, uvicorn, warning = lines
    assert own["event"] == "own_event" and own["answer"] == 42
    assert own["correlation_id"] == "c-1" and own["message_id"] == "m-1"
    assert aiormq == {**aiormq, "event": "Connection lost somewhere", "level": "warning",
                      "logger": "aiormq.connection", "correlation_id": "c-1", "service": "test"}
    assert uvicorn["event"] == "Started server process [7]"
    assert warning["logger"] == "py.warnings" and "careful" in str(warning["event"])
    assert all("timestamp" in line for line in lines)


def test_exceptions_are_json_lines_too() -> None:
    lines = _run("""
        try:
            raise ValueError("broken")
        except ValueError:
            logging.getLogger("asyncio").exception("Task exception was never retrieved")
        raise RuntimeError("the process dies")
    """)
    logged, crashed = lines
    assert logged["level"] == "error" and "ValueError: broken" in str(logged["exception"])
    assert crashed["event"] == "process_crashed"
    assert "RuntimeError: the process dies" in str(crashed["exception"])


def test_one_access_line_per_request() -> None:
    lines = _run(f"""
        from litestar import get
        from litestar.testing import AsyncTestClient
        from shared.http import api_app

        @get("/items/{{item_id:int}}", operation_id="item", sync_to_thread=False)
        def item(item_id: int) -> dict[str, int]:
            get_logger("handler").info("item_read", item_id=item_id)
            return {{"id": item_id}}

        async def main() -> None:
            app = api_app(title="t", route_handlers=[item], ready_checks={{}}, max_body_bytes=9)
            async with AsyncTestClient(app) as client:
                headers = {{"x-correlation-id": "c-2", "traceparent": "{TRACEPARENT}"}}
                await client.get("/items/3", headers=headers)
                await client.get("/nope", headers={{"traceparent": "00-zz-not-valid"}})
                await client.get("/health")

        asyncio.run(main())
    """)
    trace_id = TRACEPARENT.split("-")[1]
    handler = next(line for line in lines if line["event"] == "item_read")
    assert handler["correlation_id"] == "c-2"
    assert handler["trace_id"] == trace_id
    access = [line for line in lines if line["event"] == "request"]
    assert len(access) == 2, access  # probes are logged at DEBUG only
    first, unknown = access
    assert first == {**first, "method": "GET", "route": "/items/{item_id}", "path": "/items/3",
                     "status": 200, "correlation_id": "c-2", "trace_id": trace_id}
    assert isinstance(first["duration_ms"], float)
    assert unknown["route"] == "<unmatched>" and unknown["status"] == 404
    assert "trace_id" not in unknown  # the malformed traceparent was ignored
    assert unknown["correlation_id"] != "c-2"
