"""One API as a real process (``python -m apps.NAME``: uvicorn on a free port), for tests
whose claim needs real sockets and real concurrency (an in-process test client runs one
request at a time)."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from shared.config import Settings
from tests.support import ROOT, env_for, free_port

PORT_FIELDS = {"auth": "auth_port", "users": "users_port", "admin": "admin_port"}


@contextmanager
def live_api(
    settings: Settings,
    name: str = "auth",
    *,
    log: Path | None = None,
    verify: bool | ssl.SSLContext = True,
    scheme: str = "http",
    extra_env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run ``python -m apps.<name>`` with ``settings``; yield its base URL once ``/health``
    answers, stop it (SIGTERM, then SIGKILL) afterwards. ``verify`` is what the readiness
    probe trusts when ``scheme`` is https."""
    port = free_port()
    settings = settings.replace(**{PORT_FIELDS[name]: port})
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", f"apps.{name}"], cwd=ROOT,
        env=env_for(settings, **(extra_env or {})), stdout=out, stderr=subprocess.STDOUT,
    )
    base = f"{scheme}://127.0.0.1:{port}"
    try:
        _wait_healthy(proc, f"{base}/health", verify, log)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if log is not None and not isinstance(out, int):
            out.close()


def _wait_healthy(
    proc: subprocess.Popen[bytes], url: str, verify: bool | ssl.SSLContext, log: Path | None,
    timeout_s: float = 60.0,
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            detail = log.read_text(errors="replace")[-2000:] if log is not None else ""
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}\n{detail}")
        try:
            if httpx.get(url, timeout=1, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} not healthy after {timeout_s}s")
        time.sleep(0.1)
