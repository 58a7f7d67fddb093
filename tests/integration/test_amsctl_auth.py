"""``amsctl users create-admin`` and ``amsctl keys`` against a real authdb."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from amsctl.main import app
from shared.config import Settings
from tests.support import isolated_settings

runner = CliRunner()


@pytest.fixture(scope="module")
def cli_settings() -> Iterator[Settings]:
    # Least-privilege roles: the account and keys as the auth role, the audit as the audit role.
    with isolated_settings("cli", roles=True) as s:
        yield s


@pytest.fixture
def env(cli_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("AUTH_DATABASE_URL", cli_settings.database.auth_url)
    monkeypatch.setenv("AUDIT_DATABASE_URL", cli_settings.database.audit_url)
    monkeypatch.setenv("SIGNING_KEY_KEK", cli_settings.tokens.signing_key_kek)
    return cli_settings


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), input=stdin)
    return result.exit_code, result.output


def test_create_admin_is_idempotent_and_validates(env: Settings) -> None:
    email = f"root{uuid.uuid4().hex[:6]}@example.com"
    secret = "a long admin secret\n"
    code, out = run("users", "create-admin", "--email", email, "--password-stdin", stdin=secret)
    assert code == 0, out
    assert "admin created" in out
    code, out = run("users", "create-admin", "--email", email, "--password-stdin", stdin=secret)
    assert code == 0
    assert "granted" in out
    code, out = run("users", "create-admin", "--email", "x@example.com", "--password-stdin",
                    stdin="password\n")
    assert code == 2


def test_create_admin_takes_no_password_on_the_command_line(env: Settings) -> None:
    code, out = run("users", "create-admin", "--email", "a@example.com", "--password", "x" * 12)
    assert code == 2
    assert "No such option" in out
    # Without a terminal to ask at, and without --password-stdin: refused, nothing created.
    code, out = run("users", "create-admin", "--email", "a@example.com", stdin="")
    assert code == 2
    assert "--password-stdin" in out
    code, out = run("users", "create-admin", "--email", "a@example.com", "--password-stdin",
                    stdin="")
    assert code == 2
    assert "held no password" in out


def test_key_rotation_create_list_retire(env: Settings) -> None:
    code, out = run("keys", "create")
    assert code == 0, out
    code, out = run("keys", "create")
    assert code == 0
    code, out = run("keys", "list", "--json")
    keys = json.loads(out)
    live = [k for k in keys if k["retired_at"] is None]
    assert len(live) >= 2
    assert keys[0]["signing"] is True
    # Not at a terminal and without --yes: refused, the key stays live.
    code, out = run("keys", "retire", live[-1]["kid"])
    assert code == 2 and "--yes" in out
    after = {k["kid"]: k for k in json.loads(run("keys", "list", "--json")[1])}
    assert after[live[-1]["kid"]]["retired_at"] is None
    code, out = run("keys", "retire", live[-1]["kid"], "--yes")
    assert code == 0, out
    code, out = run("keys", "retire", "no-such-kid", "--yes")
    assert code == 4
    for key in json.loads(run("keys", "list", "--json")[1]):
        if key["retired_at"] is None and key["kid"] != keys[0]["kid"]:
            assert run("keys", "retire", key["kid"], "--yes")[0] == 0
    code, out = run("keys", "retire", keys[0]["kid"], "--yes")
    assert code == 1
    assert "last live" in out
