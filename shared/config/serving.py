"""What the HTTP processes serve and how they are watched: listeners, uploads, the
frontends, logs, metrics and traces."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.config.fields import env


@dataclass(frozen=True, kw_only=True)
class HttpSettings:
    """How the HTTP APIs listen and whom they believe."""

    host: str = field(default="127.0.0.1", metadata=env("HTTP_HOST"))
    """Interface the APIs listen on (``0.0.0.0`` in containers)."""

    users_port: int = field(default=8001, metadata=env("USERS_PORT"))
    """Port of the users API (``python -m apps.users``)."""

    auth_port: int = field(default=8002, metadata=env("AUTH_PORT"))
    """Port of the auth service (``python -m apps.auth``)."""

    admin_port: int = field(default=8003, metadata=env("ADMIN_PORT"))
    """Port of the admin API (``python -m apps.admin``)."""

    tls_cert_file: str = field(default="", metadata=env("HTTP_TLS_CERT_FILE"))
    """PEM certificate (chain) an API serves https with, beside ``HTTP_TLS_KEY_FILE``; empty:
    plain http. The auth API needs it whenever the other APIs fetch its JWKS from another host."""

    tls_key_file: str = field(default="", metadata=env("HTTP_TLS_KEY_FILE"))
    """PEM private key of ``HTTP_TLS_CERT_FILE``."""

    trusted_proxies: str = field(default="127.0.0.1,::1", metadata=env("TRUSTED_PROXIES"))
    """Comma-separated addresses (or CIDRs) of the reverse proxies and frontends whose
    ``X-Forwarded-For`` the APIs believe for the client address (rate limits, logs); from
    any other peer the header is ignored. The default trusts this host (the portal and
    console of ``make run``); empty: believe no one, the TCP peer is the client."""

    request_max_body_bytes: int = field(
        default=64 * 1024, metadata=env("REQUEST_MAX_BODY_BYTES")
    )
    """Largest JSON request body an API accepts (413 above); uploads set their own limit."""

    request_body_timeout_s: float = field(default=120.0, metadata=env("REQUEST_BODY_TIMEOUT_S"))
    """A request's body must have arrived this long after the request began, or the API
    answers 408 (a client trickling an upload cannot hold a connection for ever)."""

    def __post_init__(self) -> None:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("HTTP_TLS_CERT_FILE and HTTP_TLS_KEY_FILE go together")


@dataclass(frozen=True, kw_only=True)
class ObservabilitySettings:
    """Logs and traces of every process."""

    log_level: str = field(default="INFO", metadata=env("LOG_LEVEL"))
    """Minimum log level (DEBUG, INFO, WARNING, ERROR)."""

    log_format: str = field(default="json", metadata=env("LOG_FORMAT"))
    """``json`` (one object per line) or ``console`` (coloured, for people)."""

    tracing_enabled: bool = field(default=False, metadata=env("TRACING_ENABLED"))
    """Record OpenTelemetry spans and export them as the standard ``OTEL_*`` variables say
    (``OTEL_TRACES_EXPORTER`` otlp|console|none, ``OTEL_EXPORTER_OTLP_ENDPOINT`` …). Off, a
    caller's ``traceparent`` is still passed on to every event (docs/running.md, "traces")."""

    @property
    def debug(self) -> bool:
        """``LOG_LEVEL`` is DEBUG: processes may log every event that passes."""
        return self.log_level.upper() == "DEBUG"


@dataclass(frozen=True, kw_only=True)
class UploadSettings:
    """What the admin API accepts as a document upload."""

    max_bytes: int = field(default=20 * 1024 * 1024, metadata=env("UPLOAD_MAX_BYTES"))
    """Largest accepted upload; bigger bodies are refused with 413 before being buffered."""

    max_pixels: int = field(default=50_000_000, metadata=env("UPLOAD_MAX_PIXELS"))
    """Largest image (width x height, per page) accepted; guards against decompression bombs."""

    max_pages: int = field(default=50, metadata=env("PDF_MAX_PAGES"))
    """Most pages an upload (PDF, multi-page TIFF, animated PNG) may have."""

    max_per_minute: int = field(default=120, metadata=env("UPLOAD_MAX_PER_MINUTE"))
    """Uploads one user may start per minute; more answer 429 with ``Retry-After``."""

    quota_documents: int = field(default=1000, metadata=env("UPLOAD_QUOTA_DOCUMENTS"))
    """Most documents one user may keep; an upload past it answers 413 (quota_exceeded)."""

    quota_bytes: int = field(default=1024**3, metadata=env("UPLOAD_QUOTA_BYTES"))
    """Most bytes of documents one user may keep (default 1 GiB); past it 413."""

    inspect_threads: int = field(default=2, metadata=env("UPLOAD_INSPECT_THREADS"))
    """Threads of the admin API that check uploads off its event loop; more uploads queue."""


@dataclass(frozen=True, kw_only=True)
class FrontendSettings:
    """The portal and the console (backends-for-frontends)."""

    portal_port: int = field(default=3002, metadata=env("PORTAL_PORT"))
    """Port of the user portal (``python -m frontends.portal``)."""

    console_port: int = field(default=3003, metadata=env("CONSOLE_PORT"))
    """Port of the admin console (``python -m frontends.console``)."""

    auth_api_url: str = field(default="http://127.0.0.1:8002", metadata=env("AUTH_API_URL"))
    """Base URL of the auth API as the frontends call it."""

    users_api_url: str = field(default="http://127.0.0.1:8001", metadata=env("USERS_API_URL"))
    """Base URL of the users API as the frontends call it."""

    admin_api_url: str = field(default="http://127.0.0.1:8003", metadata=env("ADMIN_API_URL"))
    """Base URL of the admin API as the frontends call it."""

    api_timeout_s: float = field(default=10.0, metadata=env("FRONTEND_API_TIMEOUT_S"))
    """How long a frontend waits for an API answer before it shows the API as unavailable."""

    session_ttl_s: int = field(default=28800, metadata=env("SESSION_TTL_S"))
    """Idle lifetime of a frontend session in Redis (each page a person opens extends it; the
    refresh token's own lifetime still bounds it). Anonymous sessions (a sign-in form's CSRF token)
    live at most an hour."""

    session_cookie_secure: bool = field(default=False, metadata=env("SESSION_COOKIE_SECURE"))
    """Always mark the session cookie ``Secure`` (set it when TLS ends at a proxy in front of
    the frontends); a request that arrives over https gets a ``Secure`` cookie anyway."""

    console_metrics_targets: str = field(
        default=(
            "relay=http://127.0.0.1:9101/metrics,profiles=http://127.0.0.1:9102/metrics,"
            "ocr=http://127.0.0.1:9103/metrics,documents=http://127.0.0.1:9104/metrics,"
            "saga=http://127.0.0.1:9105/metrics"
        ),
        metadata=env("CONSOLE_METRICS_TARGETS"),
    )
    """``name=url`` pairs (comma-separated) of the Prometheus endpoints the console scrapes for
    its last-hour charts (the relay and the workers, as in the Procfile)."""

    console_scrape_interval_s: float = field(
        default=10.0, metadata=env("CONSOLE_SCRAPE_INTERVAL_S")
    )
    """How often the console scrapes those endpoints; it keeps one hour of samples in memory."""
