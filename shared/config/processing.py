"""The background processes: the relay, the worker runtime, OCR, the profiles worker and
the deletion saga."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.config.fields import env
from shared.messaging import AGGREGATE_SLOTS


@dataclass(frozen=True, kw_only=True)
class RelaySettings:
    """The outbox relay (``python -m outbox``)."""

    batch_size: int = field(default=2000, metadata=env("RELAY_BATCH_SIZE"))
    """Outbox rows claimed per relay round trip."""

    max_batches_in_flight: int = field(
        default=2, metadata=env("RELAY_MAX_BATCHES_IN_FLIGHT")
    )
    """Batches' worth of rows (``RELAY_BATCH_SIZE`` each) published but not yet confirmed:
    overlaps database work with publishing, and lets small batches go out at once instead of
    waiting for the confirms of the ones before them."""

    poll_min_s: float = field(default=0.01, metadata=env("RELAY_POLL_MIN_S"))
    """Shortest polling interval right after activity, doubling while idle (LISTEN/NOTIFY
    wakes it sooner; a transaction that committed while another one held the notifier lock
    is found by this poll at the latest). Confirmed rows that no claim deleted are deleted
    after this interval."""

    poll_max_s: float = field(default=2.0, metadata=env("RELAY_POLL_MAX_S"))
    """Longest polling interval of an idle relay."""

    max_attempts: int = field(default=10, metadata=env("RELAY_MAX_ATTEMPTS"))
    """Failed publishes (nack, unroutable) of one event before it is parked."""

    backoff_base_s: float = field(default=0.5, metadata=env("RELAY_BACKOFF_BASE_S"))
    """First retry delay of a failed event; doubles per attempt."""

    backoff_max_s: float = field(default=300.0, metadata=env("RELAY_BACKOFF_MAX_S"))
    """Longest retry delay of a failed event."""

    rebalance_s: float = field(default=1.0, metadata=env("RELAY_REBALANCE_S"))
    """How often a relay re-checks its share of partitions when several copies run."""

    metrics_port: int = field(default=9101, metadata=env("RELAY_METRICS_PORT"))
    """Prometheus endpoint of the relay process (0 disables it)."""

    vacuum_every: int = field(default=20_000, metadata=env("RELAY_VACUUM_EVERY"))
    """Deleted rows after which the relay owning partition 0 vacuums the outbox (0: never).
    Dead rows at the head of the id index slow every claim; autovacuum naps for a minute."""


@dataclass(frozen=True, kw_only=True)
class WorkerSettings:
    """The consumer runtime every worker runs on."""

    max_message_bytes: int = field(
        default=1024 * 1024, metadata=env("WORKER_MAX_MESSAGE_BYTES")
    )
    """Largest message body a consumer decodes; a larger one is dead-lettered with the reason
    (events are small: this bounds what one forged message can cost a worker)."""

    prefetch: int = field(default=128, metadata=env("WORKER_PREFETCH"))
    """Unacknowledged messages per consumer; also the most handlers running in parallel.
    The OCR consumer takes ``2 x OCR_WORKERS`` instead: its jobs are slow."""

    max_attempts: int = field(default=5, metadata=env("WORKER_MAX_ATTEMPTS"))
    """Handling attempts of a message that fails transiently before it is dead-lettered."""

    retry_delays: str = field(default="1s,5s,30s,2m", metadata=env("WORKER_RETRY_DELAYS"))
    """Delays before retry 1, 2, 3 … (``ms``/``s``/``m``/``h``); the last one repeats.
    Each delay is a TTL queue ``<consumer>.retry.<delay>``."""

    partitions: int = field(default=1, metadata=env("WORKER_PARTITIONS"))
    """Processes per consumer (OCR excepted), each owning a share of the aggregates: a
    headers exchange routes every aggregate to one partition queue, so order per
    aggregate holds across processes. ``python -m workers NAME`` then starts one process
    per partition. Change it only with the consumer's queues empty (docs/operations.md)."""

    batch_max: int = field(default=64, metadata=env("WORKER_BATCH_MAX"))
    """Most messages (of different aggregates) applied in one transaction under load."""

    metrics_port: int = field(default=9102, metadata=env("WORKER_METRICS_PORT"))
    """Prometheus endpoint of a worker process (0 disables it)."""

    shutdown_timeout_s: float = field(
        default=30.0, metadata=env("WORKER_SHUTDOWN_TIMEOUT_S")
    )
    """On SIGTERM, how long in-flight messages may take to finish before the worker exits."""

    blocking_threads: int = field(default=4, metadata=env("WORKER_BLOCKING_THREADS"))
    """Threads for blocking or CPU-heavy handler work (``MessageContext.run_blocking``)."""

    trace_statements: bool = field(default=False, metadata=env("WORKER_TRACE_STATEMENTS"))
    """With ``TRACING_ENABLED``, workers also record a span per SQL statement (their
    handlers', the inbox's) and per connection checkout. Off, they record their consume and
    handle spans only: statement spans would cost a busy worker more than all its own spans
    together."""

    def __post_init__(self) -> None:
        if not 1 <= self.partitions <= AGGREGATE_SLOTS:
            raise ValueError(f"WORKER_PARTITIONS must be between 1 and {AGGREGATE_SLOTS}")


@dataclass(frozen=True, kw_only=True)
class OcrSettings:
    """The OCR worker's engine and its process pool."""

    engine: str = field(default="tesseract", metadata=env("OCR_ENGINE"))
    """OCR engine of the worker: ``tesseract`` (default) or ``easyocr`` (needs the ocr extra)."""

    model_dir: str = field(default="/var/lib/ams/easyocr", metadata=env("OCR_MODEL_DIR"))
    """Directory holding the easyocr model files (``craft_mlt_25k.pth``, ``english_g2.pth``…)."""

    allow_downloads: bool = field(default=False, metadata=env("OCR_ALLOW_DOWNLOADS"))
    """Let easyocr download missing model files; off so a worker never hangs on the network."""

    verify_checksums: bool = field(default=True, metadata=env("OCR_VERIFY_CHECKSUMS"))
    """Check easyocr model files against easyocr's published MD5 sums; turn off for own weights."""

    gpu: bool = field(default=False, metadata=env("OCR_GPU"))
    """Run easyocr on the GPU (CUDA) instead of the CPU."""

    languages: str = field(default="en", metadata=env("OCR_LANGUAGES"))
    """Comma-separated easyocr language codes (tesseract maps ``en`` to ``eng``)."""

    timeout_s: float = field(default=120.0, metadata=env("OCR_TIMEOUT_S"))
    """Longest OCR run of one document; a job that takes longer fails with a reason."""

    workers: int = field(default=1, metadata=env("OCR_WORKERS"))
    """OCR processes in the worker's pool (each loads the model once), = concurrent jobs."""

    memory_limit_mb: int = field(default=3072, metadata=env("OCR_MEMORY_LIMIT_MB"))
    """Memory one OCR process (with the tesseract it runs) may map (``RLIMIT_DATA``); a
    document that needs more fails for good (after one retry) with that reason. 0: no limit.
    The default leaves room for easyocr (torch reserves far more than it touches); with
    OCR_ENGINE=tesseract 512 is plenty. OCR_WORKERS x this bounds what OCR can take."""

    pdf_dpi: int = field(default=150, metadata=env("OCR_PDF_DPI"))
    """Resolution PDF pages are rasterised at before OCR."""


@dataclass(frozen=True, kw_only=True)
class ProfileSettings:
    """The users API's profile cache."""

    cache_ttl_s: int = field(default=60, metadata=env("PROFILE_CACHE_TTL_S"))
    """Lifetime of a cached profile in Redis (updates invalidate it at once)."""

    retry_after_s: int = field(default=1, metadata=env("PROFILE_RETRY_AFTER_S"))
    """``Retry-After`` of the 404 for a profile the worker has not created yet."""


@dataclass(frozen=True, kw_only=True)
class SagaSettings:
    """The account-deletion saga."""

    step_timeout_s: float = field(default=30.0, metadata=env("SAGA_STEP_TIMEOUT_S"))
    """How long a deletion-saga participant may take to answer a command (profile.delete,
    documents.delete) before the step counts as failed and compensation starts. The
    command carries this deadline too, so a participant refuses it once it has passed."""

    compensation_timeout_s: float = field(
        default=300.0, metadata=env("SAGA_COMPENSATION_TIMEOUT_S")
    )
    """How long a compensation (profile.restore) may take, including the runtime's retries
    (``WORKER_RETRY_DELAYS``), before the saga ends in ``compensation_failed``. Keep it
    longer than the sum of the retry delays, so a dead letter exists by then."""

    sweep_interval_s: float = field(default=1.0, metadata=env("SAGA_SWEEP_INTERVAL_S"))
    """How often the saga worker looks for overdue steps (several copies share the work:
    ``SELECT ... FOR UPDATE SKIP LOCKED``)."""

    watch_ttl_s: int = field(default=3600, metadata=env("SAGA_WATCH_TTL_S"))
    """Lifetime of the ``watch_token`` a deletion request returns: it lets the requester follow
    the saga (``GET /auth/sagas/{id}/watch``) after their own tokens were revoked."""
