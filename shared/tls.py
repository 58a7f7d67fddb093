"""TLS on every outgoing link, by configuration.

Each link is switched to TLS by its own URL, in the form its ecosystem knows:

- PostgreSQL: ``?sslmode=verify-full`` (libpq's modes; ``sslrootcert=``, ``sslcert=``,
  ``sslkey=`` as libpq reads them),
- Redis: ``rediss://`` (``ssl_ca_certs=``, ``ssl_certfile=``, ``ssl_keyfile=``),
- RabbitMQ: ``amqps://`` (``cafile=``, ``certfile=``, ``keyfile=``),
- the auth service's JWKS: ``https://``.

``TLS_CA_FILE`` is the CA bundle every TLS link trusts unless its URL names its own:
:func:`with_default_ca` writes it into each URL once, when the settings are built, so every
client of a link (SQLAlchemy, plain asyncpg, redis-py, aiormq, httpx) reads the same thing.
Verification is never optional: a URL that turns it off is refused (:class:`TlsConfigError`),
and plain-http JWKS is accepted only from a loopback address, for development.
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

POSTGRES_VERIFYING = frozenset({"verify-ca", "verify-full"})
"""libpq ``sslmode`` values that check the server's certificate (``verify-full``: and name)."""
POSTGRES_SSL_KEYS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword", "sslcrl")
"""libpq's TLS parameters, which asyncpg reads from a DSN but not as keyword arguments."""

_REDIS_UNVERIFIED = {
    "ssl_cert_reqs": {"none", "optional"},
    "ssl_check_hostname": {"false", "0", "no", "off"},
}
"""redis-py URL parameters, and the values of them that would skip a check."""


class TlsConfigError(ValueError):
    """A TLS setting that cannot work or would not verify its peer."""


def client_context(
    ca_file: str = "", *, check_hostname: bool = True, cert_file: str = "", key_file: str = ""
) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca_file`` (empty: the system's
    trust store) and, with ``check_hostname``, its name; TLS 1.2 at least."""
    if ca_file:
        require_file(ca_file, "CA bundle")
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    if cert_file:
        context.load_cert_chain(require_file(cert_file, "client certificate"), key_file or None)
    return context


def require_file(path: str, what: str) -> str:
    if not Path(path).expanduser().is_file():
        raise TlsConfigError(f"{what} {path!r} does not exist or is not a file")
    return str(Path(path).expanduser())


# --- URLs --------------------------------------------------------------------------------------
def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def _with_query(url: str, **extra: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *extra.items()]
    return urlunsplit(parts._replace(query=urlencode(query, safe="/")))


def with_default_ca(setting: str, url: str, ca_file: str) -> str:
    """``url`` with ``ca_file`` as its CA bundle when it uses TLS and names none; checks that
    a TLS URL does not turn verification off and that the files it names exist."""
    if not url:
        return url
    scheme = urlsplit(url).scheme
    query = _query(url)
    if scheme.startswith("postgresql"):
        return _postgres(setting, url, query, ca_file)
    if scheme == "rediss":
        for key, weak in _REDIS_UNVERIFIED.items():
            if query.get(key, "").lower() in weak:
                raise TlsConfigError(f"{setting}: {key}={query[key]} turns verification off")
        return _ca(setting, url, query, "ssl_ca_certs", ca_file)
    if scheme == "amqps":
        if query.get("no_verify_ssl", "0") != "0":
            raise TlsConfigError(f"{setting}: no_verify_ssl turns verification off")
        return _ca(setting, url, query, "cafile", ca_file)
    return url


def _postgres(setting: str, url: str, query: dict[str, str], ca_file: str) -> str:
    mode = query.get("sslmode", "")
    if mode and mode not in {"disable", "allow", "prefer", "require", *POSTGRES_VERIFYING}:
        raise TlsConfigError(f"{setting}: unknown sslmode {mode!r}")
    if mode not in POSTGRES_VERIFYING:
        return url
    return _ca(setting, url, query, "sslrootcert", ca_file)


def _ca(setting: str, url: str, query: dict[str, str], key: str, ca_file: str) -> str:
    if key in query:
        require_file(query[key], f"{setting}: {key}")
        return url
    if not ca_file:
        return url  # the system's trust store
    require_file(ca_file, "TLS_CA_FILE")
    return _with_query(url, **{key: ca_file})


def postgres_connect_args(url: str) -> tuple[str, dict[str, Any]]:
    """SQLAlchemy's asyncpg dialect passes URL parameters to ``asyncpg.connect`` as keyword
    arguments, which has no ``sslmode``: the URL without libpq's TLS parameters, and the
    ``ssl`` argument that does what they said."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    tls = {k: v for k, v in query if k in POSTGRES_SSL_KEYS}
    if not tls:
        return url, {}
    rest = [(k, v) for k, v in query if k not in POSTGRES_SSL_KEYS]
    bare = urlunsplit(parts._replace(query=urlencode(rest)))
    mode = tls.get("sslmode", "prefer")
    if mode in POSTGRES_VERIFYING or (mode == "require" and "sslrootcert" in tls):
        # libpq: ``require`` with a root certificate verifies it, like ``verify-ca``.
        context = client_context(
            tls.get("sslrootcert", ""), check_hostname=mode == "verify-full",
            cert_file=tls.get("sslcert", ""), key_file=tls.get("sslkey", ""),
        )
        return bare, {"ssl": context}
    return bare, {"ssl": False if mode == "disable" else mode}


def check_jwks_url(url: str) -> str:
    """``url`` if it is https, or plain http to a loopback address (development only)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and _loopback(parts.hostname or ""):
        return url
    raise TlsConfigError(
        f"AUTH_JWKS_URL={url!r}: the signing keys must come over https "
        "(plain http is accepted only from a loopback address, for development)"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
