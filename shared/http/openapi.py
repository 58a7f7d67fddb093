"""What routes declare in the OpenAPI document: the error responses (with the shared error
body), the response headers, and the shapes request text must have."""

from __future__ import annotations

from litestar.datastructures import ResponseHeader
from litestar.openapi.datastructures import ResponseSpec

from shared.http.errors import ErrorBody

NO_NUL = r"^[^\x00]*$"
"""``msgspec.Meta(pattern=NO_NUL)`` for request text that is stored or queried in PostgreSQL,
which refuses NUL characters (the request would end in a 500 instead of a 422)."""

_DESCRIPTIONS = {
    400: "Bad request",
    401: "Missing, invalid, expired or revoked token or credentials",
    403: "Authenticated but not allowed",
    404: "Not found",
    409: "Conflicts with the current state",
    413: "Request body too large",
    422: "Invalid input",
    429: "Rate-limited; see Retry-After",
    503: "A dependency (database, Redis) is unavailable; see Retry-After",
}


LOCATION = ResponseHeader(
    name="Location", documentation_only=True, required=True,
    description="Where the created or accepted resource can be read (a path on this API).",
)
"""``response_headers=[LOCATION]`` on a 201/202 route that sets ``Location``."""

DEVICE_TOKEN_HEADER = "X-Device-Token"  # noqa: S105 - a header name, not a secret
"""A successful login answers with this header (a token for this account on this device); a
later login that sends it back counts as that device (its own failed-login delays). A header,
so that the login request and token bodies stay exactly the public contract's."""

DEVICE_TOKEN_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"  # noqa: S105 - a shape, not a secret
"""What a device token looks like; anything else is not sent on nor looked up."""

DEVICE_TOKEN_ISSUED = ResponseHeader(
    name=DEVICE_TOKEN_HEADER, documentation_only=True, required=False,
    description="Login only: keep it on this device for this account and send it back in "
    "the same header with its next login (valid LOGIN_DEVICE_TTL_S after its last use).",
)


def error_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI ``responses=`` documenting error statuses with the shared error body."""
    return {
        status: ResponseSpec(
            data_container=ErrorBody, description=_DESCRIPTIONS.get(status, "Error"),
            generate_examples=False,
        )
        for status in statuses
    }
