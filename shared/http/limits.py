"""Request limits beyond Litestar's own body size limit: a deadline for the request body."""

from __future__ import annotations

import asyncio

from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send


def body_deadline_middleware(app: ASGIApp, timeout_s: float) -> ASGIApp:
    """A request body must arrive within ``timeout_s`` of the request's start, or the answer
    is 408: a client trickling a large upload a byte at a time would otherwise hold a
    connection and a request for as long as it likes (uvicorn has no body timeout). Once
    the body is complete, ``receive`` is passed through untimed (disconnect detection)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        complete = False

        async def timed_receive() -> ReceiveMessage:
            nonlocal complete
            if complete:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise HTTPException(
                    status_code=408,
                    detail=f"the request body did not arrive within {timeout_s:g} s",
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        await app(scope, timed_receive, send)

    return middleware
