"""Start the auth service, the users API, the profiles worker and the relay as processes,
as a user would, against isolated settings (``tests.support.isolated_settings``)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import httpx

from shared.config import Settings
from shared.topology_apply import apply_topology

ROOT = Path(__file__).resolve().parents[2]


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that makes ``Settings.from_env()`` equal ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH_", "USERS_", "ADMIN_"))}
    for f in fields(settings):
        env[f.metadata["env"]] = str(getattr(settings, f.name))
    env.update(PYTHONPATH=str(ROOT), **extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def relay_command() -> list[str]:
    """The product's relay when this branch has it, else the test stand-in."""
    if (ROOT / "outbox" / "__main__.py").exists():
        return [sys.executable, "-m", "outbox"]
    return [sys.executable, "-m", "tests.relay_standin", "authdb", "apidb"]


@dataclass
class Stack:
    settings: Settings
    auth_url: str
    users_url: str
    processes: dict[str, subprocess.Popen[bytes]]


@contextmanager
def running_stack(settings: Settings, *, log_level: str = "WARNING") -> Iterator[Stack]:
    auth_port, users_port = free_port(), free_port()
    settings = Settings(
        **{
            **{f.name: getattr(settings, f.name) for f in fields(settings)},
            "auth_port": auth_port,
            "users_port": users_port,
            "log_level": log_level,
            "auth_jwks_url": f"http://127.0.0.1:{auth_port}/.well-known/jwks.json",
            "worker_metrics_port": 0,
            "relay_metrics_port": 0,
        }
    )
    asyncio.run(apply_topology(settings))
    env = env_for(settings)
    commands = {
        "auth": [sys.executable, "-m", "apps.auth"],
        "users": [sys.executable, "-m", "apps.users"],
        "worker": [sys.executable, "-m", "workers", "profiles"],
        "relay": relay_command(),
    }
    processes = {name: subprocess.Popen(cmd, cwd=ROOT, env=env) for name, cmd in commands.items()}
    stack = Stack(
        settings, f"http://127.0.0.1:{auth_port}", f"http://127.0.0.1:{users_port}", processes
    )
    try:
        _wait_ready(stack)
        yield stack
    finally:
        for proc in processes.values():
            proc.terminate()
        for proc in processes.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _wait_ready(stack: Stack, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    for url in (stack.auth_url, stack.users_url):
        while True:
            for name, proc in stack.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}")
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready after {timeout_s}s")
            time.sleep(0.1)
