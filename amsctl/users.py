"""``amsctl users``: operator actions on user accounts.

The password of ``create-admin`` never goes on the command line (where ``ps`` and shell
history would keep it): it is asked for twice at a terminal, or read from standard input
with ``--password-stdin`` (one line) for scripts.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from amsctl.common import EXIT_FAILURE, EXIT_UNAVAILABLE, EXIT_USAGE, console, fail, settings

if TYPE_CHECKING:
    from shared.config import Settings

app = typer.Typer(help="User accounts (authdb).", no_args_is_help=True)


async def _create_admin(cfg: Settings, email: str, password: str) -> str:
    from amsctl.audit import run_audited, trail
    from apps.auth.audit import AuditAction, AuditOutcome
    from apps.auth.passwords import Argon2Passwords
    from apps.auth.services import grant_role, register_user
    from shared.db import create_engine, session_factory
    from shared.errors import Conflict

    passwords = Argon2Passwords.from_settings(cfg.passwords)
    # The account as the auth role, the record as the audit role (AUDIT_DATABASE_URL).
    engine = create_engine(cfg.database.auth_url, pool_size=1)
    sessions = session_factory(engine)
    try:
        async with trail(cfg) as audit:

            async def work() -> tuple[str, str]:
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
        await engine.dispose()


def read_password(from_stdin: bool) -> str:
    """One line of standard input, or asked twice (hidden) at a terminal."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            fail("--password-stdin: standard input held no password", EXIT_USAGE)
        return password
    if not sys.stdin.isatty():
        fail("no terminal to ask for the password: pipe it in with --password-stdin", EXIT_USAGE)
    answer: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return answer


@app.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option("--email", help="Email of the admin.")],
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin",
        help="Read the password (8-128 characters, not a common one) from the first line of "
        "standard input instead of asking for it.",
    )] = False,
) -> None:
    """Create an admin user (or grant the admin role to an existing user). Idempotent.

    The password is asked for at the terminal (twice), or read with --password-stdin.
    """
    import asyncio

    import sqlalchemy.exc

    from amsctl.audit import AuditNotRecorded
    from shared.errors import DependencyUnavailable, ValidationFailed

    password = read_password(password_stdin)
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
