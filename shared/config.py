"""Typed settings, built once per process from environment variables.

Every field has a localhost default so that a fresh checkout runs against the local
PostgreSQL, Redis and RabbitMQ without any configuration. Entry points call
:meth:`Settings.from_env` once and pass the object down; nothing reads the
environment at import time.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import os
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NoReturn, get_type_hints

from shared.db_url import url_password, with_password
from shared.messaging import AGGREGATE_SLOTS
from shared.tls import with_default_ca

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

    audit_database_url: str = field(default="", metadata=_env("AUDIT_DATABASE_URL"))
    """Where the admin API (and console) append operator actions (authdb's ``operator_audit``);
    empty: ``AUTH_DATABASE_URL``. With least-privilege roles, a role that may only insert into
    and read that table."""

    rabbitmq_url: str = field(
        default="amqp://guest:guest@127.0.0.1:5672/", metadata=_env("RABBITMQ_URL")
    )
    """AMQP URL; the vhost is the path (``/`` is the default vhost). A cluster: the nodes'
    URLs separated by commas; clients connect to the first that answers and fail over to
    the next one when their node goes away."""

    rabbitmq_management_url: str = field(
        default="http://guest:guest@127.0.0.1:15672/", metadata=_env("RABBITMQ_MANAGEMENT_URL")
    )
    """Management HTTP API, used for policies and vhost administration; several nodes'
    URLs separated by commas are tried in order."""

    redis_url: str = field(default="redis://127.0.0.1:6379/0", metadata=_env("REDIS_URL"))
    """Redis for sessions, the token denylist, rate limits and caches."""

    tls_ca_file: str = field(default="", metadata=_env("TLS_CA_FILE"))
    """PEM bundle of the certificate authorities every TLS link trusts unless its URL names its
    own: PostgreSQL URLs with ``sslmode=verify-full`` (or ``verify-ca``; own: ``sslrootcert=``),
    ``rediss://`` (own: ``ssl_ca_certs=``), ``amqps://`` (own: ``cafile=``) and an https
    ``AUTH_JWKS_URL``. Empty: the system's trust store. Certificates are always verified, and
    host names too (but with ``verify-ca``); docs/deployment.md, "TLS"."""

    http_tls_cert_file: str = field(default="", metadata=_env("HTTP_TLS_CERT_FILE"))
    """PEM certificate (chain) an API serves https with, beside ``HTTP_TLS_KEY_FILE``; empty:
    plain http. The auth API needs it whenever the other APIs fetch its JWKS from another host."""

    http_tls_key_file: str = field(default="", metadata=_env("HTTP_TLS_KEY_FILE"))
    """PEM private key of ``HTTP_TLS_CERT_FILE``."""

    log_level: str = field(default="INFO", metadata=_env("LOG_LEVEL"))
    """Minimum log level (DEBUG, INFO, WARNING, ERROR)."""

    log_format: str = field(default="json", metadata=_env("LOG_FORMAT"))
    """``json`` (one object per line) or ``console`` (coloured, for people)."""

    tracing_enabled: bool = field(default=False, metadata=_env("TRACING_ENABLED"))
    """Record OpenTelemetry spans and export them as the standard ``OTEL_*`` variables say
    (``OTEL_TRACES_EXPORTER`` otlp|console|none, ``OTEL_EXPORTER_OTLP_ENDPOINT`` …). Off, a
    caller's ``traceparent`` is still passed on to every event (docs/running.md, "traces")."""

    db_pool_size: int = field(default=10, metadata=_env("DB_POOL_SIZE"))
    """Connections per database pool in each process."""

    relay_batch_size: int = field(default=2000, metadata=_env("RELAY_BATCH_SIZE"))
    """Outbox rows claimed per relay round trip."""

    relay_max_batches_in_flight: int = field(
        default=2, metadata=_env("RELAY_MAX_BATCHES_IN_FLIGHT")
    )
    """Batches' worth of rows (``RELAY_BATCH_SIZE`` each) published but not yet confirmed:
    overlaps database work with publishing, and lets small batches go out at once instead of
    waiting for the confirms of the ones before them."""

    relay_poll_min_s: float = field(default=0.01, metadata=_env("RELAY_POLL_MIN_S"))
    """Shortest polling interval right after activity, doubling while idle (LISTEN/NOTIFY
    wakes it sooner; a transaction that committed while another one held the notifier lock
    is found by this poll at the latest)."""

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

    relay_vacuum_every: int = field(default=20_000, metadata=_env("RELAY_VACUUM_EVERY"))
    """Deleted rows after which the relay owning partition 0 vacuums the outbox (0: never).
    Dead rows at the head of the id index slow every claim; autovacuum naps for a minute."""

    # --- admin API and OCR worker ---------------------------------------------------------
    upload_max_bytes: int = field(default=20 * 1024 * 1024, metadata=_env("UPLOAD_MAX_BYTES"))
    """Largest accepted upload; bigger bodies are refused with 413 before being buffered."""

    upload_max_pixels: int = field(default=50_000_000, metadata=_env("UPLOAD_MAX_PIXELS"))
    """Largest image (width x height, per page) accepted; guards against decompression bombs."""

    pdf_max_pages: int = field(default=50, metadata=_env("PDF_MAX_PAGES"))
    """Most pages an upload (PDF, multi-page TIFF, animated PNG) may have."""

    request_body_timeout_s: float = field(default=120.0, metadata=_env("REQUEST_BODY_TIMEOUT_S"))
    """A request's body must have arrived this long after the request began, or the API
    answers 408 (a client trickling an upload cannot hold a connection for ever)."""

    upload_max_per_minute: int = field(default=120, metadata=_env("UPLOAD_MAX_PER_MINUTE"))
    """Uploads one user may start per minute; more answer 429 with ``Retry-After``."""

    upload_quota_documents: int = field(default=1000, metadata=_env("UPLOAD_QUOTA_DOCUMENTS"))
    """Most documents one user may keep; an upload past it answers 413 (quota_exceeded)."""

    upload_quota_bytes: int = field(default=1024**3, metadata=_env("UPLOAD_QUOTA_BYTES"))
    """Most bytes of documents one user may keep (default 1 GiB); past it 413."""

    upload_inspect_threads: int = field(default=2, metadata=_env("UPLOAD_INSPECT_THREADS"))
    """Threads of the admin API that check uploads off its event loop; more uploads queue."""

    ocr_engine: str = field(default="tesseract", metadata=_env("OCR_ENGINE"))
    """OCR engine of the worker: ``tesseract`` (default) or ``easyocr`` (needs the ocr extra)."""

    ocr_model_dir: str = field(default="/var/lib/ams/easyocr", metadata=_env("OCR_MODEL_DIR"))
    """Directory holding the easyocr model files (``craft_mlt_25k.pth``, ``english_g2.pth``…)."""

    ocr_allow_downloads: bool = field(default=False, metadata=_env("OCR_ALLOW_DOWNLOADS"))
    """Let easyocr download missing model files; off so a worker never hangs on the network."""

    ocr_verify_checksums: bool = field(default=True, metadata=_env("OCR_VERIFY_CHECKSUMS"))
    """Check easyocr model files against easyocr's published MD5 sums; turn off for own weights."""

    ocr_gpu: bool = field(default=False, metadata=_env("OCR_GPU"))
    """Run easyocr on the GPU (CUDA) instead of the CPU."""

    ocr_languages: str = field(default="en", metadata=_env("OCR_LANGUAGES"))
    """Comma-separated easyocr language codes (tesseract maps ``en`` to ``eng``)."""

    ocr_timeout_s: float = field(default=120.0, metadata=_env("OCR_TIMEOUT_S"))
    """Longest OCR run of one document; a job that takes longer fails with a reason."""

    ocr_workers: int = field(default=1, metadata=_env("OCR_WORKERS"))
    """OCR processes in the worker's pool (each loads the model once), = concurrent jobs."""

    ocr_memory_limit_mb: int = field(default=3072, metadata=_env("OCR_MEMORY_LIMIT_MB"))
    """Memory one OCR process (with the tesseract it runs) may map (``RLIMIT_DATA``); a
    document that needs more fails for good (after one retry) with that reason. 0: no limit.
    The default leaves room for easyocr (torch reserves far more than it touches); with
    OCR_ENGINE=tesseract 512 is plenty. OCR_WORKERS x this bounds what OCR can take."""

    ocr_pdf_dpi: int = field(default=150, metadata=_env("OCR_PDF_DPI"))
    """Resolution PDF pages are rasterised at before OCR."""
    # --- HTTP APIs -------------------------------------------------------------------------
    users_port: int = field(default=8001, metadata=_env("USERS_PORT"))
    """Port of the users API (``python -m apps.users``)."""

    auth_port: int = field(default=8002, metadata=_env("AUTH_PORT"))
    """Port of the auth service (``python -m apps.auth``)."""

    admin_port: int = field(default=8003, metadata=_env("ADMIN_PORT"))
    """Port of the admin API (``python -m apps.admin``)."""

    http_host: str = field(default="127.0.0.1", metadata=_env("HTTP_HOST"))
    """Interface the APIs listen on (``0.0.0.0`` in containers)."""

    request_max_body_bytes: int = field(
        default=64 * 1024, metadata=_env("REQUEST_MAX_BODY_BYTES")
    )
    """Largest JSON request body an API accepts (413 above); uploads set their own limit."""

    redis_key_prefix: str = field(default="ams:", metadata=_env("REDIS_KEY_PREFIX"))
    """Prefix of every Redis key (sessions, denylist, rate limits, caches)."""

    # --- tokens ----------------------------------------------------------------------------
    auth_jwks_url: str = field(
        default="http://127.0.0.1:8002/.well-known/jwks.json", metadata=_env("AUTH_JWKS_URL")
    )
    """Where the APIs fetch the auth service's public signing keys."""

    auth_issuer: str = field(default="ams-auth", metadata=_env("AUTH_ISSUER"))
    """``iss`` of every token; verifiers refuse any other."""

    auth_audience: str = field(default="ams-api", metadata=_env("AUTH_AUDIENCE"))
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

    # --- passwords ---------------------------------------------------------------------------
    argon2_time_cost: int = field(default=2, metadata=_env("ARGON2_TIME_COST"))
    """argon2id iterations (OWASP minimum: 2 with 19 MiB)."""

    argon2_memory_kib: int = field(default=19456, metadata=_env("ARGON2_MEMORY_KIB"))
    """argon2id memory in KiB (OWASP minimum: 19456 = 19 MiB)."""

    argon2_parallelism: int = field(default=1, metadata=_env("ARGON2_PARALLELISM"))
    """argon2id lanes."""

    argon2_allow_weak: bool = field(default=False, metadata=_env("ARGON2_ALLOW_WEAK"))
    """Accept argon2id parameters below the OWASP minimum (tests only: every process
    refuses to start with weaker ones otherwise)."""

    # --- login rate limits -------------------------------------------------------------------
    trusted_proxies: str = field(default="127.0.0.1,::1", metadata=_env("TRUSTED_PROXIES"))
    """Comma-separated addresses (or CIDRs) of the reverse proxies and frontends whose
    ``X-Forwarded-For`` the APIs believe for the client address (rate limits, logs); from
    any other peer the header is ignored. The default trusts this host (the portal and
    console of ``make run``); empty: believe no one, the TCP peer is the client."""

    login_window_s: int = field(default=300, metadata=_env("LOGIN_WINDOW_S"))
    """Window of the login rate limits; counters expire with it (no permanent lock-out)."""

    register_max_per_client: int = field(default=20, metadata=_env("REGISTER_MAX_PER_CLIENT"))
    """Sign-ups from one client address per ``LOGIN_WINDOW_S`` before 429."""

    argon2_max_pending_hashes: int = field(
        default=8, metadata=_env("ARGON2_MAX_PENDING_HASHES")
    )
    """New password hashes (sign-ups) waiting at once before 429; they have a thread of their
    own, so a flood of sign-ups never takes the threads that check logins."""

    login_max_failures_per_account: int = field(
        default=10, metadata=_env("LOGIN_MAX_FAILURES_PER_ACCOUNT")
    )
    """Failed logins of one account from one client (its device token, else its address)
    before each further attempt from that client waits a growing delay (``LOGIN_DELAY_*``;
    a success resets it): an attacker elsewhere cannot make the owner wait."""

    login_max_failures_per_account_all: int = field(
        default=100, metadata=_env("LOGIN_MAX_FAILURES_PER_ACCOUNT_ALL")
    )
    """Failed logins of one account from all addresses together per window before 429 (the
    ceiling against a guessing attack spread over many addresses)."""

    login_max_attempts_per_client: int = field(
        default=100, metadata=_env("LOGIN_MAX_ATTEMPTS_PER_CLIENT")
    )
    """Login attempts of one client address per window before 429."""

    # --- users API ------------------------------------------------------------------------------
    profile_cache_ttl_s: int = field(default=60, metadata=_env("PROFILE_CACHE_TTL_S"))
    """Lifetime of a cached profile in Redis (updates invalidate it at once)."""

    profile_retry_after_s: int = field(default=1, metadata=_env("PROFILE_RETRY_AFTER_S"))
    """``Retry-After`` of the 404 for a profile the worker has not created yet."""

    worker_max_message_bytes: int = field(
        default=1024 * 1024, metadata=_env("WORKER_MAX_MESSAGE_BYTES")
    )
    """Largest message body a consumer decodes; a larger one is dead-lettered with the reason
    (events are small: this bounds what one forged message can cost a worker)."""

    worker_prefetch: int = field(default=128, metadata=_env("WORKER_PREFETCH"))
    """Unacknowledged messages per consumer; also the most handlers running in parallel.
    The OCR consumer takes ``2 x OCR_WORKERS`` instead: its jobs are slow."""

    worker_max_attempts: int = field(default=5, metadata=_env("WORKER_MAX_ATTEMPTS"))
    """Handling attempts of a message that fails transiently before it is dead-lettered."""

    worker_retry_delays: str = field(default="1s,5s,30s,2m", metadata=_env("WORKER_RETRY_DELAYS"))
    """Delays before retry 1, 2, 3 … (``ms``/``s``/``m``/``h``); the last one repeats.
    Each delay is a TTL queue ``<consumer>.retry.<delay>``."""

    worker_partitions: int = field(default=1, metadata=_env("WORKER_PARTITIONS"))
    """Processes per consumer (OCR excepted), each owning a share of the aggregates: a
    headers exchange routes every aggregate to one partition queue, so order per
    aggregate holds across processes. ``python -m workers NAME`` then starts one process
    per partition. Change it only with the consumer's queues empty (docs/operations.md)."""

    worker_batch_max: int = field(default=64, metadata=_env("WORKER_BATCH_MAX"))
    """Most messages (of different aggregates) applied in one transaction under load."""

    worker_metrics_port: int = field(default=9102, metadata=_env("WORKER_METRICS_PORT"))
    """Prometheus endpoint of a worker process (0 disables it)."""

    worker_shutdown_timeout_s: float = field(
        default=30.0, metadata=_env("WORKER_SHUTDOWN_TIMEOUT_S")
    )
    """On SIGTERM, how long in-flight messages may take to finish before the worker exits."""

    worker_blocking_threads: int = field(default=4, metadata=_env("WORKER_BLOCKING_THREADS"))
    """Threads for blocking or CPU-heavy handler work (``MessageContext.run_blocking``)."""

    saga_step_timeout_s: float = field(default=30.0, metadata=_env("SAGA_STEP_TIMEOUT_S"))
    """How long a deletion-saga participant may take to answer a command (profile.delete,
    documents.delete) before the step counts as failed and compensation starts. The
    command carries this deadline too, so a participant refuses it once it has passed."""

    saga_compensation_timeout_s: float = field(
        default=300.0, metadata=_env("SAGA_COMPENSATION_TIMEOUT_S")
    )
    """How long a compensation (profile.restore) may take, including the runtime's retries
    (``WORKER_RETRY_DELAYS``), before the saga ends in ``compensation_failed``. Keep it
    longer than the sum of the retry delays, so a dead letter exists by then."""

    saga_sweep_interval_s: float = field(default=1.0, metadata=_env("SAGA_SWEEP_INTERVAL_S"))
    """How often the saga worker looks for overdue steps (several copies share the work:
    ``SELECT ... FOR UPDATE SKIP LOCKED``)."""

    amsctl_audit_log: str = field(
        default="~/.local/state/amsctl/audit.jsonl", metadata=_env("AMSCTL_AUDIT_LOG")
    )
    """Append-only JSON-lines audit log of every ``amsctl dlq replay`` and ``purge``."""

    dlq_replay_window: int = field(default=100, metadata=_env("DLQ_REPLAY_WINDOW"))
    """Dead letters published per confirm window by ``amsctl dlq replay``; each is removed
    from its dead-letter queue only after its own publisher confirm."""

    dlq_read_limit: int = field(default=10_000, metadata=_env("DLQ_READ_LIMIT"))
    """Most messages ``amsctl dlq list``/``show`` read from one dead-letter queue."""

    saga_watch_ttl_s: int = field(default=3600, metadata=_env("SAGA_WATCH_TTL_S"))
    """Lifetime of the ``watch_token`` a deletion request returns: it lets the requester follow
    the saga (``GET /auth/sagas/{id}/watch``) after their own tokens were revoked."""

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

    frontend_api_timeout_s: float = field(default=10.0, metadata=_env("FRONTEND_API_TIMEOUT_S"))
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

    rabbitmq_operator_user: str = field(default="operator", metadata=_env("RABBITMQ_OPERATOR_USER"))
    """The broker user of ``amsctl dlq`` and the console (they connect with ``RABBITMQ_URL``:
    put this user's credentials there). ``amsctl topology apply`` gives it, in the vhost, no
    configure permission, write on the ``replay`` exchange only and read on ``*.dlq`` only
    (docs/operations.md); empty: leave users alone."""

    rabbitmq_operator_password: str = field(
        default="", metadata=_env("RABBITMQ_OPERATOR_PASSWORD"), repr=False
    )
    """Set: ``amsctl topology apply`` creates (or updates) the operator user with this password
    and the ``monitoring`` tag. Empty: the user must exist already (a broker's boot-time
    definitions); only its permissions are written."""

    rabbitmq_operator_password_file: str = field(
        default="", metadata=_env("RABBITMQ_OPERATOR_PASSWORD_FILE")
    )
    """A file holding ``RABBITMQ_OPERATOR_PASSWORD`` (a mounted secret); used when that is empty."""

    # --- database roles (least privilege; docs/deployment.md, "Database roles") ------------
    migrate_database_url: str = field(default="", metadata=_env("MIGRATE_DATABASE_URL"))
    """The administrator connection of ``amsctl db migrate`` (a superuser, or a role with
    CREATEDB and CREATEROLE), e.g. ``postgresql+asyncpg://postgres@127.0.0.1:5432/postgres``.
    Set, migrate creates the databases, a login role per service named by the user of
    ``AUTH_``/``USERS_``/``ADMIN_``/``AUDIT_DATABASE_URL`` (password from that URL or its
    ``*_PASSWORD_FILE``) and ``DATABASE_OWNER_ROLE``, and grants each service only DML on its
    own database. Empty: no roles are managed; migrate connects with the service URLs. Give it
    to migrate only: no running process needs it."""

    migrate_database_password_file: str = field(
        default="", metadata=_env("MIGRATE_DATABASE_PASSWORD_FILE")
    )
    """A file holding the password of ``MIGRATE_DATABASE_URL`` (a mounted secret), used when
    the URL carries none."""

    database_owner_role: str = field(default="ams_owner", metadata=_env("DATABASE_OWNER_ROLE"))
    """The role (NOLOGIN) that owns the three databases and every table in them; migrations
    run as it (``SET ROLE``), nothing else does."""

    auth_database_password_file: str = field(
        default="", metadata=_env("AUTH_DATABASE_PASSWORD_FILE")
    )
    """A file holding the password of ``AUTH_DATABASE_URL``'s user, used when the URL carries
    none (also read by migrate to set that role's password)."""

    users_database_password_file: str = field(
        default="", metadata=_env("USERS_DATABASE_PASSWORD_FILE")
    )
    """A file holding the password of ``USERS_DATABASE_URL``'s user (as above)."""

    admin_database_password_file: str = field(
        default="", metadata=_env("ADMIN_DATABASE_PASSWORD_FILE")
    )
    """A file holding the password of ``ADMIN_DATABASE_URL``'s user (as above)."""

    audit_database_password_file: str = field(
        default="", metadata=_env("AUDIT_DATABASE_PASSWORD_FILE")
    )
    """A file holding the password of ``AUDIT_DATABASE_URL``'s user (as above)."""

    login_delay_base_s: float = field(default=1.0, metadata=_env("LOGIN_DELAY_BASE_S"))
    """The wait after ``LOGIN_MAX_FAILURES_PER_ACCOUNT`` failed logins of one account from one
    client; each further attempt doubles it (429 with ``Retry-After`` meanwhile)."""

    login_delay_max_s: float = field(default=900.0, metadata=_env("LOGIN_DELAY_MAX_S"))
    """The longest wait between two login attempts of one client on one account."""

    login_delay_memory_s: int = field(default=86400, metadata=_env("LOGIN_DELAY_MEMORY_S"))
    """How long a client's failed logins on an account are remembered after its last attempt
    (a success forgets them at once). Long, so that waiting to be forgotten never beats the
    delays."""

    login_device_ttl_s: int = field(default=90 * 86400, metadata=_env("LOGIN_DEVICE_TTL_S"))
    """Lifetime of a device token after its last successful login (the portal keeps it in a
    cookie): proof that a client has signed in to that account before, which keeps it apart
    from anyone else's failed logins (docs/security.md)."""

    def __post_init__(self) -> None:
        if not 0 < self.access_token_ttl_s <= 900:
            raise ValueError("ACCESS_TOKEN_TTL_S must be between 1 and 900 seconds")
        if not self.argon2_allow_weak and not argon2_meets_owasp(
            self.argon2_memory_kib, self.argon2_time_cost, self.argon2_parallelism
        ):
            raise ValueError(
                f"ARGON2_MEMORY_KIB={self.argon2_memory_kib} with ARGON2_TIME_COST="
                f"{self.argon2_time_cost} is below the OWASP minimum for argon2id (19456 KiB "
                "with 2 iterations, or an equivalent pair such as 47104 with 1, 12288 with 3)"
            )
        _fold_database_passwords(self)
        for f in fields(self):
            if f.name.endswith(("database_url", "redis_url", "rabbitmq_url")):
                setting, url = f.metadata["env"], getattr(self, f.name)
                # RABBITMQ_URL lists nodes; a PostgreSQL URL may list hosts but has one query.
                parts = [p.strip() for p in url.split(",")] if f.name == "rabbitmq_url" else [url]
                parts = [with_default_ca(setting, p, self.tls_ca_file) for p in parts]
                object.__setattr__(self, f.name, ",".join(parts))
        if bool(self.http_tls_cert_file) != bool(self.http_tls_key_file):
            raise ValueError("HTTP_TLS_CERT_FILE and HTTP_TLS_KEY_FILE go together")
        if not 0 <= self.refresh_reuse_grace_s <= 60:
            raise ValueError("REFRESH_REUSE_GRACE_S must be between 0 and 60 seconds")
        if not 1 <= self.worker_partitions <= AGGREGATE_SLOTS:
            raise ValueError(f"WORKER_PARTITIONS must be between 1 and {AGGREGATE_SLOTS}")

    def signing_kek(self) -> str:
        """The key-encryption key, from ``SIGNING_KEY_KEK`` or ``SIGNING_KEY_KEK_FILE``
        (empty when neither is set)."""
        return secret_value(self.signing_key_kek, self.signing_key_kek_file, "SIGNING_KEY_KEK")

    def operator_password(self) -> str:
        """``RABBITMQ_OPERATOR_PASSWORD`` or the contents of ``RABBITMQ_OPERATOR_PASSWORD_FILE``."""
        return secret_value(
            self.rabbitmq_operator_password, self.rabbitmq_operator_password_file,
            "RABBITMQ_OPERATOR_PASSWORD",
        )

    @property
    def audit_url(self) -> str:
        """The database URL that holds the operator audit table."""
        return self.audit_database_url or self.auth_database_url

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


def _fold_database_passwords(settings: Settings) -> None:
    """Each ``*_DATABASE_URL`` gets the password of its ``*_DATABASE_PASSWORD_FILE``."""
    for f in fields(settings):
        path = getattr(settings, f.name.removesuffix("_url") + "_password_file", "")
        if not f.name.endswith("database_url") or not path:
            continue
        url, setting = getattr(settings, f.name), f.metadata["env"]
        # A password written in the URL wins, as a value wins over its file.
        password = secret_value(url_password(url), path, setting.removesuffix("_URL") + "_PASSWORD")
        object.__setattr__(settings, f.name, with_password(url, password, setting))


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
