"""Least-privilege PostgreSQL roles, created and granted by ``amsctl db migrate``.

With ``MIGRATE_DATABASE_URL`` set, migrate connects as that administrator and

1. creates (or corrects) the roles: ``DATABASE_OWNER_ROLE`` (NOLOGIN) and one login role per
   service, named by the user of its URL (``AUTH_DATABASE_URL`` -> authdb,
   ``USERS_DATABASE_URL`` -> apidb, ``ADMIN_DATABASE_URL`` -> admindb), plus the audit role
   (``AUDIT_DATABASE_URL``'s user; the auth role when that URL is empty); none of them a
   superuser, able to create anything or a member of any role;
2. per database (:mod:`migrations.grants`): the owner role owns it and every object in it;
   CONNECT only for the service role (and the audit role on authdb), no TEMP, no CREATE on
   the schema; default privileges, so tables a later migration creates get the service grants;
3. runs the migrations as the owner role (``SET ROLE`` through the connection's ``role``);
4. reconciles every table's grants (:mod:`migrations.grants`): DML for the service role, USAGE
   on its sequences, INSERT and SELECT on ``operator_audit`` for the audit role only, nothing on
   ``alembic_version``.

The relay and the workers use their service's role (the relay one per database it relays).
Every step reads the catalog and changes only what differs: a second run changes nothing.
Passwords are sent as SCRAM-SHA-256 verifiers, never in clear.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg

from shared.config import DATABASES, DatabaseSettings
from shared.db import database_name
from shared.db_url import url_password, url_user

DML = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
"""What a service role may do to each of its tables."""
AUDIT_TABLE = "operator_audit"
AUDIT_PRIVILEGES = frozenset({"INSERT", "SELECT"})
"""What the audit role may do to the audit table (append-only: no UPDATE, DELETE, TRUNCATE)."""
HIDDEN_TABLES = frozenset({"alembic_version"})
"""Tables only the owner (migrate) touches."""
PUBLIC = "PUBLIC"
SCRAM_ITERATIONS = 4096
"""PostgreSQL's own default (``scram_iterations``)."""


class RoleConfigError(ValueError):
    """The settings cannot give every service a least-privilege role of its own."""


@dataclass(frozen=True)
class Login:
    name: str
    password: str
    """'' leaves an existing role's password alone (a new role gets none: only ``trust``
    or ``peer`` lines of pg_hba.conf let it in)."""


@dataclass(frozen=True)
class RolePlan:
    """Who gets what: derived from the settings' URLs, checked by :func:`plan_roles`."""

    admin_url: str
    owner: str
    services: dict[str, Login]
    """Logical database (``authdb``…) -> its service's login role."""
    audit: Login
    database_names: dict[str, str]
    """Logical database -> its name on the server (from the service URL)."""

    def logins(self) -> list[Login]:
        unique = {login.name: login for login in (*self.services.values(), self.audit)}
        return list(unique.values())

    def connect_grantees(self, database: str) -> set[str]:
        roles = {self.services[database].name}
        if database == "authdb":
            roles.add(self.audit.name)
        return roles

    def managed(self) -> set[str]:
        return {login.name for login in self.logins()} | {PUBLIC}

    def table_grants(self, database: str, table: str, server_version: int) -> dict[str, set[str]]:
        if table in HIDDEN_TABLES:
            return {}
        if database == "authdb" and table == AUDIT_TABLE:
            return {self.audit.name: set(AUDIT_PRIVILEGES)}
        privileges = set(DML)
        if table == "outbox" and server_version >= 170000:
            privileges.add("MAINTAIN")  # the relay's VACUUM outbox (PostgreSQL 17+)
        return {self.services[database].name: privileges}

    def admin_url_for(self, database: str) -> str:
        """The administrator's URL, on one of the three databases."""
        parts = urlsplit(self.admin_url)
        return parts._replace(path="/" + self.database_names[database]).geturl()


def plan_roles(database: DatabaseSettings) -> RolePlan | None:
    """The roles the database settings ask for; None when ``MIGRATE_DATABASE_URL`` is empty."""
    if not database.migrate_url:
        return None
    admin = url_user(database.migrate_url)
    owner = database.owner_role
    services = {db: _login(database.url(db), _SETTING[db]) for db in DATABASES}
    audit = _login(database.audit_url, "AUDIT_DATABASE_URL" if database.operator_audit_url
                   else "AUTH_DATABASE_URL")
    names = [login.name for login in services.values()]
    if len(set(names)) != len(names):
        raise RoleConfigError(
            "each of AUTH_, USERS_ and ADMIN_DATABASE_URL needs a user of its own "
            f"(they name {', '.join(names)})"
        )
    if audit.name in names and audit.name != services["authdb"].name:
        raise RoleConfigError(
            f"AUDIT_DATABASE_URL's user {audit.name} is another service's role; give it a role "
            "of its own (or leave AUDIT_DATABASE_URL empty to use the auth role)"
        )
    for login in (*services.values(), audit):
        if login.name in {owner, admin}:
            raise RoleConfigError(
                f"the service role {login.name} is also the owner or migrate's administrator; "
                "every service needs a role of its own"
            )
    if not owner or owner == admin:
        raise RoleConfigError("DATABASE_OWNER_ROLE must name a role other than migrate's user")
    return RolePlan(
        admin_url=database.migrate_url, owner=owner, services=services, audit=audit,
        database_names={db: database_name(database.url(db)) for db in DATABASES},
    )


_SETTING = {"authdb": "AUTH_DATABASE_URL", "apidb": "USERS_DATABASE_URL",
            "admindb": "ADMIN_DATABASE_URL"}


def _login(url: str, setting: str) -> Login:
    name = url_user(url)
    if not name:
        raise RoleConfigError(f"{setting} names no user: with MIGRATE_DATABASE_URL set, each "
                              "service connects as a role of its own")
    return Login(name, url_password(url))


# --- roles -------------------------------------------------------------------------------


async def ensure_roles(conn: asyncpg.Connection, plan: RolePlan) -> list[str]:
    """Create or correct the owner and login roles; returns what changed."""
    changes: list[str] = []
    await _ensure_role(conn, plan.owner, login=False, password="", changes=changes)
    for login in plan.logins():
        await _ensure_role(conn, login.name, login=True, password=login.password,
                           changes=changes)
    for role in [plan.owner, *(login.name for login in plan.logins())]:
        for group in await conn.fetch(_MEMBER_OF, role):
            await conn.execute(f"REVOKE {quote_ident(group['rolname'])} FROM {quote_ident(role)}")
            changes.append(f"{role}: no longer a member of {group['rolname']}")
    if not await conn.fetchval(
        "SELECT rolsuper OR pg_has_role(current_user, $1, 'MEMBER') FROM pg_roles "
        "WHERE rolname = current_user", plan.owner,
    ):  # a CREATEROLE administrator (a managed service's) must be able to SET ROLE owner
        await conn.execute(f"GRANT {quote_ident(plan.owner)} TO CURRENT_USER")
        changes.append(f"migrate's user: member of {plan.owner}")
    return changes


_MEMBER_OF = """
SELECT g.rolname FROM pg_auth_members m
JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles r ON r.oid = m.member
WHERE r.rolname = $1 ORDER BY 1
"""
_ATTRIBUTES = ("rolsuper", "rolcreatedb", "rolcreaterole", "rolreplication", "rolbypassrls")


async def _ensure_role(conn: asyncpg.Connection, name: str, *, login: bool, password: str,
                       changes: list[str]) -> None:
    attributes = ("LOGIN NOINHERIT" if login else "NOLOGIN") + (
        " NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    )
    row = await conn.fetchrow("SELECT * FROM pg_roles WHERE rolname = $1", name)
    if row is None:
        secret = f" PASSWORD '{scram_verifier(password)}'" if password else ""
        await conn.execute(f"CREATE ROLE {quote_ident(name)} WITH {attributes}{secret}")
        changes.append(f"{name}: created")
        return
    if row["rolsuper"]:
        raise RoleConfigError(
            f"{name} is a superuser: give the service a role of its own (migrate does not "
            "demote a superuser)"
        )
    if (row["rolcanlogin"] != login or (login and row["rolinherit"])
            or any(row[a] for a in _ATTRIBUTES)):
        await conn.execute(f"ALTER ROLE {quote_ident(name)} WITH {attributes}")
        changes.append(f"{name}: attributes corrected")
    if password and not await _password_matches(conn, name, password):
        await conn.execute(f"ALTER ROLE {quote_ident(name)} PASSWORD '{scram_verifier(password)}'")
        changes.append(f"{name}: password set")


async def _password_matches(conn: asyncpg.Connection, name: str, password: str) -> bool:
    """Whether the stored verifier is ``password``'s; False when it cannot be read (a
    non-superuser administrator: then the password is set again on every run)."""
    try:
        stored = await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                                     name)
    except asyncpg.InsufficientPrivilegeError:
        return False
    return isinstance(stored, str) and verifier_matches(stored, password)


def scram_verifier(password: str, salt: bytes | None = None,
                   iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802 / 7677), so
    the password itself never reaches the server or its logs."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}$"
            f"{b64(stored_key).decode()}:{b64(server_key).decode()}")


def verifier_matches(stored: str, password: str) -> bool:
    try:
        head, keys = stored.split("$", 2)[1:]
        iterations, salt = head.split(":")
        expected = scram_verifier(password, base64.b64decode(salt), int(iterations))
    except ValueError:
        return False  # md5 or no password
    return hmac.compare_digest(expected.rsplit("$", 1)[1], keys)


def quote_ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'
