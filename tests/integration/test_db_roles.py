"""Least privilege in PostgreSQL: ``amsctl db migrate`` gives each service a login role that
reaches only its own database, with DML on its tables and nothing more (migrations/roles.py).

Each test's roles are named after its databases' tag and dropped afterwards
(``isolated_settings(roles=True)``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from migrations.roles import plan_roles, scram_verifier, verifier_matches
from migrations.runner import migrate
from shared.config import Settings
from shared.db import asyncpg_dsn, database_name
from shared.db_url import url_user
from tests.support import POSTGRES, ROOT, env_for, isolated_settings

pytestmark = pytest.mark.integration

ROLE_DENIED = (asyncpg.InsufficientPrivilegeError, asyncpg.InvalidAuthorizationSpecificationError)


@pytest.fixture(scope="module")
def roles() -> Iterator[Settings]:
    with isolated_settings("roles", roles=True) as settings:
        yield settings


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        yield conn
    finally:
        await conn.close()


def _as(settings: Settings, role_of: str, database: str) -> str:
    """The URL of ``role_of``'s service role (``authdb``, ``apidb``, ``admindb`` or
    ``audit``) on another ``database``."""
    url = settings.database.audit_url if role_of == "audit" else settings.database.url(role_of)
    return url.rsplit("/", 1)[0] + "/" + database_name(settings.database.url(database))


async def _denied(url: str, statement: str) -> str:
    async with connected(url) as conn:
        with pytest.raises(asyncpg.PostgresError) as caught:
            await conn.execute(statement)
    assert isinstance(caught.value, ROLE_DENIED), caught.value
    return str(caught.value)


def test_a_service_role_cannot_connect_to_another_services_database(roles: Settings) -> None:
    for role_of, database in [("apidb", "authdb"), ("admindb", "authdb"), ("authdb", "apidb"),
                              ("admindb", "apidb"), ("authdb", "admindb"), ("apidb", "admindb"),
                              ("audit", "apidb"), ("audit", "admindb")]:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            asyncio.run(_connect_and_close(_as(roles, role_of, database)))


async def _connect_and_close(url: str) -> None:
    async with connected(url):
        pass


def test_the_audit_table_and_the_auth_tables_are_apart(roles: Settings) -> None:
    """The admin API holds the audit role: it cannot read the signing keys or users; the auth
    role cannot read or write the audit trail; nobody but migrate sees alembic_version."""
    asyncio.run(_denied(roles.database.audit_url, "SELECT * FROM signing_keys"))
    asyncio.run(_denied(roles.database.audit_url, "SELECT * FROM users"))
    asyncio.run(_denied(roles.database.auth_url, "SELECT * FROM operator_audit"))
    asyncio.run(_denied(roles.database.auth_url,
                        "INSERT INTO operator_audit (actor, source, action, outcome) "
                        "VALUES ('x', 'cli', 'forged', 'ok')"))
    for db in ("authdb", "apidb", "admindb"):
        asyncio.run(_denied(roles.database.url(db), "SELECT * FROM alembic_version"))

    async def append_and_read() -> None:
        async with connected(roles.database.audit_url) as conn:
            await conn.execute("INSERT INTO operator_audit (actor, source, action, outcome) "
                               "VALUES ('ops', 'cli', 'test.append', 'ok')")
            assert await conn.fetchval("SELECT count(*) FROM operator_audit") >= 1

    asyncio.run(append_and_read())
    asyncio.run(_denied(roles.database.audit_url, "DELETE FROM operator_audit"))  # no grant at all


@pytest.mark.parametrize("statement", [
    "CREATE TABLE intruder (id int)",
    "CREATE SCHEMA intruder",
    "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE TEMP TABLE intruder (id int)",
    "CREATE VIEW intruder AS SELECT 1",
    "TRUNCATE outbox",
    "ALTER TABLE outbox ADD COLUMN intruder int",
    "DROP TABLE inbox",
    "CREATE INDEX intruder ON outbox (event_type)",
    "CREATE TRIGGER intruder AFTER INSERT ON outbox EXECUTE FUNCTION outbox_notify()",
])
def test_a_service_role_creates_and_alters_nothing(roles: Settings, statement: str) -> None:
    for db in ("authdb", "apidb", "admindb"):
        asyncio.run(_denied(roles.database.url(db), statement))


def test_a_service_role_cannot_become_another_role(roles: Settings) -> None:
    others = [roles.database.owner_role, "postgres", url_user(roles.database.users_url),
              url_user(roles.database.audit_url), "pg_read_all_data", "pg_write_server_files"]
    for role in others:
        message = asyncio.run(_denied(roles.database.auth_url, f'SET ROLE "{role}"'))
        assert "permission denied" in message
    asyncio.run(_denied(roles.database.auth_url,
                        f'SET SESSION AUTHORIZATION "{roles.database.owner_role}"'))


def test_each_service_has_dml_on_its_own_tables(roles: Settings) -> None:
    async def check() -> None:
        async with connected(roles.database.users_url) as conn:
            assert await conn.fetchval("SELECT current_user") == url_user(
                roles.database.users_url)
            assert not await conn.fetchval(
                "SELECT rolsuper OR rolcreaterole OR rolcreatedb FROM pg_roles "
                "WHERE rolname = current_user")
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO inbox (consumer, message_id, event_type) VALUES ('t', '1', 'x')")
                await conn.execute("UPDATE inbox SET event_type = 'y' WHERE consumer = 't'")
                assert await conn.fetchval("SELECT count(*) FROM inbox WHERE consumer = 't'") == 1
                await conn.execute("DELETE FROM inbox WHERE consumer = 't'")

    asyncio.run(check())


def test_migrate_twice_changes_nothing_and_the_cli_says_so(roles: Settings) -> None:
    before = asyncio.run(_catalog(roles))
    assert migrate(roles).role_changes == []
    result = subprocess.run(
        [sys.executable, "-m", "amsctl", "db", "migrate"], cwd=ROOT, env=env_for(roles),
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "(0 grants or role changes made)" in result.stdout
    assert asyncio.run(_catalog(roles)) == before


def test_future_tables_get_the_service_grants(roles: Settings) -> None:
    """What a later migration creates as the owner is the service's to use at once."""
    owner = roles.database.owner_role
    admin = f"{POSTGRES}/{database_name(roles.database.users_url)}"

    async def create_later_table() -> None:
        async with connected(admin) as conn:
            await conn.execute(f'SET ROLE "{owner}"')
            await conn.execute("CREATE TABLE later (id bigserial PRIMARY KEY, v text)")
        async with connected(roles.database.users_url) as conn:
            await conn.execute("INSERT INTO later (v) VALUES ('ok')")
            assert await conn.fetchval("SELECT v FROM later") == "ok"
        async with connected(admin) as conn:
            await conn.execute("DROP TABLE later")

    asyncio.run(create_later_table())


def test_an_existing_database_is_taken_over_by_the_owner(tmp_path: Path) -> None:
    """Databases migrated before roles (owned by the superuser) move to the owner role, and
    the passwords come from ``*_PASSWORD_FILE`` secrets, stored as SCRAM verifiers."""
    with isolated_settings("rolesold") as plain:  # migrated as postgres, no roles
        secret = tmp_path / "auth-password"
        secret.write_text("s3cret from a file\n")
        with isolated_settings("rolesnew", roles=True, migrate=False) as shaped:
            taken = shaped.replace(
                auth_database_url=_on(shaped.database.auth_url.replace(
                    f"{url_user(shaped.database.auth_url)}-password", ""), plain, "authdb"),
                users_database_url=_on(shaped.database.users_url, plain, "apidb"),
                admin_database_url=_on(shaped.database.admin_url, plain, "admindb"),
                audit_database_url=_on(shaped.database.audit_url, plain, "authdb"),
                auth_database_password_file=str(secret),
            )
            assert taken.database.auth_url.split("@")[0].endswith(":s3cret%20from%20a%20file")
            # (The roles' clean-up gives the databases back to postgres, whose clean-up drops
            # them.)
            _take_over(plain, shaped, taken)


def _take_over(plain: Settings, shaped: Settings, taken: Settings) -> None:
    done = migrate(taken)
    assert any("OWNER TO" in change for change in done.role_changes)
    assert migrate(taken).role_changes == []
    owners = asyncio.run(_owners(plain))
    assert owners == {shaped.database.owner_role}, owners
    stored = asyncio.run(_stored_password(url_user(taken.database.auth_url)))
    assert stored.startswith("SCRAM-SHA-256$")
    assert verifier_matches(stored, "s3cret from a file")
    asyncio.run(_denied(taken.database.auth_url, "CREATE TABLE intruder (id int)"))


def test_our_verifiers_are_postgresqls(roles: Settings) -> None:
    """A password PostgreSQL hashed itself is recognised (so migrate leaves it alone)."""
    role = url_user(roles.database.users_url)

    async def server_hashed() -> str:
        async with connected(f"{POSTGRES}/postgres") as conn:
            await conn.execute("SET password_encryption = 'scram-sha-256'")
            await conn.execute(f"ALTER ROLE \"{role}\" PASSWORD 'plain text'")
        return await _stored_password(role)

    stored = asyncio.run(server_hashed())
    assert verifier_matches(stored, "plain text") and not verifier_matches(stored, "other")
    assert verifier_matches(scram_verifier("p"), "p")
    migrate(roles)  # the URL's password again
    plan = plan_roles(roles.database)
    assert plan is not None
    assert verifier_matches(asyncio.run(_stored_password(role)), plan.services["apidb"].password)


def test_misconfigured_roles_are_refused(roles: Settings) -> None:
    shared_role = roles.replace(users_database_url=roles.database.auth_url)
    with pytest.raises(ValueError, match="a user of its own"):
        plan_roles(shared_role.database)
    superuser = roles.replace(admin_database_url=f"{POSTGRES}/x")
    with pytest.raises(ValueError, match="owner or migrate's administrator"):
        plan_roles(superuser.database)
    result = subprocess.run(
        [sys.executable, "-m", "amsctl", "db", "migrate"], cwd=ROOT, env=env_for(shared_role),
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 2 and "a user of its own" in " ".join(result.stderr.split())


async def _catalog(settings: Settings) -> dict[str, object]:
    """Roles, database, schema, table and default ACLs of the test's roles and databases."""
    snapshot: dict[str, object] = {}
    tag = settings.database.owner_role.removesuffix("_owner")
    async with connected(f"{POSTGRES}/postgres") as conn:
        snapshot["roles"] = [tuple(r) for r in await conn.fetch(
            "SELECT rolname, rolsuper, rolcanlogin, rolinherit, rolcreaterole, rolcreatedb, "
            "rolpassword FROM pg_authid WHERE starts_with(rolname, $1) ORDER BY 1", tag)]
        snapshot["databases"] = [tuple(r) for r in await conn.fetch(
            "SELECT datname, datdba, datacl::text FROM pg_database "
            "WHERE starts_with(datname, $1) ORDER BY 1", tag)]
    for db in ("authdb", "apidb", "admindb"):
        async with connected(f"{POSTGRES}/{database_name(settings.database.url(db))}") as conn:
            snapshot[db] = [tuple(r) for r in await conn.fetch(
                "SELECT relname, relowner, relacl::text FROM pg_class "
                "WHERE relnamespace = 'public'::regnamespace ORDER BY 1")] + [
                tuple(r) for r in await conn.fetch(
                    "SELECT nspacl::text FROM pg_namespace WHERE nspname = 'public' UNION ALL "
                    "SELECT defaclacl::text FROM pg_default_acl ORDER BY 1")]
    return snapshot


async def _owners(settings: Settings) -> set[str]:
    owners: set[str] = set()
    for db in ("authdb", "apidb", "admindb"):
        async with connected(settings.database.url(db)) as conn:
            owners |= {r[0] for r in await conn.fetch(
                "SELECT pg_get_userbyid(relowner) FROM pg_class "
                "WHERE relnamespace = 'public'::regnamespace UNION "
                "SELECT pg_get_userbyid(proowner) FROM pg_proc "
                "WHERE pronamespace = 'public'::regnamespace UNION "
                "SELECT pg_get_userbyid(datdba) FROM pg_database "
                "WHERE datname = current_database()")}
    return owners


async def _stored_password(role: str) -> str:
    async with connected(f"{POSTGRES}/postgres") as conn:
        return str(await conn.fetchval("SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                                       role))


def _on(url: str, settings: Settings, database: str) -> str:
    """``url`` (its role) on the database ``settings`` name for ``database``."""
    return url.rsplit("/", 1)[0] + "/" + database_name(settings.database.url(database))


def test_an_administrator_that_is_no_superuser_will_do() -> None:
    """A managed PostgreSQL gives no superuser: a CREATEDB CREATEROLE role runs migrate too
    (it makes itself a member of the owner role). It cannot read the stored verifiers, so it
    sets the passwords again on each run, and nothing else."""
    with isolated_settings("rolesdba", roles=True, migrate=False) as settings:
        tag = settings.database.owner_role.removesuffix("_owner")
        dba = f"{tag}_dba"  # dropped with the test's other roles

        async def create_dba() -> None:
            async with connected(f"{POSTGRES}/postgres") as conn:
                await conn.execute(f'CREATE ROLE "{dba}" LOGIN CREATEDB CREATEROLE')

        asyncio.run(create_dba())
        managed = settings.replace(migrate_database_url=POSTGRES.replace(
            "//postgres@", f"//{dba}@") + "/postgres")
        assert all(migrate(managed).created.values())
        again = migrate(managed).role_changes
        assert again and all(change.endswith(": password set") for change in again), again
        asyncio.run(_denied(managed.database.users_url, "CREATE TABLE intruder (id int)"))


def test_a_superuser_is_not_taken_for_a_service_role(roles: Settings) -> None:
    """A service URL naming an existing superuser is refused, not demoted."""
    superuser = roles.database.owner_role.removesuffix("_owner") + "_su"  # dropped afterwards

    async def sql(query: str) -> object:
        async with connected(f"{POSTGRES}/postgres") as conn:
            return await conn.fetchval(query)

    asyncio.run(sql(f'CREATE ROLE "{superuser}" LOGIN SUPERUSER'))
    as_superuser = roles.replace(admin_database_url=roles.database.admin_url.replace(
        f"{url_user(roles.database.admin_url)}:", f"{superuser}:"))
    with pytest.raises(ValueError, match=f"{superuser} is a superuser"):
        migrate(as_superuser)
    assert asyncio.run(sql(f"SELECT rolsuper FROM pg_roles WHERE rolname = '{superuser}'"))
