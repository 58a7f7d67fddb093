"""``amsctl keys``: token signing keys (rotation: create a new key, later retire the old).

The newest live key signs; every live key is published in the JWKS. Rotate by creating a
key, waiting until tokens signed by the old key have expired (15 minutes for access
tokens; refresh tokens are re-signed on every rotation), then retiring the old key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from amsctl.common import (
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    confirm,
    console,
    fail,
    print_json,
)
from amsctl.common import settings as load_settings

if TYPE_CHECKING:  # imported on use: `amsctl keys --help` stays fast
    from apps.auth.audit import AuditAction, AuditOutcome
    from apps.auth.keys import KeyStore

app = typer.Typer(help="Token signing keys (JWKS).", no_args_is_help=True)
T = TypeVar("T")


def _with_store(action: Callable[[KeyStore], Awaitable[T]]) -> T:
    from apps.auth.keys import KeyStore
    from shared.db import create_engine, session_factory

    async def run() -> T:
        engine = create_engine(load_settings().database.auth_url, pool_size=1)
        try:
            return await action(KeyStore(session_factory(engine), None))
        finally:
            await engine.dispose()

    return _run(run)


def _audited(
    name: AuditAction, target: str | None, action: Callable[[KeyStore], Awaitable[T]],
    outcome_of: Callable[[T], tuple[str | None, AuditOutcome, dict[str, Any]]] | None = None,
    *, needs_kek: bool = False,
) -> T:
    """Run a key operation and record it in the operator audit table (authdb)."""
    from amsctl.audit import run_audited, trail
    from apps.auth.app import key_sealer
    from apps.auth.keys import KeyStore
    from shared.db import create_engine, session_factory

    async def run() -> T:
        cfg = load_settings()
        sealer = key_sealer(cfg.tokens) if needs_kek else None
        # The keys as the auth role, the record as the audit role (AUDIT_DATABASE_URL).
        engine = create_engine(cfg.database.auth_url, pool_size=1)
        try:
            async with trail(cfg) as audit:
                store = KeyStore(session_factory(engine), sealer)
                return await run_audited(
                    audit, name, target, lambda: action(store), outcome_of=outcome_of
                )
        finally:
            await engine.dispose()

    return _run(run)


def _run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    import asyncio

    import sqlalchemy.exc

    from amsctl.audit import AuditNotRecorded
    from apps.auth.keys import KeyEncryptionError
    from shared.errors import DependencyUnavailable

    try:
        return asyncio.run(main())
    except KeyEncryptionError as exc:
        fail(str(exc), EXIT_USAGE)
    except DependencyUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except AuditNotRecorded as exc:
        fail(str(exc), EXIT_FAILURE)
    except (OSError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as exc:
        fail(f"authdb is unreachable: {exc}", EXIT_UNAVAILABLE)


@app.command("list")
def list_keys(as_json: bool = typer.Option(False, "--json", help="JSON for scripts.")) -> None:
    """Every signing key, newest first: kid, created, retired, whether it signs."""
    from rich.table import Table

    keys = _with_store(lambda store: store.all())
    live = [k for k in keys if k.retired_at is None]
    rows: list[dict[str, Any]] = [
        {
            "kid": k.kid,
            "created_at": k.created_at.isoformat(),
            "retired_at": k.retired_at.isoformat() if k.retired_at else None,
            "signing": bool(live) and k.kid == live[0].kid,
            "encrypted": k.encrypted,
        }
        for k in keys
    ]
    if as_json:
        print_json(rows)
        return
    table = Table("kid", "created", "retired", "signing", "encrypted")
    for row in rows:
        table.add_row(
            row["kid"], row["created_at"], row["retired_at"] or "-",
            "yes" if row["signing"] else "", "yes" if row["encrypted"] else "NO",
        )
    console.print(table)


@app.command("create")
def create() -> None:
    """Create a key; it signs new tokens once auth processes reload keys (SIGNING_KEY_CACHE_S)."""
    from apps.auth.audit import AuditAction, AuditOutcome

    kid = _audited(
        AuditAction.KEYS_CREATE, None, lambda store: store.create(),
        outcome_of=lambda kid: (kid, AuditOutcome.OK, {}), needs_kek=True,
    )
    console.print(f"created signing key {kid}")


@app.command("retire")
def retire(
    kid: str = typer.Argument(..., help="Key id to retire."),
    force: bool = typer.Option(False, "--force", help="Allow retiring the last live key."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Stop publishing a key: tokens it signed stop verifying once caches refresh.

    Asks for confirmation at a terminal; without one, --yes is required.
    """
    from apps.auth.audit import AuditAction, AuditOutcome
    from shared.errors import Conflict, NotFound

    confirm(f"Retire signing key {kid}? Tokens it signed stop verifying.", yes)
    try:
        _audited(
            AuditAction.KEYS_RETIRE, kid, lambda store: store.retire(kid, force=force),
            outcome_of=lambda _: (kid, AuditOutcome.OK, {"force": force}),
        )
    except NotFound as exc:
        fail(str(exc), EXIT_NOT_FOUND)
    except Conflict as exc:
        fail(str(exc), EXIT_FAILURE)
    console.print(f"retired signing key {kid}")


@app.command("rewrap")
def rewrap(
    new_kek_file: Path = typer.Option(  # noqa: B008
        ..., "--new-kek-file", help="File holding the new key-encryption key (32+ characters).",
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Re-encrypt every private signing key under a new key-encryption key.

    The current one comes from SIGNING_KEY_KEK / SIGNING_KEY_KEK_FILE. All keys change in
    one transaction; then give the auth processes the new key and restart them.
    """
    from apps.auth.audit import AuditAction, AuditOutcome
    from apps.auth.keys import KeyEncryptionError, KeySealer
    from shared.config import secret_value

    try:
        new = KeySealer(secret_value("", str(new_kek_file), "--new-kek"))
    except (ValueError, KeyEncryptionError) as exc:
        fail(str(exc).replace("SIGNING_KEY_KEK", "the new key"), EXIT_USAGE)
    confirm("Re-encrypt every signing key under the new key-encryption key?", yes)
    count = _audited(
        AuditAction.KEYS_REWRAP, "signing_keys", lambda store: store.rewrap(new),
        outcome_of=lambda n: ("signing_keys", AuditOutcome.OK, {"keys": n}), needs_kek=True,
    )
    console.print(f"re-encrypted {count} signing key(s); now set SIGNING_KEY_KEK to the new "
                  "key for every auth process and restart them")
