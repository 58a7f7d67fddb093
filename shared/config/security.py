"""Who may do what: tokens and signing keys, password hashing, login limits, the operator."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.config.fields import env, secret_value


@dataclass(frozen=True, kw_only=True)
class TokenSettings:
    """Access and refresh tokens: issuing (auth) and verifying (every API)."""

    jwks_url: str = field(
        default="http://127.0.0.1:8002/.well-known/jwks.json", metadata=env("AUTH_JWKS_URL")
    )
    """Where the APIs fetch the auth service's public signing keys."""

    issuer: str = field(default="ams-auth", metadata=env("AUTH_ISSUER"))
    """``iss`` of every token; verifiers refuse any other."""

    audience: str = field(default="ams-api", metadata=env("AUTH_AUDIENCE"))
    """``aud`` of access tokens; verifiers refuse any other."""

    access_token_ttl_s: int = field(default=900, metadata=env("ACCESS_TOKEN_TTL_S"))
    """Lifetime of an access token (at most 900 s)."""

    refresh_token_ttl_s: int = field(default=14 * 86400, metadata=env("REFRESH_TOKEN_TTL_S"))
    """Absolute lifetime of a refresh-token family (rotation never extends it)."""

    refresh_reuse_grace_s: float = field(default=10.0, metadata=env("REFRESH_REUSE_GRACE_S"))
    """Reuse interval of a rotated refresh token (0 to 60 s; 0: none). A refresh token presented
    again within this many seconds of its rotation, while the token it was exchanged for is still
    unused, gets that same successor (and a fresh access token) instead of revoking its family:
    a client whose two requests refreshed at once stays signed in, and the family keeps one live
    refresh token. Any later reuse, or one after the successor was spent, revokes the family."""

    jwks_cache_ttl_s: float = field(default=300.0, metadata=env("JWKS_CACHE_TTL_S"))
    """How long a verifier trusts its cached JWKS before refetching (stale keys stay usable
    while the auth service is unreachable)."""

    jwks_max_stale_s: float = field(default=900.0, metadata=env("JWKS_MAX_STALE_S"))
    """How long past ``JWKS_CACHE_TTL_S`` cached signing keys still verify while the JWKS
    cannot be fetched (auth down); then requests answer 503 instead of trusting keys that may
    have been retired meanwhile."""

    jwks_refetch_min_interval_s: float = field(
        default=5.0, metadata=env("JWKS_REFETCH_MIN_INTERVAL_S")
    )
    """Shortest interval between two JWKS fetches triggered by unknown ``kid`` values."""

    signing_key_cache_s: float = field(default=10.0, metadata=env("SIGNING_KEY_CACHE_S"))
    """How long the auth service keeps its signing keys in memory before re-reading authdb."""

    signing_key_kek: str = field(default="", metadata=env("SIGNING_KEY_KEK"), repr=False)
    """Key-encryption key of the private signing keys in authdb (at least 32 characters, e.g.
    ``openssl rand -base64 32``); the auth API refuses to start without it (exit 3). Keep it
    outside the database; ``amsctl keys rewrap`` moves the keys to a new one."""

    signing_key_kek_file: str = field(default="", metadata=env("SIGNING_KEY_KEK_FILE"))
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

    time_cost: int = field(default=2, metadata=env("ARGON2_TIME_COST"))
    """argon2id iterations (OWASP minimum: 2 with 19 MiB)."""

    memory_kib: int = field(default=19456, metadata=env("ARGON2_MEMORY_KIB"))
    """argon2id memory in KiB (OWASP minimum: 19456 = 19 MiB)."""

    parallelism: int = field(default=1, metadata=env("ARGON2_PARALLELISM"))
    """argon2id lanes."""

    allow_weak: bool = field(default=False, metadata=env("ARGON2_ALLOW_WEAK"))
    """Accept argon2id parameters below the OWASP minimum (tests only: every process
    refuses to start with weaker ones otherwise)."""

    max_pending_hashes: int = field(
        default=8, metadata=env("ARGON2_MAX_PENDING_HASHES")
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

    window_s: int = field(default=300, metadata=env("LOGIN_WINDOW_S"))
    """Window of the login rate limits; counters expire with it (no permanent lock-out)."""

    register_max_per_client: int = field(default=20, metadata=env("REGISTER_MAX_PER_CLIENT"))
    """Sign-ups from one client address per ``LOGIN_WINDOW_S`` before 429."""

    max_failures_per_account: int = field(
        default=10, metadata=env("LOGIN_MAX_FAILURES_PER_ACCOUNT")
    )
    """Failed logins of one account from one client (its device token, else its address)
    before each further attempt from that client waits a growing delay (``LOGIN_DELAY_*``;
    a success resets it): an attacker elsewhere cannot make the owner wait."""

    max_failures_per_account_all: int = field(
        default=100, metadata=env("LOGIN_MAX_FAILURES_PER_ACCOUNT_ALL")
    )
    """Failed logins of one account from all addresses together per window before 429 (the
    ceiling against a guessing attack spread over many addresses)."""

    max_attempts_per_client: int = field(
        default=100, metadata=env("LOGIN_MAX_ATTEMPTS_PER_CLIENT")
    )
    """Login attempts of one client address per window before 429."""

    delay_base_s: float = field(default=1.0, metadata=env("LOGIN_DELAY_BASE_S"))
    """The wait after ``LOGIN_MAX_FAILURES_PER_ACCOUNT`` failed logins of one account from one
    client; each further attempt doubles it (429 with ``Retry-After`` meanwhile)."""

    delay_max_s: float = field(default=900.0, metadata=env("LOGIN_DELAY_MAX_S"))
    """The longest wait between two login attempts of one client on one account."""

    delay_memory_s: int = field(default=86400, metadata=env("LOGIN_DELAY_MEMORY_S"))
    """How long a client's failed logins on an account are remembered after its last attempt
    (a success forgets them at once). Long, so that waiting to be forgotten never beats the
    delays."""

    device_ttl_s: int = field(default=90 * 86400, metadata=env("LOGIN_DEVICE_TTL_S"))
    """Lifetime of a device token after its last successful login (the portal keeps it in a
    cookie): proof that a client has signed in to that account before, which keeps it apart
    from anyone else's failed logins (docs/security.md)."""


@dataclass(frozen=True, kw_only=True)
class OperatorSettings:
    """Operator tools: ``amsctl`` and the console's dead-letter pages."""

    audit_log: str = field(
        default="~/.local/state/amsctl/audit.jsonl", metadata=env("AMSCTL_AUDIT_LOG")
    )
    """Append-only JSON-lines audit log of every ``amsctl dlq replay`` and ``purge``."""

    dlq_replay_window: int = field(default=100, metadata=env("DLQ_REPLAY_WINDOW"))
    """Dead letters published per confirm window by ``amsctl dlq replay``; each is removed
    from its dead-letter queue only after its own publisher confirm."""

    dlq_read_limit: int = field(default=10_000, metadata=env("DLQ_READ_LIMIT"))
    """Most messages ``amsctl dlq list``/``show`` read from one dead-letter queue."""


OWASP_ARGON2ID = ((47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5))
"""(memory KiB, iterations) pairs of the OWASP Password Storage Cheat Sheet, lanes >= 1."""


def argon2_meets_owasp(memory_kib: int, time_cost: int, parallelism: int) -> bool:
    return parallelism >= 1 and any(
        memory_kib >= m and time_cost >= t for m, t in OWASP_ARGON2ID
    )
