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
    with isolated_settings("cli") as s:
        yield s


@pytest.fixture
def env(cli_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("AUTH_DATABASE_URL", cli_settings.auth_database_url)
    return cli_settings


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_create_admin_is_idempotent_and_validates(env: Settings) -> None:
    email = f"root{uuid.uuid4().hex[:6]}@example.com"
    code, out = run("users", "create-admin", "--email", email, "--password", "a long admin secret")
    assert code == 0, out
    assert "admin created" in out
    code, out = run("users", "create-admin", "--email", email, "--password", "a long admin secret")
    assert code == 0
    assert "granted" in out
    code, out = run("users", "create-admin", "--email", "x@example.com", "--password", "password")
    assert code == 2


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
    code, out = run("keys", "retire", live[-1]["kid"])
    assert code == 0, out
    code, out = run("keys", "retire", "no-such-kid")
    assert code == 4
    for key in json.loads(run("keys", "list", "--json")[1]):
        if key["retired_at"] is None and key["kid"] != keys[0]["kid"]:
            assert run("keys", "retire", key["kid"])[0] == 0
    code, out = run("keys", "retire", keys[0]["kid"])
    assert code == 1
    assert "last live" in out
