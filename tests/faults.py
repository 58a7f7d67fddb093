"""Fault injection for tests: a TCP proxy that can cut and refuse connections.

Clients under test connect to the proxy instead of the service. ``cut()`` drops every
open connection and refuses new ones until ``restore()``: to the client this is exactly
a service that went away, without disturbing other users of the shared local service.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; runs its own event loop in a thread.

    With ``tls`` (a server context) it terminates TLS in front of a plain service, as a
    TLS-enabled service or a terminating load balancer would.
    """

    def __init__(
        self, target_host: str, target_port: int, *, tls: ssl.SSLContext | None = None
    ) -> None:
        self.target = (target_host, target_port)
        self._tls = tls
        self.port = _free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._open = True

    def start(self) -> TcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close_all(stop_server=True), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def cut(self) -> None:
        """Drop every connection now and refuse new ones."""
        self._open = False
        asyncio.run_coroutine_threadsafe(self._close_all(stop_server=True), self._loop).result(5)

    def restore(self) -> None:
        """Accept connections again."""
        self._open = True
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(5)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, ssl=self._tls
            )

    async def _close_all(self, *, stop_server: bool) -> None:
        if stop_server and self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            with contextlib.suppress(Exception):
                w.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.transport.abort()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
