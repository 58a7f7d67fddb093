"""A local OTLP/HTTP receiver for the benchmarks' tracing-on runs: it accepts every export
(``POST /v1/traces``, 200) and counts requests and bytes, so that tracing on pays for
recording *and* exporting its spans, as it would with a collector on the same machine.

    with otlp_sink() as sink:      # a separate process, on a free loopback port
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
        ...
        sink.received()            # {"requests": N, "bytes": B}
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.request import urlopen


def _serve(port_out: Any) -> None:
    totals = {"requests": 0, "bytes": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            size = int(self.headers.get("content-length") or 0)
            self.rfile.read(size)
            totals["requests"] += 1
            totals["bytes"] += size
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            body = json.dumps(totals).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_out.send(server.server_address[1])
    server.serve_forever()


@dataclass
class Sink:
    endpoint: str

    def received(self) -> dict[str, int]:
        with urlopen(f"{self.endpoint}/totals", timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]


@contextmanager
def otlp_sink() -> Iterator[Sink]:
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(target=_serve, args=(child,), daemon=True)
    process.start()
    try:
        port = parent.recv()
        yield Sink(f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.join(5)
