"""A slow link for one host: delay and jitter on its TCP connections to some peers.

This kernel has no ``netem`` qdisc, so delay is added in user space: on the degraded host,
``iptables -t nat ... REDIRECT`` sends its new TCP connections to the peers into this
proxy, which connects on to the original destination (``SO_ORIGINAL_DST``) and holds every
chunk the host sends for ``delay ± jitter`` ms (normal distribution; order kept, as netem
keeps it without reordering; the answers come back at once, as with netem on the host's
interface). Loss is real packet loss: ``iptables -m statistic``
drops a share of the packets between the host and the peers, so TCP retransmits.

``python -m tests.cluster.wan --port P --delay-ms 200 --jitter-ms 50`` (in the host's
namespace).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import struct
import time

SO_ORIGINAL_DST = 80


def original_destination(sock: socket.socket) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack_from("!2xH4s", raw)
    return socket.inet_ntoa(packed), port


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
               delay_s: float, jitter_s: float) -> None:
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    last = 0.0

    async def send() -> None:
        while True:
            release, chunk = await queue.get()
            if not chunk:
                break
            await asyncio.sleep(max(0.0, release - time.monotonic()))
            writer.write(chunk)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    try:
        while True:
            chunk = await reader.read(65536)
            delay = max(0.0, random.gauss(delay_s, jitter_s))
            last = max(time.monotonic() + delay, last)
            await queue.put((last, chunk))
            if not chunk:
                break
    except (ConnectionError, OSError):
        await queue.put((0.0, b""))
    await sender


async def serve(port: int, delay_s: float, jitter_s: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, dport = original_destination(writer.get_extra_info("socket"))
        try:
            up_reader, up_writer = await asyncio.open_connection(host, dport)
        except OSError:
            writer.close()
            return
        # One way, as `tc netem delay` on the host's interface: its packets out are late.
        await asyncio.gather(
            pipe(reader, up_writer, delay_s, jitter_s),
            pipe(up_reader, writer, 0.0, 0.0),
            return_exceptions=True,
        )

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=200)
    parser.add_argument("--jitter-ms", type=float, default=50)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.delay_ms / 1000, args.jitter_ms / 1000))


if __name__ == "__main__":
    main()
