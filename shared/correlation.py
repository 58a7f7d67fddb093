"""The correlation id of the request or message being handled.

It lives in a ``ContextVar`` of the product's own: an API sets it per request
(:func:`shared.http.correlation_middleware`), the worker runtime per message; the outbox
writer and the logs read it. Code that knows the id passes it explicitly
(``MessageContext.emit``); the variable serves code that does not (a service writing an
event in a request). The header that carries it, over HTTP and AMQP alike, is
:data:`shared.messaging.H_CORRELATION_ID`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_CURRENT: ContextVar[str | None] = ContextVar("ams_correlation_id", default=None)


def current() -> str | None:
    """The correlation id of the request or message being handled, if any."""
    return _CURRENT.get()


def new() -> str:
    return str(uuid.uuid4())


@contextmanager
def correlated(correlation_id: str | None) -> Iterator[None]:
    """``correlation_id`` is the current one for the enclosed block."""
    token = _CURRENT.set(correlation_id)
    try:
        yield
    finally:
        _CURRENT.reset(token)
