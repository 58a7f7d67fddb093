"""``amsctl users``: operator actions on user accounts."""

from __future__ import annotations

import asyncio

import sqlalchemy.exc
import typer

from amsctl.common import EXIT_FAILURE, EXIT_UNAVAILABLE, EXIT_USAGE, console, fail, settings
from apps.auth.passwords import Argon2Passwords
from apps.auth.services import grant_role, register_user
from shared.config import Settings
from shared.db import create_engine, session_factory
from shared.errors import Conflict, ValidationFailed

app = typer.Typer(help="User accounts (authdb).", no_args_is_help=True)


async def _create_admin(cfg: Settings, email: str, password: str) -> str:
    engine = create_engine(cfg.auth_database_url, pool_size=1)
    passwords = Argon2Passwords(
        time_cost=cfg.argon2_time_cost,
        memory_kib=cfg.argon2_memory_kib,
        parallelism=cfg.argon2_parallelism,
    )
    sessions = session_factory(engine)
    try:
        try:
            account = await register_user(
                sessions, passwords, email, password, None, ("user", "admin")
            )
        except Conflict:
            await grant_role(sessions, email, "admin")
            return f"{email}: existing user granted the admin role (password unchanged)"
        return f"{account.email}: admin created with id {account.user_id}"
    finally:
        passwords.close()
        await engine.dispose()


@app.command("create-admin")
def create_admin(
    email: str = typer.Option(..., "--email", help="Email of the admin."),
    password: str = typer.Option(
        ..., "--password", help="Password (8-128 characters, not a common one)."
    ),
) -> None:
    """Create an admin user (or grant the admin role to an existing user). Idempotent."""
    try:
        message = asyncio.run(_create_admin(settings(), email, password))
    except ValidationFailed as exc:
        fail(str(exc), EXIT_USAGE)
    except (OSError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        fail(f"authdb is unreachable: {exc}", EXIT_UNAVAILABLE)
    except sqlalchemy.exc.ProgrammingError as exc:
        fail(f"authdb is not migrated (run `amsctl db migrate`): {exc.orig}", EXIT_FAILURE)
    console.print(message)
