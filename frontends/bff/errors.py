"""Every failure becomes a page a person understands: never a stack trace, never raw JSON.

An API's error (413, 415, 422 with the fields it names, 429 with when to try again, 503 with
what is down), an API that does not answer, Redis (the session store) away, a missing CSRF
token, an unknown page, or a bug: each gets a status, a title and a sentence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

from frontends.bff.api import BackendError, ServiceDown
from frontends.bff.core import CsrfRefused, Forbidden, NotSignedIn, frontend_of
from frontends.bff.session import SESSION_STORE
from shared.errors import (
    Conflict,
    DomainError,
    NotFound,
    PermissionDenied,
    TransientError,
    ValidationFailed,
)
from shared.logging import get_logger

log = get_logger(__name__)


@dataclass
class Problem:
    """What the error page says."""

    status: int
    title: str
    message: str
    fields: dict[str, str] = field(default_factory=dict)
    retry_after: int | None = None


def _megabytes(n: int) -> str:
    return f"{n / 1_048_576:.0f} MB" if n >= 1_048_576 else f"{n / 1024:.0f} KB"


def backend_problem(  # noqa: PLR0911 - one answer per status, read top to bottom
    exc: BackendError, *, upload_max_bytes: int
) -> Problem:
    """The page for an API's error answer."""
    status = exc.status
    if status == 413:
        return Problem(413, "The file is too large",
                       f"Files up to {_megabytes(upload_max_bytes)} are accepted. {exc.message}.")
    if status == 415:
        return Problem(415, "This kind of file is not supported",
                       "Upload a PNG, JPEG, TIFF or PDF file (the type is read from the file's "
                       "content, not its name).")
    if status == 422:
        return Problem(422, "Some of what you entered is not valid", exc.message,
                       fields=exc.field_errors())
    if status == 429:
        wait = exc.retry_after
        when = f"in {wait} seconds" if wait else "in a few minutes"
        return Problem(429, "Too many attempts", f"Please try again {when}.", retry_after=wait)
    if status == 404:
        return Problem(404, "Not found", "What you asked for does not exist (any more), or it "
                       "is not yours to see.")
    if status == 403:
        return Problem(403, "Not allowed", exc.message)
    if status == 409:
        return Problem(409, "That cannot be done right now", exc.message)
    return Problem(status if 400 <= status < 600 else 502, "Something went wrong",
                   f"The {exc.service} service answered: {exc.message}")


def problem_of(  # noqa: PLR0911 - one answer per kind of failure
    exc: Exception, *, upload_max_bytes: int
) -> Problem:
    """The page for any exception a handler let through."""
    if isinstance(exc, BackendError):
        return backend_problem(exc, upload_max_bytes=upload_max_bytes)
    if isinstance(exc, ServiceDown):
        return Problem(503, "Temporarily unavailable",
                       f"{exc.what[0].upper()}{exc.what[1:]} is not answering right now. Nothing "
                       "you did was lost; please try again in a moment.",
                       retry_after=exc.retry_after or 5)
    if isinstance(exc, TransientError):
        return _unavailable(exc)
    if isinstance(exc, DomainError):
        return _domain_problem(exc)
    if isinstance(exc, CsrfRefused):
        return Problem(403, "This form has expired",
                       "The form was not sent by this site's page, or it is too old. Go back, "
                       "reload the page and try again.")
    if isinstance(exc, Forbidden):
        return Problem(403, "Not allowed", str(exc))
    if isinstance(exc, HTTPException):
        return _http_problem(exc, upload_max_bytes)
    log.error("frontend.unhandled_error", error_type=type(exc).__name__, exc_info=exc)
    return Problem(500, "Something went wrong on our side",
                   "The error has been logged. Please try again.")


def _unavailable(exc: TransientError) -> Problem:
    if SESSION_STORE in str(exc):
        return Problem(503, "Temporarily unavailable",
                       "The session store (Redis) is not answering, so nobody can sign in or "
                       "change anything right now. Please try again in a moment.", retry_after=5)
    # The console's own dependencies (RabbitMQ, authdb and its audit table) say what they are.
    return Problem(503, "Temporarily unavailable",
                   f"Something this page needs is not answering: {exc}. Nothing was changed; "
                   "please try again in a moment.", retry_after=5)


def _domain_problem(exc: DomainError) -> Problem:
    """A rule of the operation refused it (the console's dead letters, outbox, sagas)."""
    for kind, status, title in _DOMAIN_PAGES:
        if isinstance(exc, kind):
            return Problem(status, title, str(exc))
    return Problem(400, "That cannot be done", str(exc))


_DOMAIN_PAGES: tuple[tuple[type[DomainError], int, str], ...] = (
    (NotFound, 404, "Not found"),
    (ValidationFailed, 422, "That request is not valid"),
    (PermissionDenied, 403, "Not allowed"),
    (Conflict, 409, "That cannot be done right now"),
)


def _http_problem(exc: HTTPException, upload_max_bytes: int) -> Problem:
    status = exc.status_code
    if status == 413:
        return Problem(413, "The file is too large",
                       f"Files up to {_megabytes(upload_max_bytes)} are accepted.")
    if status == 404:
        return Problem(404, "Page not found", "There is no page at this address.")
    if status == 405:
        return Problem(405, "Not possible here", "This page does not accept that request.")
    if status in (400, 422):
        return Problem(status, "The request could not be understood", str(exc.detail))
    return Problem(status, "Something went wrong", str(exc.detail))


def render_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The exception handler of both frontends."""
    frontend = frontend_of(request)
    if isinstance(exc, NotSignedIn):
        return frontend.login_redirect(request)
    problem = problem_of(exc, upload_max_bytes=frontend.settings.uploads.max_bytes)
    if problem.status >= 500:
        log.warning("frontend.error_page", status=problem.status, error=str(exc)[:300],
                    error_type=type(exc).__name__)
    headers = {"Retry-After": str(problem.retry_after)} if problem.retry_after else {}
    template = frontend.page(request, "error.html", status=problem.status, problem=problem)
    template.headers.update(headers)
    return template


EXCEPTION_HANDLERS: ExceptionHandlersMap = {Exception: render_error}
