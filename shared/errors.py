"""One exception tree for the whole product.

Services raise these; each API maps them to HTTP once, each worker maps them to
ack / retry / dead-letter once. Driver errors are translated with ``raise X from exc``.
"""

from __future__ import annotations


class AmsError(Exception):
    """Base of every error the product raises on purpose."""


# --- domain errors: the request or message is wrong; retrying changes nothing --------
class DomainError(AmsError):
    """A business rule refused the operation. Workers dead-letter these at once."""


class NotFound(DomainError):
    """The thing does not exist (or the caller may not know that it does)."""


class NotYetAvailable(NotFound):
    """Not there yet but expected soon (a profile the worker has not created yet)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Conflict(DomainError):
    """The operation clashes with the current state (duplicate email, …)."""


class PermissionDenied(DomainError):
    """The caller is authenticated but may not do this."""


class AuthenticationFailed(DomainError):
    """Credentials or token missing, wrong, expired or revoked."""


class ValidationFailed(DomainError):
    """Input violates a rule that a schema cannot express."""


class LegalHold(DomainError):
    """A document under legal hold cannot be deleted."""


class QuotaExceeded(DomainError):
    """The caller's storage quota (documents or bytes) would be exceeded (413)."""


class RateLimited(DomainError):
    """Too many attempts; ``retry_after`` seconds until the next is allowed."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --- message errors -------------------------------------------------------------------
class InvalidMessage(AmsError):
    """A message that can never be processed: unknown type, bad JSON, schema mismatch."""


# --- infrastructure errors: a dependency is down or slow; retry later ------------------
class TransientError(AmsError):
    """A dependency failed in a way that may pass (database, Redis, broker, timeout)."""


class DependencyUnavailable(TransientError):
    """A dependency is unreachable right now; APIs answer 503."""


# --- upload refusals (admin API): ValidationFailed with their own HTTP status ----------
class PayloadTooLarge(ValidationFailed):
    """The upload is bigger than the configured cap (HTTP 413)."""


class UnsupportedMediaType(ValidationFailed):
    """The content is not of an allowed type, whatever its name claims (HTTP 415)."""
