"""Typed settings, built once per process from environment variables.

Every field has a localhost default so that a fresh checkout runs against the local
PostgreSQL, Redis and RabbitMQ without any configuration. Entry points call
:meth:`Settings.from_env` once and pass the object down; nothing reads the
environment at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints

DATABASES = ("authdb", "apidb", "admindb")
"""Logical database names; each has its own URL, migrations, outbox and inbox."""


def _env(name: str) -> dict[str, Any]:
    return {"env": name}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Process configuration. Each field names the environment variable it comes from."""

    auth_database_url: str = field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/authdb",
        metadata=_env("AUTH_DATABASE_URL"),
    )
    """authdb: users, refresh tokens, sagas, outbox, inbox."""

    users_database_url: str = field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/apidb",
        metadata=_env("USERS_DATABASE_URL"),
    )
    """apidb: profiles, outbox, inbox."""

    admin_database_url: str = field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/admindb",
        metadata=_env("ADMIN_DATABASE_URL"),
    )
    """admindb: documents, blobs, OCR results, outbox, inbox."""

    rabbitmq_url: str = field(
        default="amqp://guest:guest@127.0.0.1:5672/", metadata=_env("RABBITMQ_URL")
    )
    """AMQP URL; the vhost is the path (``/`` is the default vhost)."""

    rabbitmq_management_url: str = field(
        default="http://guest:guest@127.0.0.1:15672/", metadata=_env("RABBITMQ_MANAGEMENT_URL")
    )
    """Management HTTP API, used for policies and vhost administration."""

    redis_url: str = field(default="redis://127.0.0.1:6379/0", metadata=_env("REDIS_URL"))
    """Redis for sessions, the token denylist, rate limits and caches."""

    log_level: str = field(default="INFO", metadata=_env("LOG_LEVEL"))
    """Minimum log level (DEBUG, INFO, WARNING, ERROR)."""

    log_format: str = field(default="json", metadata=_env("LOG_FORMAT"))
    """``json`` (one object per line) or ``console`` (coloured, for people)."""

    db_pool_size: int = field(default=10, metadata=_env("DB_POOL_SIZE"))
    """Connections per database pool in each process."""

    relay_batch_size: int = field(default=500, metadata=_env("RELAY_BATCH_SIZE"))
    """Outbox rows claimed per relay round trip."""

    relay_max_batches_in_flight: int = field(
        default=4, metadata=_env("RELAY_MAX_BATCHES_IN_FLIGHT")
    )
    """Batches published but not yet confirmed; overlaps database work with publishing."""

    relay_poll_min_s: float = field(default=0.05, metadata=_env("RELAY_POLL_MIN_S"))
    """Shortest polling interval right after activity (LISTEN/NOTIFY wakes it sooner)."""

    relay_poll_max_s: float = field(default=2.0, metadata=_env("RELAY_POLL_MAX_S"))
    """Longest polling interval of an idle relay."""

    relay_max_attempts: int = field(default=10, metadata=_env("RELAY_MAX_ATTEMPTS"))
    """Failed publishes (nack, unroutable) of one event before it is parked."""

    relay_backoff_base_s: float = field(default=0.5, metadata=_env("RELAY_BACKOFF_BASE_S"))
    """First retry delay of a failed event; doubles per attempt."""

    relay_backoff_max_s: float = field(default=300.0, metadata=_env("RELAY_BACKOFF_MAX_S"))
    """Longest retry delay of a failed event."""

    relay_rebalance_s: float = field(default=1.0, metadata=_env("RELAY_REBALANCE_S"))
    """How often a relay re-checks its share of partitions when several copies run."""

    relay_metrics_port: int = field(default=9101, metadata=_env("RELAY_METRICS_PORT"))
    """Prometheus endpoint of the relay process (0 disables it)."""

    worker_prefetch: int = field(default=64, metadata=_env("WORKER_PREFETCH"))
    """Unacknowledged messages per consumer; also the most handlers running in parallel."""

    worker_max_attempts: int = field(default=5, metadata=_env("WORKER_MAX_ATTEMPTS"))
    """Handling attempts of a message that fails transiently before it is dead-lettered."""

    worker_retry_delays: str = field(default="1s,5s,30s,2m", metadata=_env("WORKER_RETRY_DELAYS"))
    """Delays before retry 1, 2, 3 … (``ms``/``s``/``m``/``h``); the last one repeats.
    Each delay is a TTL queue ``<consumer>.retry.<delay>``."""

    worker_batch_max: int = field(default=32, metadata=_env("WORKER_BATCH_MAX"))
    """Most messages (of different aggregates) applied in one transaction under load."""

    worker_metrics_port: int = field(default=9102, metadata=_env("WORKER_METRICS_PORT"))
    """Prometheus endpoint of a worker process (0 disables it)."""

    worker_shutdown_timeout_s: float = field(
        default=30.0, metadata=_env("WORKER_SHUTDOWN_TIMEOUT_S")
    )
    """On SIGTERM, how long in-flight messages may take to finish before the worker exits."""

    worker_blocking_threads: int = field(default=4, metadata=_env("WORKER_BLOCKING_THREADS"))
    """Threads for blocking or CPU-heavy handler work (``MessageContext.run_blocking``)."""

    def database_url(self, database: str) -> str:
        """URL of one logical database (``authdb``, ``apidb`` or ``admindb``)."""
        urls = {
            "authdb": self.auth_database_url,
            "apidb": self.users_database_url,
            "admindb": self.admin_database_url,
        }
        try:
            return urls[database]
        except KeyError:
            raise ValueError(
                f"unknown database {database!r}; expected one of {', '.join(DATABASES)}"
            ) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default: the process environment)."""
        environ = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata.get("env")
            if name is None or name not in environ:
                continue
            values[f.name] = _coerce(name, environ[name], hints[f.name])
        values.update(overrides)
        return cls(**values)

    @classmethod
    def documented(cls) -> list[tuple[str, str, str]]:
        """(env var, default, description) for every field, for the README table."""
        docs = _field_docs(cls)
        return [(f.metadata["env"], repr(f.default), docs.get(f.name, "")) for f in fields(cls)]


def _coerce(name: str, raw: str, kind: Any) -> Any:
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is bool:
            return raw.strip().lower() in {"1", "true", "yes", "on"}
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not a valid {kind.__name__}") from None
    return raw


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal right after each field)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for prev, node in zip(body, body[1:], strict=False):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
        ):
            docs[prev.target.id] = str(node.value.value)
    return docs
