"""``amsctl db``: create and migrate the three databases."""

from __future__ import annotations

import typer

from amsctl.common import EXIT_UNAVAILABLE, console, fail, settings
from shared.config import DATABASES

app = typer.Typer(help="Databases: create missing ones and migrate them.", no_args_is_help=True)


@app.command("migrate")
def migrate(
    database: list[str] = typer.Option(  # noqa: B008
        list(DATABASES), "--database", "-d", help="Database(s) to migrate (default: all three)."
    ),
) -> None:
    """Create missing databases and migrate authdb, apidb and admindb to head (idempotent);
    with MIGRATE_DATABASE_URL, also the least-privilege roles and their grants."""
    import sqlalchemy.exc
    from asyncpg import PostgresError

    from migrations.runner import migrate as run

    unknown = set(database) - set(DATABASES)
    if unknown:
        fail(
            f"unknown database(s) {', '.join(sorted(unknown))}; expected {', '.join(DATABASES)}", 2
        )
    from migrations.roles import RoleConfigError

    try:
        done = run(settings(), tuple(database))
    except RoleConfigError as exc:
        fail(f"configuration error: {exc}", 2)
    except (OSError, PostgresError, sqlalchemy.exc.OperationalError) as exc:
        fail(f"PostgreSQL is unreachable or refused the migration: {exc}", EXIT_UNAVAILABLE)
    for name, was_created in done.created.items():
        console.print(f"{name}: {'created and ' if was_created else ''}migrated to head")
    if done.roles is not None:
        roles = ", ".join(f"{db} {login.name}" for db, login in done.roles.services.items())
        console.print(f"roles: owner {done.roles.owner}; {roles}; audit {done.roles.audit.name}"
                      f" ({len(done.role_changes)} grants or role changes made)")
