"""Database, schema, table and default privileges of the least-privilege roles
(:mod:`migrations.roles` says who they are): each function reads the catalog and issues only
the GRANTs and REVOKEs that differ from what the :class:`RolePlan` asks for."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from migrations.roles import DML, PUBLIC, RolePlan, quote_ident
from shared.db import asyncpg_dsn


async def secure_database(plan: RolePlan, database: str) -> list[str]:
    """Owner, CONNECT, schema privileges and default privileges of one database."""
    name = plan.database_names[database]
    changes: list[str] = []
    conn = await asyncpg.connect(asyncpg_dsn(plan.admin_url_for(database)))
    try:
        if await conn.fetchval(
            "SELECT datdba <> (SELECT oid FROM pg_roles WHERE rolname = $1) FROM pg_database "
            "WHERE datname = $2", plan.owner, name,
        ):
            owner = quote_ident(plan.owner)
            await _run(conn, [f"ALTER DATABASE {quote_ident(name)} OWNER TO {owner}"], changes)
        current = await _acl(conn, _DATABASE_ACL, name)
        desired = {role: {"CONNECT"} for role in plan.connect_grantees(database)}
        await _run(conn, acl_statements(f"DATABASE {quote_ident(name)}", current, desired,
                                        plan.managed()), changes)
        await _run(conn, await _reassign(conn, plan.owner), changes)
        current = await _acl(conn, _SCHEMA_ACL)
        desired = {role: {"USAGE"} for role in plan.connect_grantees(database)}
        await _run(conn, acl_statements("SCHEMA public", current, desired, plan.managed()),
                   changes)
        for kind, on, privileges in (("r", "TABLES", DML), ("S", "SEQUENCES", {"USAGE"})):
            current = await _acl(conn, _DEFAULT_ACL, plan.owner, kind)
            desired = {plan.services[database].name: set(privileges)}
            prefix = (f"ALTER DEFAULT PRIVILEGES FOR ROLE {quote_ident(plan.owner)} "
                      "IN SCHEMA public ")
            await _run(conn, acl_statements(on, current, desired, plan.managed() - {PUBLIC},
                                            prefix=prefix), changes)
    finally:
        await conn.close()
    return changes


async def grant_tables(plan: RolePlan, database: str) -> list[str]:
    """Each table's and sequence's grants, as :meth:`RolePlan.table_grants` says."""
    changes: list[str] = []
    conn = await asyncpg.connect(asyncpg_dsn(plan.admin_url_for(database)))
    try:
        version = int(await conn.fetchval("SHOW server_version_num"))
        tables = {r["relname"]: r["name"] for r in await conn.fetch(_RELATIONS, ["r", "p"])}
        for table, sql_name in sorted(tables.items()):
            desired = plan.table_grants(database, table, version)
            current = await _acl(conn, _RELATION_ACL, sql_name)
            await _run(conn, acl_statements(f"TABLE {sql_name}", current, desired,
                                            plan.managed()), changes)
        for seq in await conn.fetch(_SEQUENCES):
            if seq["owner_table"]:
                writes = plan.table_grants(database, seq["owner_table"], version)
                desired = {role: {"USAGE"} for role, privs in writes.items() if "INSERT" in privs}
            else:
                desired = {plan.services[database].name: {"USAGE"}}
            current = await _acl(conn, _RELATION_ACL, seq["name"])
            await _run(conn, acl_statements(f"SEQUENCE {seq['name']}", current, desired,
                                            plan.managed()), changes)
    finally:
        await conn.close()
    return changes


def acl_statements(on: str, current: dict[str, set[str]], desired: dict[str, set[str]],
                   managed: Iterable[str], *, prefix: str = "") -> list[str]:
    """GRANT and REVOKE statements that take ``managed`` roles from ``current`` to
    ``desired`` privileges on ``on``; none when they agree."""
    statements: list[str] = []
    for role in sorted(set(managed) | set(desired)):
        have, want = current.get(role, set()), desired.get(role, set())
        grantee = PUBLIC if role == PUBLIC else quote_ident(role)
        if want - have:
            statements.append(f"{prefix}GRANT {', '.join(sorted(want - have))} ON {on} "
                              f"TO {grantee}")
        if have - want:
            statements.append(f"{prefix}REVOKE {', '.join(sorted(have - want))} ON {on} "
                              f"FROM {grantee}")
    return statements


_DATABASE_ACL = """
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,
  a.privilege_type FROM pg_database d,
  aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a WHERE d.datname = $1
"""
_SCHEMA_ACL = """
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,
  a.privilege_type FROM pg_namespace n,
  aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a WHERE n.nspname = 'public'
"""
_DEFAULT_ACL = """
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,
  a.privilege_type FROM pg_default_acl d, aclexplode(d.defaclacl) a
WHERE d.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = $1)
  AND d.defaclnamespace = 'public'::regnamespace
  AND d.defaclobjtype::text = $2::text
"""
_RELATION_ACL = """
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END AS grantee,
  a.privilege_type FROM pg_class c,
  aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
WHERE c.oid = $1::text::regclass
"""
_RELATIONS = """
SELECT c.relname, c.oid::regclass::text AS name FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind::text = ANY($1::text[])
"""
_SEQUENCES = """
SELECT s.oid::regclass::text AS name, t.relname AS owner_table FROM pg_class s
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class t ON t.oid = d.refobjid
WHERE s.relnamespace = 'public'::regnamespace AND s.relkind = 'S'
"""


async def _reassign(conn: asyncpg.Connection, owner: str) -> list[str]:
    """Statements giving the owner role what others own in the schema (a database migrated
    before roles were managed; sequences of a table follow their table)."""
    statements: list[str] = []
    schema_owner = await conn.fetchval(
        "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'")
    if schema_owner not in {owner, "pg_database_owner"}:
        statements.append(f"ALTER SCHEMA public OWNER TO {quote_ident(owner)}")
    keyword = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW",
               "f": "FOREIGN TABLE", "S": "SEQUENCE"}
    for row in await conn.fetch(_NOT_OWNED, owner):
        statements.append(f"ALTER {keyword[row['relkind']]} {row['name']} OWNER TO "
                          f"{quote_ident(owner)}")
    for row in await conn.fetch(_ROUTINES_NOT_OWNED, owner):
        statements.append(f"ALTER ROUTINE {row['name']} OWNER TO {quote_ident(owner)}")
    return statements


_NOT_OWNED = """
SELECT c.oid::regclass::text AS name, c.relkind::text AS relkind FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = $1)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype IN ('a', 'i') AND c.relkind = 'S')
ORDER BY c.relkind DESC, 1
"""
_ROUTINES_NOT_OWNED = """
SELECT p.oid::regprocedure::text AS name FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace AND p.prokind IN ('f', 'p')
  AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = $1)
"""


async def _acl(conn: asyncpg.Connection, query: str, *args: object) -> dict[str, set[str]]:
    acl: dict[str, set[str]] = {}
    for row in await conn.fetch(query, *args):
        acl.setdefault(row["grantee"], set()).add(row["privilege_type"])
    return acl


async def _run(conn: asyncpg.Connection, statements: list[str], changes: list[str]) -> None:
    for statement in statements:
        await conn.execute(statement)
        changes.append(statement)
