"""scripts/run.sh supervises a Procfile with honcho: prefixed interleaved logs, and Ctrl-C
(SIGINT) or SIGTERM stops every process; ``--check`` refuses a Procfile whose modules are
missing; scripts/healthcheck.py (the containers' health check) tells 2xx from the rest.

The Procfiles here run small stdlib HTTP servers, so no shared service is touched.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "scripts" / "run.sh"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The interpreter running the tests (a venv without .venv in the worktree) comes first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _wait(predicate: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_check_lists_missing_modules_and_fails(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        "cli: python -m amsctl --help\nghost: X=1 python -m no_such_pkg_for_run_check serve\n"
    )
    result = subprocess.run(
        ["bash", str(RUN), "--check"], env={**_env(), "PROCFILE": str(procfile)},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1
    assert "cli" in result.stdout
    assert "ghost      missing" in result.stdout
    assert "no_such_pkg_for_run_check" in result.stderr


def test_check_passes_when_every_module_exists(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text("cli: python -m amsctl --help\nweb: python -m http.server\n")
    result = subprocess.run(
        ["bash", str(RUN), "--check"], env={**_env(), "PROCFILE": str(procfile)},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "all 2 processes can start" in result.stdout


def test_check_of_the_project_procfile_names_every_process() -> None:
    """On a branch where some packages are not merged yet it fails, naming them."""
    result = subprocess.run(
        ["bash", str(RUN), "--check"], env=_env(), capture_output=True, text=True, timeout=60,
        check=False,
    )
    names = ["auth", "users", "admin", "relay", "profiles", "ocr", "documents", "saga"]
    for name in names:
        assert f"check: {name}" in result.stdout
    missing = result.stdout.count(" missing ")
    assert (result.returncode == 0) == (missing == 0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_run_supervises_and_stops_every_process(tmp_path: Path, sig: signal.Signals) -> None:
    ports = [_free_port(), _free_port()]
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        f"alpha: python -m http.server {ports[0]} --bind 127.0.0.1\n"
        f"beta: TAG=b python -m http.server {ports[1]} --bind 127.0.0.1\n"
    )
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["bash", str(RUN), "--no-setup"], env={**_env(), "PROCFILE": str(procfile)},
            stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
        )
        try:
            assert _wait(lambda: all(_listening(p) for p in ports), 30), log.read_text()
            proc.send_signal(sig)
            rc = proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    text = log.read_text()
    assert _wait(lambda: not any(_listening(p) for p in ports), 10), "a process outlived honcho"
    assert rc in {0, 130, -signal.SIGINT, 128 + sig}, text
    assert "all 2 processes can start" in text
    # honcho's interleaved, prefixed stream: one line per process start and stop.
    for name in ("alpha", "beta"):
        assert f"{name}.1 started" in text
        assert f"{name}.1 stopped" in text
        assert re.search(rf"^\d\d:\d\d:\d\d {name}\.1 +\| Serving HTTP", text, re.M), text


def test_run_refuses_to_start_half_a_system(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text("ghost: python -m no_such_pkg_for_run_check\n")
    result = subprocess.run(
        ["bash", str(RUN), "--no-setup"], env={**_env(), "PROCFILE": str(procfile)},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1
    assert "started" not in result.stdout


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 500)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def http_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def _healthcheck(*urls: str) -> int:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "healthcheck.py"), *urls],
        env={**_env(), "HEALTHCHECK_TIMEOUT_S": "2"}, capture_output=True, timeout=30,
        check=False,
    ).returncode


def test_healthcheck_script(http_server: int) -> None:
    base = f"http://127.0.0.1:{http_server}"
    assert _healthcheck(f"{base}/health") == 0
    assert _healthcheck(f"{base}/health", f"{base}/broken") == 1
    assert _healthcheck(f"http://127.0.0.1:{_free_port()}/health") == 1
    assert _healthcheck() == 2
