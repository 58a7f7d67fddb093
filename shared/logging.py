"""structlog configuration: JSON lines with a correlation id bound per request or message.

Every line a process writes goes through one renderer: the product's own structlog events
directly, and every standard-library record (uvicorn, aio-pika/aiormq, SQLAlchemy, asyncio,
warnings) through structlog's :class:`~structlog.stdlib.ProcessorFormatter`. So in JSON
mode each stderr line is one JSON object with ``timestamp``, ``level``, ``event``,
``service`` and, where bound, ``correlation_id`` and ``trace_id``/``span_id``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from shared import correlation
from shared.config import ObservabilitySettings

# Library loggers that are chatty at INFO and say nothing an operator needs (every SQL
# statement, every AMQP frame): WARNING unless LOG_LEVEL=DEBUG.
_QUIET_LIBRARIES = ("sqlalchemy.engine", "aiormq", "aio_pika")


def _add_trace_ids(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """``trace_id``/``span_id`` of the current span or passed-through trace context."""
    from shared.tracing import current_trace_ids  # noqa: PLC0415 (tracing imports logging)

    ids = current_trace_ids()
    if ids is not None:
        event_dict.setdefault("trace_id", ids[0])
        event_dict.setdefault("span_id", ids[1])
    return event_dict


def _add_correlation_id(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """The current correlation id (:mod:`shared.correlation`), on every line logged in it."""
    correlation_id = correlation.current()
    if correlation_id is not None:
        event_dict.setdefault("correlation_id", correlation_id)
    return event_dict


_SHARED: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    _add_correlation_id,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    _add_trace_ids,
]


def configure_logging(settings: ObservabilitySettings, *, service: str) -> None:
    """Configure stdlib logging and structlog once per process."""
    level = logging.getLevelName(settings.log_level.upper())
    renderer: Processor
    if settings.log_format == "console":
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer()
    shared = _SHARED
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    _route_stdlib(level, renderer, shared)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)


def _route_stdlib(level: int, renderer: Processor, shared: list[Processor]) -> None:
    """Every stdlib record (any library) is rendered by the same processors as our own."""
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared,
                           structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else logging.WARNING)
    # uvicorn configures nothing (log_config=None): its loggers propagate to the root.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    """An exception that ends the process is one more JSON line, not a bare traceback."""
    if issubclass(exc_type, KeyboardInterrupt):
        sys.__excepthook__(exc_type, exc, tb)
        return
    logging.getLogger("uncaught").critical("process_crashed", exc_info=(exc_type, exc, tb))


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger; bind key/values, never format strings."""
    return structlog.get_logger(name)  # type: ignore[no-any-return]


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    """Bind key/values (``message_id``, ``event_type`` …) to the log lines of the block."""
    with structlog.contextvars.bound_contextvars(**values):
        yield
