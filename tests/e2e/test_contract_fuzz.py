"""Each API against its own OpenAPI document: ``schemathesis run --checks all``, with a
valid token, on the real processes (uvicorn, PostgreSQL, Redis, RabbitMQ).

The checks cover server errors, status codes and bodies as documented, content types,
headers (``Location``), schema-valid requests accepted and schema-invalid ones refused,
``Allow`` on ``OPTIONS``, methods not allowed, ignored authentication. A few dozen examples
per operation, a fixed seed (a failure is reproducible), bounded in time.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.stack import Stack, running_stack
from tests.support import env_for, isolated_settings

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
PASSWORD = "contract fuzzing passphrase"
EXAMPLES = 25
SEED = 17
MAX_TIME_S = 60
"""Per API: the coverage phase alone would generate thousands of cases."""


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    # The auth run sends a few hundred logins and sign-ups from this one address: with the
    # per-client limits at their defaults, every later run's own login would answer 429.
    limits = {"login_max_attempts_per_client": 100_000, "register_max_per_client": 100_000,
              "upload_max_per_minute": 100_000}
    with (
        isolated_settings("fuzz", **limits) as settings,
        running_stack(settings, with_admin=True) as s,
    ):
        yield s


def admin_token(stack: Stack) -> str:
    """A fresh admin (every route reachable), logged in: each API run gets its own token,
    since the auth run logs out."""
    email = f"fuzz{uuid.uuid4().hex[:8]}@example.com"
    made = subprocess.run(
        [sys.executable, "-m", "amsctl", "users", "create-admin", "--email", email,
         "--password-stdin"], input=PASSWORD + "\n", cwd=ROOT, env=env_for(stack.settings),
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert made.returncode == 0, made.stderr
    login = httpx.post(f"{stack.auth_url}/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return str(login.json()["access_token"])


@pytest.mark.parametrize("api", ["auth", "users", "admin"])
def test_api_keeps_its_openapi_contract(stack: Stack, api: str, tmp_path: Path) -> None:
    url = {"auth": stack.auth_url, "users": stack.users_url, "admin": stack.admin_url}[api]
    binary = Path(sys.executable).with_name("schemathesis")
    done = subprocess.run(
        [str(binary), "--config-file", str(CONFIG), "run", f"{url}/schema/openapi.json",
         "--checks", "all", "--header", f"Authorization: Bearer {admin_token(stack)}",
         "--max-examples", str(EXAMPLES), "--seed", str(SEED), "--generation-database", "none",
         "--request-timeout", "10", "--max-time", str(MAX_TIME_S), "--no-color"],
        # schemathesis keeps a cache of failures in its working directory: not in the repo.
        cwd=tmp_path, capture_output=True, text=True, timeout=MAX_TIME_S + 180, check=False,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
    )
    summary = done.stdout[done.stdout.rfind("SUMMARY"):]
    print(f"\n--- {api}\n{summary}")
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-3000:]
    assert re.search(r"\d+ generated", summary), summary
