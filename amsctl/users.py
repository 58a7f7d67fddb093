"""``amsctl users``: operator actions on user accounts."""

from __future__ import annotations

import asyncio

import sqlalchemy.exc
import typer

from amsctl.audit import AuditNotRecorded, run_audited, trail
from amsctl.common import EXIT_FAILURE, EXIT_UNAVAILABLE, EXIT_USAGE, console, fail, settings
from apps.auth.audit import AuditAction, AuditOutcome
from apps.auth.passwords import Argon2Passwords
from apps.auth.services import grant_role, register_user
from shared.config import Settings
from shared.errors import Conflict, DependencyUnavailable, ValidationFailed

app = typer.Typer(help="User accounts (authdb).", no_args_is_help=True)


async def _create_admin(cfg: Settings, email: str, password: str) -> str:
    passwords = Argon2Passwords(
        time_cost=cfg.argon2_time_cost,
        memory_kib=cfg.argon2_memory_kib,
        parallelism=cfg.argon2_parallelism,
    )
    try:
        async with trail(cfg) as audit:

            async def work() -> tuple[str, str]:
                sessions = audit.sessions
                try:
                    account = await register_user(
                        sessions, passwords, email, password, None, ("user", "admin")
                    )
                except Conflict:
                    await grant_role(sessions, email, "admin")
                    return "granted", f"{email}: existing user granted the admin role " \
                        "(password unchanged)"
                return "created", f"{account.email}: admin created with id {account.user_id}"

            _, message = await run_audited(
                audit, AuditAction.USERS_CREATE_ADMIN, email.strip().lower(), work,
                outcome_of=lambda r: (email.strip().lower(), AuditOutcome.OK, {"result": r[0]}),
            )
            return message
    finally:
        passwords.close()


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
    except DependencyUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except AuditNotRecorded as exc:
        fail(str(exc), EXIT_FAILURE)
    except (OSError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        fail(f"authdb is unreachable: {exc}", EXIT_UNAVAILABLE)
    except sqlalchemy.exc.ProgrammingError as exc:
        fail(f"authdb is not migrated (run `amsctl db migrate`): {exc.orig}", EXIT_FAILURE)
    console.print(message)
