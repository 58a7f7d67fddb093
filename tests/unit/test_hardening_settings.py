"""Settings that would weaken the system are refused when a process starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import Settings, argon2_meets_owasp

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("memory", "time", "ok"), [
    (19456, 2, True), (47104, 1, True), (12288, 3, True), (7168, 5, True),
    (19455, 2, False), (47103, 1, False), (65536, 0, False), (1024, 1, False),
])
def test_argon2_owasp_minimum(memory: int, time: int, ok: bool) -> None:
    assert argon2_meets_owasp(memory, time, 1) is ok
    env = {"ARGON2_MEMORY_KIB": str(memory), "ARGON2_TIME_COST": str(time)}
    if ok:
        Settings.from_env(env)
    else:
        with pytest.raises(ValueError, match="below the OWASP minimum"):
            Settings.from_env(env)
    Settings.from_env(env | {"ARGON2_ALLOW_WEAK": "true"})  # tests may, deliberately


def test_a_process_with_weak_argon2_refuses_to_start() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "apps.auth"], cwd=ROOT, capture_output=True, text=True,
        timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "ARGON2_MEMORY_KIB": "4096",
             "SIGNING_KEY_KEK": "k" * 40},
    )
    assert done.returncode == 2, done.stderr
    assert "below the OWASP minimum" in done.stderr
    assert "Traceback" not in done.stderr
