"""Typed settings, built once per process from environment variables.

Every field has a localhost default so that a fresh checkout runs against the local
PostgreSQL, Redis and RabbitMQ without any configuration. Entry points call
:meth:`Settings.from_env` once and pass the object down; nothing reads the
environment at import time.

The fields live in groups (``settings.relay.batch_size``, ``settings.passwords.time_cost``);
a component is handed the group it uses. Each field is declared once, in its group, with the
environment variable it comes from. Overrides are flat and keyed by that variable's name in
lower case (``ocr_engine="tesseract"`` sets ``OCR_ENGINE``, i.e. ``settings.ocr.engine``):
:meth:`Settings.from_env`, :meth:`Settings.build` and :meth:`Settings.replace` take them, and
:data:`OVERRIDES` (derived from the groups) says where each one goes.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import os
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from typing import Any, NoReturn, get_type_hints

from shared.db_url import url_password, with_password
from shared.messaging import AGGREGATE_SLOTS
from shared.tls import with_default_ca

DATABASES = ("authdb", "apidb", "admindb")
"""Logical databases; each has its own URL, migrations, outbox and inbox."""


def _env(name: str) -> dict[str, Any]:
    return {"env": name}


def _link(name: str) -> dict[str, Any]:
    """A service URL that trusts ``TLS_CA_FILE`` unless it names its own CA."""
    return {"env": name, "link": "url"}


def _nodes(name: str) -> dict[str, Any]:
    """A comma-separated list of service URLs, each one a :func:`_link`."""
    return {"env": name, "link": "nodes"}


@dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    """The three logical databases: their URLs and roles, each process's pools, migrate's admin."""

    auth_url: str = field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/authdb",
        metadata=_link("AUTH_DATABASE_URL"),
    )
    """authdb: users, refresh tokens, sagas, outbox, inbox."""

    users_url: str = field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/apidb",
        metadata=_link("USERS_DATABASE_URL"),
    )
    """apidb: profiles, outbox, inbox."""

    admin_url: str = field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/admindb",
        metadata=_link("ADMIN_DATABASE_URL"),
    )
    """admindb: documents, blobs, OCR results, outbox, inbox."""

    operator_audit_url: str = field(default="", metadata=_link("AUDIT_DATABASE_URL"))
    """Where the admin API (and console) append operator actions (authdb's ``operator_audit``);
    empty: ``AUTH_DATABASE_URL``. With least-privilege roles, a role that may only insert into
    and read that table."""

    pool_size: int = field(default=10, metadata=_env("DB_POOL_SIZE"))
    """Connections per database pool in each process."""

    # --- database roles (least privilege; docs/deployment.md, "Database roles") ------------
    migrate_url: str = field(default="", metadata=_link("MIGRATE_DATABASE_URL"))
    """The administrator connection of ``amsctl db migrate`` (a superuser, or a role with
    CREATEDB and CREATEROLE), e.g. ``postgresql+asyncpg://postgres@127.0.0.1:5432/postgres``.
    Set, migrate creates the databases, a login role per service named by the user of
    ``AUTH_``/``USERS_``/``ADMIN_``/``AUDIT_DATABASE_URL`` (password from that URL or its
    ``*_PASSWORD_FILE``) and ``DATABASE_OWNER_ROLE``, and grants each service only DML on its
    own database. Empty: no roles are managed; migrate connects with the service URLs. Give it
    to migrate only: no running process needs it."""

    migrate_password_file: str = field(
        default="", metadata=_env("MIGRATE_DATABASE_PASSWORD_FILE")
    )
    """A file holding the password of ``MIGRATE_DATABASE_URL`` (a mounted secret), used when
    the URL carries none."""

    owner_role: str = field(default="ams_owner", metadata=_env("DATABASE_OWNER_ROLE"))
    """The role (NOLOGIN) that owns the three databases and every table in them; migrations
    run as it (``SET ROLE``), nothing else does."""

    auth_password_file: str = field(default="", metadata=_env("AUTH_DATABASE_PASSWORD_FILE"))
    """A file holding the password of ``AUTH_DATABASE_URL``'s user, used when the URL carries
    none (also read by migrate to set that role's password)."""

    users_password_file: str = field(default="", metadata=_env("USERS_DATABASE_PASSWORD_FILE"))
    """A file holding the password of ``USERS_DATABASE_URL``'s user (as above)."""

    admin_password_file: str = field(default="", metadata=_env("ADMIN_DATABASE_PASSWORD_FILE"))
    """A file holding the password of ``ADMIN_DATABASE_URL``'s user (as above)."""

    operator_audit_password_file: str = field(
        default="", metadata=_env("AUDIT_DATABASE_PASSWORD_FILE")
    )
    """A file holding the password of ``AUDIT_DATABASE_URL``'s user (as above)."""

    def __post_init__(self) -> None:
        # Each ``*_DATABASE_URL`` gets the password of its ``*_DATABASE_PASSWORD_FILE``.
        for f in _links(self):
            path = getattr(self, f.name.removesuffix("_url") + "_password_file")
            if path:
                url, setting = getattr(self, f.name), f.metadata["env"]
                # A password written in the URL wins, as a value wins over its file.
                password = secret_value(
                    url_password(url), path, setting.removesuffix("_URL") + "_PASSWORD"
                )
                object.__setattr__(self, f.name, with_password(url, password, setting))

    @property
    def audit_url(self) -> str:
        """The database URL that holds the operator audit table."""
        return self.operator_audit_url or self.auth_url

    def url(self, database: str) -> str:
        """URL of one logical database (``authdb``, ``apidb`` or ``admindb``)."""
        urls = {"authdb": self.auth_url, "apidb": self.users_url, "admindb": self.admin_url}
        try:
            return urls[database]
        except KeyError:
            raise ValueError(
                f"unknown database {database!r}; expected one of {', '.join(DATABASES)}"
            ) from None


@dataclass(frozen=True, kw_only=True)
class BrokerSettings:
    """RabbitMQ: the AMQP nodes and their management API."""

    url: str = field(
        default="amqp://guest:guest@127.0.0.1:5672/", metadata=_nodes("RABBITMQ_URL")
    )
    """AMQP URL; the vhost is the path (``/`` is the default vhost). A cluster: the nodes'
    URLs separated by commas; clients connect to the first that answers and fail over to
    the next one when their node goes away."""

    management_url: str = field(
        default="http://guest:guest@127.0.0.1:15672/", metadata=_env("RABBITMQ_MANAGEMENT_URL")
    )
    """Management HTTP API, used for policies and vhost administration; several nodes'
    URLs separated by commas are tried in order."""

    operator_user: str = field(default="operator", metadata=_env("RABBITMQ_OPERATOR_USER"))
    """The broker user of ``amsctl dlq`` and the console (they connect with ``RABBITMQ_URL``:
    put this user's credentials there). ``amsctl topology apply`` gives it, in the vhost, no
    configure permission, write on the ``replay`` exchange only and read on ``*.dlq`` only
    (docs/operations.md); empty: leave users alone."""

    operator_password: str = field(
        default="", metadata=_env("RABBITMQ_OPERATOR_PASSWORD"), repr=False
    )
    """Set: ``amsctl topology apply`` creates (or updates) the operator user with this password
    and the ``monitoring`` tag. Empty: the user must exist already (a broker's boot-time
    definitions); only its permissions are written."""

    operator_password_file: str = field(
        default="", metadata=_env("RABBITMQ_OPERATOR_PASSWORD_FILE")
    )
    """A file holding ``RABBITMQ_OPERATOR_PASSWORD`` (a mounted secret); used when that is empty."""

    def operator_secret(self) -> str:
        """``RABBITMQ_OPERATOR_PASSWORD`` or the contents of ``RABBITMQ_OPERATOR_PASSWORD_FILE``."""
        return secret_value(
            self.operator_password, self.operator_password_file, "RABBITMQ_OPERATOR_PASSWORD"
        )


@dataclass(frozen=True, kw_only=True)
class RedisSettings:
    """Redis: sessions, the token denylist, rate limits and caches."""

    url: str = field(default="redis://127.0.0.1:6379/0", metadata=_link("REDIS_URL"))
    """Redis for sessions, the token denylist, rate limits and caches."""

    key_prefix: str = field(default="ams:", metadata=_env("REDIS_KEY_PREFIX"))
    """Prefix of every Redis key (sessions, denylist, rate limits, caches)."""


@dataclass(frozen=True, kw_only=True)
class TlsSettings:
    """What every outgoing TLS link trusts."""

    ca_file: str = field(default="", metadata=_env("TLS_CA_FILE"))
    """PEM bundle of the certificate authorities every TLS link trusts unless its URL names its
    own: PostgreSQL URLs with ``sslmode=verify-full`` (or ``verify-ca``; own: ``sslrootcert=``),
    ``rediss://`` (own: ``ssl_ca_certs=``), ``amqps://`` (own: ``cafile=``) and an https
    ``AUTH_JWKS_URL``. Empty: the system's trust store. Certificates are always verified, and
    host names too (but with ``verify-ca``); docs/deployment.md, "TLS"."""


@dataclass(frozen=True, kw_only=True)
class HttpSettings:
    """How the HTTP APIs listen and whom they believe."""

    host: str = field(default="127.0.0.1", metadata=_env("HTTP_HOST"))
    """Interface the APIs listen on (``0.0.0.0`` in containers)."""

    users_port: int = field(default=8001, metadata=_env("USERS_PORT"))
    """Port of the users API (``python -m apps.users``)."""

    auth_port: int = field(default=8002, metadata=_env("AUTH_PORT"))
    """Port of the auth service (``python -m apps.auth``)."""

    admin_port: int = field(default=8003, metadata=_env("ADMIN_PORT"))
    """Port of the admin API (``python -m apps.admin``)."""

    tls_cert_file: str = field(default="", metadata=_env("HTTP_TLS_CERT_FILE"))
    """PEM certificate (chain) an API serves https with, beside ``HTTP_TLS_KEY_FILE``; empty:
    plain http. The auth API needs it whenever the other APIs fetch its JWKS from another host."""

    tls_key_file: str = field(default="", metadata=_env("HTTP_TLS_KEY_FILE"))
    """PEM private key of ``HTTP_TLS_CERT_FILE``."""

    trusted_proxies: str = field(default="127.0.0.1,::1", metadata=_env("TRUSTED_PROXIES"))
    """Comma-separated addresses (or CIDRs) of the reverse proxies and frontends whose
    ``X-Forwarded-For`` the APIs believe for the client address (rate limits, logs); from
    any other peer the header is ignored. The default trusts this host (the portal and
    console of ``make run``); empty: believe no one, the TCP peer is the client."""

    request_max_body_bytes: int = field(
        default=64 * 1024, metadata=_env("REQUEST_MAX_BODY_BYTES")
    )
    """Largest JSON request body an API accepts (413 above); uploads set their own limit."""

    request_body_timeout_s: float = field(default=120.0, metadata=_env("REQUEST_BODY_TIMEOUT_S"))
    """A request's body must have arrived this long after the request began, or the API
    answers 408 (a client trickling an upload cannot hold a connection for ever)."""

    def __post_init__(self) -> None:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("HTTP_TLS_CERT_FILE and HTTP_TLS_KEY_FILE go together")


@dataclass(frozen=True, kw_only=True)
class ObservabilitySettings:
    """Logs and traces of every process."""

    log_level: str = field(default="INFO", metadata=_env("LOG_LEVEL"))
    """Minimum log level (DEBUG, INFO, WARNING, ERROR)."""

    log_format: str = field(default="json", metadata=_env("LOG_FORMAT"))
    """``json`` (one object per line) or ``console`` (coloured, for people)."""

    tracing_enabled: bool = field(default=False, metadata=_env("TRACING_ENABLED"))
    """Record OpenTelemetry spans and export them as the standard ``OTEL_*`` variables say
    (``OTEL_TRACES_EXPORTER`` otlp|console|none, ``OTEL_EXPORTER_OTLP_ENDPOINT`` …). Off, a
    caller's ``traceparent`` is still passed on to every event (docs/running.md, "traces")."""

    @property
    def debug(self) -> bool:
        """``LOG_LEVEL`` is DEBUG: processes may log every event that passes."""
        return self.log_level.upper() == "DEBUG"


@dataclass(frozen=True, kw_only=True)
class RelaySettings:
    """The outbox relay (``python -m outbox``)."""

    batch_size: int = field(default=2000, metadata=_env("RELAY_BATCH_SIZE"))
    """Outbox rows claimed per relay round trip."""

    max_batches_in_flight: int = field(
        default=2, metadata=_env("RELAY_MAX_BATCHES_IN_FLIGHT")
    )
    """Batches' worth of rows (``RELAY_BATCH_SIZE`` each) published but not yet confirmed:
    overlaps database work with publishing, and lets small batches go out at once instead of
    waiting for the confirms of the ones before them."""

    poll_min_s: float = field(default=0.01, metadata=_env("RELAY_POLL_MIN_S"))
    """Shortest polling interval right after activity, doubling while idle (LISTEN/NOTIFY
    wakes it sooner; a transaction that committed while another one held the notifier lock
    is found by this poll at the latest)."""

    poll_max_s: float = field(default=2.0, metadata=_env("RELAY_POLL_MAX_S"))
    """Longest polling interval of an idle relay."""

    max_attempts: int = field(default=10, metadata=_env("RELAY_MAX_ATTEMPTS"))
    """Failed publishes (nack, unroutable) of one event before it is parked."""

    backoff_base_s: float = field(default=0.5, metadata=_env("RELAY_BACKOFF_BASE_S"))
    """First retry delay of a failed event; doubles per attempt."""

    backoff_max_s: float = field(default=300.0, metadata=_env("RELAY_BACKOFF_MAX_S"))
    """Longest retry delay of a failed event."""

    rebalance_s: float = field(default=1.0, metadata=_env("RELAY_REBALANCE_S"))
    """How often a relay re-checks its share of partitions when several copies run."""

    metrics_port: int = field(default=9101, metadata=_env("RELAY_METRICS_PORT"))
    """Prometheus endpoint of the relay process (0 disables it)."""

    vacuum_every: int = field(default=20_000, metadata=_env("RELAY_VACUUM_EVERY"))
    """Deleted rows after which the relay owning partition 0 vacuums the outbox (0: never).
    Dead rows at the head of the id index slow every claim; autovacuum naps for a minute."""


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """The consumer runtime every worker runs on."""

    max_message_bytes: int = field(
        default=1024 * 1024, metadata=_env("WORKER_MAX_MESSAGE_BYTES")
    )
    """Largest message body a consumer decodes; a larger one is dead-lettered with the reason
    (events are small: this bounds what one forged message can cost a worker)."""

    prefetch: int = field(default=128, metadata=_env("WORKER_PREFETCH"))
    """Unacknowledged messages per consumer; also the most handlers running in parallel.
    The OCR consumer takes ``2 x OCR_WORKERS`` instead: its jobs are slow."""

    max_attempts: int = field(default=5, metadata=_env("WORKER_MAX_ATTEMPTS"))
    """Handling attempts of a message that fails transiently before it is dead-lettered."""

    retry_delays: str = field(default="1s,5s,30s,2m", metadata=_env("WORKER_RETRY_DELAYS"))
    """Delays before retry 1, 2, 3 … (``ms``/``s``/``m``/``h``); the last one repeats.
    Each delay is a TTL queue ``<consumer>.retry.<delay>``."""

    partitions: int = field(default=1, metadata=_env("WORKER_PARTITIONS"))
    """Processes per consumer (OCR excepted), each owning a share of the aggregates: a
    headers exchange routes every aggregate to one partition queue, so order per
    aggregate holds across processes. ``python -m workers NAME`` then starts one process
    per partition. Change it only with the consumer's queues empty (docs/operations.md)."""

    batch_max: int = field(default=64, metadata=_env("WORKER_BATCH_MAX"))
    """Most messages (of different aggregates) applied in one transaction under load."""

    metrics_port: int = field(default=9102, metadata=_env("WORKER_METRICS_PORT"))
    """Prometheus endpoint of a worker process (0 disables it)."""

    shutdown_timeout_s: float = field(
        default=30.0, metadata=_env("WORKER_SHUTDOWN_TIMEOUT_S")
    )
    """On SIGTERM, how long in-flight messages may take to finish before the worker exits."""

    blocking_threads: int = field(default=4, metadata=_env("WORKER_BLOCKING_THREADS"))
    """Threads for blocking or CPU-heavy handler work (``MessageContext.run_blocking``)."""

    trace_statements: bool = field(default=False, metadata=_env("WORKER_TRACE_STATEMENTS"))
    """With ``TRACING_ENABLED``, workers also record a span per SQL statement (their
    handlers', the inbox's). Off, they record their consume and handle spans only: statement
    spans would cost a busy worker more than all its own spans together."""

    def __post_init__(self) -> None:
        if not 1 <= self.partitions <= AGGREGATE_SLOTS:
            raise ValueError(f"WORKER_PARTITIONS must be between 1 and {AGGREGATE_SLOTS}")


@dataclass(frozen=True, kw_only=True)
class UploadSettings:
    """What the admin API accepts as a document upload."""

    max_bytes: int = field(default=20 * 1024 * 1024, metadata=_env("UPLOAD_MAX_BYTES"))
    """Largest accepted upload; bigger bodies are refused with 413 before being buffered."""

    max_pixels: int = field(default=50_000_000, metadata=_env("UPLOAD_MAX_PIXELS"))
    """Largest image (width x height, per page) accepted; guards against decompression bombs."""

    max_pages: int = field(default=50, metadata=_env("PDF_MAX_PAGES"))
    """Most pages an upload (PDF, multi-page TIFF, animated PNG) may have."""

    max_per_minute: int = field(default=120, metadata=_env("UPLOAD_MAX_PER_MINUTE"))
    """Uploads one user may start per minute; more answer 429 with ``Retry-After``."""

    quota_documents: int = field(default=1000, metadata=_env("UPLOAD_QUOTA_DOCUMENTS"))
    """Most documents one user may keep; an upload past it answers 413 (quota_exceeded)."""

    quota_bytes: int = field(default=1024**3, metadata=_env("UPLOAD_QUOTA_BYTES"))
    """Most bytes of documents one user may keep (default 1 GiB); past it 413."""

    inspect_threads: int = field(default=2, metadata=_env("UPLOAD_INSPECT_THREADS"))
    """Threads of the admin API that check uploads off its event loop; more uploads queue."""


@dataclass(frozen=True, kw_only=True)
class OcrSettings:
    """The OCR worker's engine and its process pool."""

    engine: str = field(default="tesseract", metadata=_env("OCR_ENGINE"))
    """OCR engine of the worker: ``tesseract`` (default) or ``easyocr`` (needs the ocr extra)."""

    model_dir: str = field(default="/var/lib/ams/easyocr", metadata=_env("OCR_MODEL_DIR"))
    """Directory holding the easyocr model files (``craft_mlt_25k.pth``, ``english_g2.pth``…)."""

    allow_downloads: bool = field(default=False, metadata=_env("OCR_ALLOW_DOWNLOADS"))
    """Let easyocr download missing model files; off so a worker never hangs on the network."""

    verify_checksums: bool = field(default=True, metadata=_env("OCR_VERIFY_CHECKSUMS"))
    """Check easyocr model files against easyocr's published MD5 sums; turn off for own weights."""

    gpu: bool = field(default=False, metadata=_env("OCR_GPU"))
    """Run easyocr on the GPU (CUDA) instead of the CPU."""

    languages: str = field(default="en", metadata=_env("OCR_LANGUAGES"))
    """Comma-separated easyocr language codes (tesseract maps ``en`` to ``eng``)."""

    timeout_s: float = field(default=120.0, metadata=_env("OCR_TIMEOUT_S"))
    """Longest OCR run of one document; a job that takes longer fails with a reason."""

    workers: int = field(default=1, metadata=_env("OCR_WORKERS"))
    """OCR processes in the worker's pool (each loads the model once), = concurrent jobs."""

    memory_limit_mb: int = field(default=3072, metadata=_env("OCR_MEMORY_LIMIT_MB"))
    """Memory one OCR process (with the tesseract it runs) may map (``RLIMIT_DATA``); a
    document that needs more fails for good (after one retry) with that reason. 0: no limit.
    The default leaves room for easyocr (torch reserves far more than it touches); with
    OCR_ENGINE=tesseract 512 is plenty. OCR_WORKERS x this bounds what OCR can take."""

    pdf_dpi: int = field(default=150, metadata=_env("OCR_PDF_DPI"))
    """Resolution PDF pages are rasterised at before OCR."""


@dataclass(frozen=True, kw_only=True)
class TokenSettings:
    """Access and refresh tokens: issuing (auth) and verifying (every API)."""

    jwks_url: str = field(
        default="http://127.0.0.1:8002/.well-known/jwks.json", metadata=_env("AUTH_JWKS_URL")
    )
    """Where the APIs fetch the auth service's public signing keys."""

    issuer: str = field(default="ams-auth", metadata=_env("AUTH_ISSUER"))
    """``iss`` of every token; verifiers refuse any other."""

    audience: str = field(default="ams-api", metadata=_env("AUTH_AUDIENCE"))
    """``aud`` of access tokens; verifiers refuse any other."""

    access_token_ttl_s: int = field(default=900, metadata=_env("ACCESS_TOKEN_TTL_S"))
    """Lifetime of an access token (at most 900 s)."""

    refresh_token_ttl_s: int = field(default=14 * 86400, metadata=_env("REFRESH_TOKEN_TTL_S"))
    """Absolute lifetime of a refresh-token family (rotation never extends it)."""

    refresh_reuse_grace_s: float = field(default=10.0, metadata=_env("REFRESH_REUSE_GRACE_S"))
    """Reuse interval of a rotated refresh token (0 to 60 s; 0: none). A refresh token presented
    again within this many seconds of its rotation, while the token it was exchanged for is still
    unused, gets that same successor (and a fresh access token) instead of revoking its family:
    a client whose two requests refreshed at once stays signed in, and the family keeps one live
    refresh token. Any later reuse, or one after the successor was spent, revokes the family."""

    jwks_cache_ttl_s: float = field(default=300.0, metadata=_env("JWKS_CACHE_TTL_S"))
    """How long a verifier trusts its cached JWKS before refetching (stale keys stay usable
    while the auth service is unreachable)."""

    jwks_max_stale_s: float = field(default=900.0, metadata=_env("JWKS_MAX_STALE_S"))
    """How long past ``JWKS_CACHE_TTL_S`` cached signing keys still verify while the JWKS
    cannot be fetched (auth down); then requests answer 503 instead of trusting keys that may
    have been retired meanwhile."""

    jwks_refetch_min_interval_s: float = field(
        default=5.0, metadata=_env("JWKS_REFETCH_MIN_INTERVAL_S")
    )
    """Shortest interval between two JWKS fetches triggered by unknown ``kid`` values."""

    signing_key_cache_s: float = field(default=10.0, metadata=_env("SIGNING_KEY_CACHE_S"))
    """How long the auth service keeps its signing keys in memory before re-reading authdb."""

    signing_key_kek: str = field(default="", metadata=_env("SIGNING_KEY_KEK"), repr=False)
    """Key-encryption key of the private signing keys in authdb (at least 32 characters, e.g.
    ``openssl rand -base64 32``); the auth API refuses to start without it (exit 3). Keep it
    outside the database; ``amsctl keys rewrap`` moves the keys to a new one."""

    signing_key_kek_file: str = field(default="", metadata=_env("SIGNING_KEY_KEK_FILE"))
    """A file holding ``SIGNING_KEY_KEK`` (a mounted secret); used when that is empty."""

    def __post_init__(self) -> None:
        if not 0 < self.access_token_ttl_s <= 900:
            raise ValueError("ACCESS_TOKEN_TTL_S must be between 1 and 900 seconds")
        if not 0 <= self.refresh_reuse_grace_s <= 60:
            raise ValueError("REFRESH_REUSE_GRACE_S must be between 0 and 60 seconds")

    def signing_kek(self) -> str:
        """The key-encryption key, from ``SIGNING_KEY_KEK`` or ``SIGNING_KEY_KEK_FILE``
        (empty when neither is set)."""
        return secret_value(self.signing_key_kek, self.signing_key_kek_file, "SIGNING_KEY_KEK")


@dataclass(frozen=True, kw_only=True)
class PasswordSettings:
    """argon2id password hashing."""

    time_cost: int = field(default=2, metadata=_env("ARGON2_TIME_COST"))
    """argon2id iterations (OWASP minimum: 2 with 19 MiB)."""

    memory_kib: int = field(default=19456, metadata=_env("ARGON2_MEMORY_KIB"))
    """argon2id memory in KiB (OWASP minimum: 19456 = 19 MiB)."""

    parallelism: int = field(default=1, metadata=_env("ARGON2_PARALLELISM"))
    """argon2id lanes."""

    allow_weak: bool = field(default=False, metadata=_env("ARGON2_ALLOW_WEAK"))
    """Accept argon2id parameters below the OWASP minimum (tests only: every process
    refuses to start with weaker ones otherwise)."""

    max_pending_hashes: int = field(
        default=8, metadata=_env("ARGON2_MAX_PENDING_HASHES")
    )
    """New password hashes (sign-ups) waiting at once before 429; they have a thread of their
    own, so a flood of sign-ups never takes the threads that check logins."""

    def __post_init__(self) -> None:
        if not self.allow_weak and not argon2_meets_owasp(
            self.memory_kib, self.time_cost, self.parallelism
        ):
            raise ValueError(
                f"ARGON2_MEMORY_KIB={self.memory_kib} with ARGON2_TIME_COST="
                f"{self.time_cost} is below the OWASP minimum for argon2id (19456 KiB "
                "with 2 iterations, or an equivalent pair such as 47104 with 1, 12288 with 3)"
            )


@dataclass(frozen=True, kw_only=True)
class LoginSettings:
    """Rate limits of sign-up and login (per client address and per account)."""

    window_s: int = field(default=300, metadata=_env("LOGIN_WINDOW_S"))
    """Window of the login rate limits; counters expire with it (no permanent lock-out)."""

    register_max_per_client: int = field(default=20, metadata=_env("REGISTER_MAX_PER_CLIENT"))
    """Sign-ups from one client address per ``LOGIN_WINDOW_S`` before 429."""

    max_failures_per_account: int = field(
        default=10, metadata=_env("LOGIN_MAX_FAILURES_PER_ACCOUNT")
    )
    """Failed logins of one account from one client (its device token, else its address)
    before each further attempt from that client waits a growing delay (``LOGIN_DELAY_*``;
    a success resets it): an attacker elsewhere cannot make the owner wait."""

    max_failures_per_account_all: int = field(
        default=100, metadata=_env("LOGIN_MAX_FAILURES_PER_ACCOUNT_ALL")
    )
    """Failed logins of one account from all addresses together per window before 429 (the
    ceiling against a guessing attack spread over many addresses)."""

    max_attempts_per_client: int = field(
        default=100, metadata=_env("LOGIN_MAX_ATTEMPTS_PER_CLIENT")
    )
    """Login attempts of one client address per window before 429."""

    delay_base_s: float = field(default=1.0, metadata=_env("LOGIN_DELAY_BASE_S"))
    """The wait after ``LOGIN_MAX_FAILURES_PER_ACCOUNT`` failed logins of one account from one
    client; each further attempt doubles it (429 with ``Retry-After`` meanwhile)."""

    delay_max_s: float = field(default=900.0, metadata=_env("LOGIN_DELAY_MAX_S"))
    """The longest wait between two login attempts of one client on one account."""

    delay_memory_s: int = field(default=86400, metadata=_env("LOGIN_DELAY_MEMORY_S"))
    """How long a client's failed logins on an account are remembered after its last attempt
    (a success forgets them at once). Long, so that waiting to be forgotten never beats the
    delays."""

    device_ttl_s: int = field(default=90 * 86400, metadata=_env("LOGIN_DEVICE_TTL_S"))
    """Lifetime of a device token after its last successful login (the portal keeps it in a
    cookie): proof that a client has signed in to that account before, which keeps it apart
    from anyone else's failed logins (docs/security.md)."""


@dataclass(frozen=True, kw_only=True)
class ProfileSettings:
    """The users API's profile cache."""

    cache_ttl_s: int = field(default=60, metadata=_env("PROFILE_CACHE_TTL_S"))
    """Lifetime of a cached profile in Redis (updates invalidate it at once)."""

    retry_after_s: int = field(default=1, metadata=_env("PROFILE_RETRY_AFTER_S"))
    """``Retry-After`` of the 404 for a profile the worker has not created yet."""


@dataclass(frozen=True, kw_only=True)
class SagaSettings:
    """The account-deletion saga."""

    step_timeout_s: float = field(default=30.0, metadata=_env("SAGA_STEP_TIMEOUT_S"))
    """How long a deletion-saga participant may take to answer a command (profile.delete,
    documents.delete) before the step counts as failed and compensation starts. The
    command carries this deadline too, so a participant refuses it once it has passed."""

    compensation_timeout_s: float = field(
        default=300.0, metadata=_env("SAGA_COMPENSATION_TIMEOUT_S")
    )
    """How long a compensation (profile.restore) may take, including the runtime's retries
    (``WORKER_RETRY_DELAYS``), before the saga ends in ``compensation_failed``. Keep it
    longer than the sum of the retry delays, so a dead letter exists by then."""

    sweep_interval_s: float = field(default=1.0, metadata=_env("SAGA_SWEEP_INTERVAL_S"))
    """How often the saga worker looks for overdue steps (several copies share the work:
    ``SELECT ... FOR UPDATE SKIP LOCKED``)."""

    watch_ttl_s: int = field(default=3600, metadata=_env("SAGA_WATCH_TTL_S"))
    """Lifetime of the ``watch_token`` a deletion request returns: it lets the requester follow
    the saga (``GET /auth/sagas/{id}/watch``) after their own tokens were revoked."""


@dataclass(frozen=True, kw_only=True)
class OperatorSettings:
    """Operator tools: ``amsctl`` and the console's dead-letter pages."""

    audit_log: str = field(
        default="~/.local/state/amsctl/audit.jsonl", metadata=_env("AMSCTL_AUDIT_LOG")
    )
    """Append-only JSON-lines audit log of every ``amsctl dlq replay`` and ``purge``."""

    dlq_replay_window: int = field(default=100, metadata=_env("DLQ_REPLAY_WINDOW"))
    """Dead letters published per confirm window by ``amsctl dlq replay``; each is removed
    from its dead-letter queue only after its own publisher confirm."""

    dlq_read_limit: int = field(default=10_000, metadata=_env("DLQ_READ_LIMIT"))
    """Most messages ``amsctl dlq list``/``show`` read from one dead-letter queue."""


@dataclass(frozen=True, kw_only=True)
class FrontendSettings:
    """The portal and the console (backends-for-frontends)."""

    portal_port: int = field(default=3002, metadata=_env("PORTAL_PORT"))
    """Port of the user portal (``python -m frontends.portal``)."""

    console_port: int = field(default=3003, metadata=_env("CONSOLE_PORT"))
    """Port of the admin console (``python -m frontends.console``)."""

    auth_api_url: str = field(default="http://127.0.0.1:8002", metadata=_env("AUTH_API_URL"))
    """Base URL of the auth API as the frontends call it."""

    users_api_url: str = field(default="http://127.0.0.1:8001", metadata=_env("USERS_API_URL"))
    """Base URL of the users API as the frontends call it."""

    admin_api_url: str = field(default="http://127.0.0.1:8003", metadata=_env("ADMIN_API_URL"))
    """Base URL of the admin API as the frontends call it."""

    api_timeout_s: float = field(default=10.0, metadata=_env("FRONTEND_API_TIMEOUT_S"))
    """How long a frontend waits for an API answer before it shows the API as unavailable."""

    session_ttl_s: int = field(default=28800, metadata=_env("SESSION_TTL_S"))
    """Idle lifetime of a frontend session in Redis (each page a person opens extends it; the
    refresh token's own lifetime still bounds it). Anonymous sessions (a sign-in form's CSRF token)
    live at most an hour."""

    session_cookie_secure: bool = field(default=False, metadata=_env("SESSION_COOKIE_SECURE"))
    """Always mark the session cookie ``Secure`` (set it when TLS ends at a proxy in front of
    the frontends); a request that arrives over https gets a ``Secure`` cookie anyway."""

    console_metrics_targets: str = field(
        default=(
            "relay=http://127.0.0.1:9101/metrics,profiles=http://127.0.0.1:9102/metrics,"
            "ocr=http://127.0.0.1:9103/metrics,documents=http://127.0.0.1:9104/metrics,"
            "saga=http://127.0.0.1:9105/metrics"
        ),
        metadata=_env("CONSOLE_METRICS_TARGETS"),
    )
    """``name=url`` pairs (comma-separated) of the Prometheus endpoints the console scrapes for
    its last-hour charts (the relay and the workers, as in the Procfile)."""

    console_scrape_interval_s: float = field(
        default=10.0, metadata=_env("CONSOLE_SCRAPE_INTERVAL_S")
    )
    """How often the console scrapes those endpoints; it keeps one hour of samples in memory."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Process configuration: one frozen group per concern (see the module docstring)."""

    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    uploads: UploadSettings = field(default_factory=UploadSettings)
    ocr: OcrSettings = field(default_factory=OcrSettings)
    tokens: TokenSettings = field(default_factory=TokenSettings)
    passwords: PasswordSettings = field(default_factory=PasswordSettings)
    login: LoginSettings = field(default_factory=LoginSettings)
    profiles: ProfileSettings = field(default_factory=ProfileSettings)
    saga: SagaSettings = field(default_factory=SagaSettings)
    operator: OperatorSettings = field(default_factory=OperatorSettings)
    frontends: FrontendSettings = field(default_factory=FrontendSettings)

    def __post_init__(self) -> None:
        # Every service URL (database, Redis, each RabbitMQ node) trusts TLS_CA_FILE unless it
        # names its own CA; a URL that would not verify is refused here.
        for name, group in self.groups().items():
            links = {f.name: self._with_ca(f, getattr(group, f.name)) for f in _links(group)}
            if links:
                object.__setattr__(self, name, dataclasses.replace(group, **links))

    def _with_ca(self, f: Field[Any], url: str) -> str:
        # RABBITMQ_URL lists nodes; a PostgreSQL URL may list hosts but has one query.
        parts = [p.strip() for p in url.split(",")] if f.metadata["link"] == "nodes" else [url]
        return ",".join(with_default_ca(f.metadata["env"], p, self.tls.ca_file) for p in parts)

    def groups(self) -> dict[str, Any]:
        """The groups by attribute name, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def replace(self, **overrides: Any) -> Settings:
        """A copy with flat ``overrides`` (keyed as in :data:`OVERRIDES`), validated again."""
        changes: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            if key not in OVERRIDES:
                raise TypeError(f"unknown setting {key!r} (keys are variable names in lower case)")
            group, name = OVERRIDES[key]
            changes.setdefault(group, {})[name] = value
        groups = {g: dataclasses.replace(getattr(self, g), **c) for g, c in changes.items()}
        return dataclasses.replace(self, **groups)

    def environment(self) -> dict[str, str]:
        """The variables that make :meth:`from_env` build these settings again."""
        return {
            f.metadata["env"]: str(getattr(getattr(self, group), f.name))
            for group, f in self.variables()
        }

    @classmethod
    def build(cls, **overrides: Any) -> Settings:
        """The defaults with flat ``overrides``; the environment is not read."""
        return cls().replace(**overrides)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from ``environ`` (default: the process environment), then apply the
        flat ``overrides``."""
        environ = os.environ if environ is None else environ
        hints = {group: get_type_hints(kind) for group, kind in GROUPS.items()}
        values: dict[str, Any] = {}
        for group, f in cls.variables():
            name = f.metadata["env"]
            if name in environ:
                values[name.lower()] = _coerce(name, environ[name], hints[group][f.name])
        values.update(overrides)
        return cls.build(**values)

    @classmethod
    def variables(cls) -> list[tuple[str, Field[Any]]]:
        """(group, field) of every setting, in declaration order; ``field.metadata["env"]``
        names its variable."""
        return [(group, f) for group, kind in GROUPS.items() for f in fields(kind)]

    @classmethod
    def documented(cls) -> dict[str, list[tuple[str, str, str]]]:
        """Per group: (variable, default, description) of every field, for the README table."""
        table: dict[str, list[tuple[str, str, str]]] = {}
        for group, kind in GROUPS.items():
            docs = _field_docs(kind)
            table[group] = [
                (f.metadata["env"], repr(f.default), docs.get(f.name, "")) for f in fields(kind)
            ]
        return table


def _links(group: Any) -> list[Field[Any]]:
    return [f for f in fields(group) if "link" in f.metadata]


GROUPS: dict[str, type] = {f.name: get_type_hints(Settings)[f.name] for f in fields(Settings)}
"""Each group's class by its attribute name on :class:`Settings`."""

OVERRIDES: dict[str, tuple[str, str]] = {
    f.metadata["env"].lower(): (group, f.name) for group, f in Settings.variables()
}
"""Override key (the variable's name in lower case) -> (group, field): ``relay_batch_size``
-> ``("relay", "batch_size")``."""


EXIT_CONFIGURATION = 2
"""Exit status of a process whose settings cannot work (one line on stderr, no traceback)."""


def settings_or_exit(process: str) -> Settings:
    """:meth:`Settings.from_env` for an entry point: a malformed variable, a CA bundle that
    is not there or a TLS URL that would not verify ends ``process`` with one line, exit 2."""
    try:
        return Settings.from_env()
    except ValueError as exc:
        refuse(process, exc)


def refuse(process: str, exc: Exception) -> NoReturn:
    """End ``process`` on a configuration error (see :func:`settings_or_exit`)."""
    sys.stderr.write(f"{process}: configuration error: {exc}\n")
    raise SystemExit(EXIT_CONFIGURATION) from None


OWASP_ARGON2ID = ((47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5))
"""(memory KiB, iterations) pairs of the OWASP Password Storage Cheat Sheet, lanes >= 1."""


def argon2_meets_owasp(memory_kib: int, time_cost: int, parallelism: int) -> bool:
    return parallelism >= 1 and any(
        memory_kib >= m and time_cost >= t for m, t in OWASP_ARGON2ID
    )


def secret_value(value: str, path: str, name: str) -> str:
    """``value``, or the contents of the file ``path`` (``NAME_FILE``, a mounted secret)
    without its trailing newline when ``value`` is empty."""
    if value or not path:
        return value
    try:
        with open(path, encoding="utf-8") as secret:
            return secret.read().rstrip("\r\n")
    except OSError as exc:
        raise ValueError(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from None


def _coerce(name: str, raw: str, kind: Any) -> Any:
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is bool:
            return raw.strip().lower() in {"1", "true", "yes", "on"}
    except ValueError:
        raise ValueError(
            f"environment variable {name}={raw!r} is not a valid {kind.__name__}"
        ) from None
    return raw


def _field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal right after each field)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for prev, node in itertools.pairwise(body):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
        ):
            docs[prev.target.id] = str(node.value.value)
    return docs
