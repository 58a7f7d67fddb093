"""Database URLs and their passwords (a password may come from a file: a mounted secret)."""

from __future__ import annotations

from urllib.parse import quote, unquote, urlsplit, urlunsplit


def url_user(url: str) -> str:
    """The user name of a database URL ('' when it names none)."""
    return unquote(urlsplit(url).netloc.rpartition("@")[0].partition(":")[0])


def url_password(url: str) -> str:
    """The password written in a database URL ('' when it carries none)."""
    userinfo = urlsplit(url).netloc.rpartition("@")[0]
    return unquote(userinfo.partition(":")[2])


def with_password(url: str, password: str, setting: str) -> str:
    """``url`` carrying ``password`` (``setting``, e.g. ``AUTH_DATABASE_URL``, names it in
    errors). The URL must name its user."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    if not at or not user:
        raise ValueError(f"{setting} names no user for the password of "
                         f"{setting.removesuffix('_URL')}_PASSWORD_FILE")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{hosts}"))
