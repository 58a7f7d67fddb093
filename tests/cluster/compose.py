"""Read ``docker-compose.yml`` the way ``docker compose`` does, without a Docker engine.

The cluster harness starts every process with the command and environment of its compose
service, so this module implements the parts of the Compose Specification it needs:
``${VAR}`` / ``${VAR:-default}`` / ``${VAR-default}`` interpolation from an env file,
profiles, and the YAML merge keys (PyYAML resolves ``<<:`` itself).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


class ComposeError(ValueError):
    """The compose file asks for something this reader (or compose itself) refuses."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Substitute ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``; ``$$`` is ``$``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("plain")
        op, default = match.group("op"), match.group("default") or ""
        if op == ":-":
            return env.get(name) or default
        if op == "-":
            return env.get(name, default)
        return env.get(name, "")

    return _VARIABLE.sub(substitute, value)


def variables_used(text: str) -> set[str]:
    """Every variable the compose text interpolates (``${NAME...}`` or ``$NAME``)."""
    return {
        m.group("braced") or m.group("plain")
        for m in _VARIABLE.finditer(text)
        if not m.group("escaped")
    }


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a compose ``.env`` file (comments and blank lines skipped)."""
    env: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            raise ComposeError(f"{path}:{number}: expected KEY=value, got {raw!r}")
        env[key.strip()] = value.strip().strip("'\"")
    return env


@dataclass(frozen=True)
class Service:
    """One compose service after interpolation, as the harness starts it."""

    name: str
    command: list[str]
    environment: dict[str, str]
    hostname: str
    depends_on: dict[str, dict[str, Any]]
    volumes: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    one_shot: bool = False
    profiles: tuple[str, ...] = ()
    image: str = ""

    def env_int(self, name: str) -> int | None:
        value = self.environment.get(name)
        return int(value) if value else None


def _as_env(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, list):
        return dict(str(item).split("=", 1) for item in raw)
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def _as_command(raw: Any) -> list[str]:
    if raw is None:
        return []
    return raw.split() if isinstance(raw, str) else [str(part) for part in raw]


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    return node


def load(
    env: Mapping[str, str] | None = None, path: Path = COMPOSE_FILE
) -> dict[str, Service]:
    """The services active under ``COMPOSE_PROFILES`` of ``env``, interpolated from ``env``."""
    env = dict(env or {})
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or "services" not in data:
        raise ComposeError(f"{path} has no services")
    data = _interpolate_tree(data, env)
    active = {p for p in env.get("COMPOSE_PROFILES", "").split(",") if p}
    services: dict[str, Service] = {}
    for name, raw in data["services"].items():
        profiles = tuple(raw.get("profiles", ()))
        if profiles and not active & set(profiles):
            continue
        depends = raw.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {target: {"condition": "service_started"} for target in depends}
        services[name] = Service(
            name=name,
            command=_as_command(raw.get("command")),
            environment=_as_env(raw.get("environment")),
            hostname=str(raw.get("hostname") or name),
            depends_on=dict(depends),
            volumes=[str(v) for v in raw.get("volumes", [])],
            healthcheck=_as_command((raw.get("healthcheck") or {}).get("test")),
            one_shot=raw.get("restart", "no") == "no" and "healthcheck" not in raw,
            profiles=profiles,
            image=str(raw.get("image", "")),
        )
    for name, service in services.items():
        for target, rule in service.depends_on.items():
            if target not in services and rule.get("required", True):
                raise ComposeError(f"{name} depends on {target}, which is not active")
    return services


def start_order(services: Mapping[str, Service]) -> list[str]:
    """Services in an order that satisfies every active ``depends_on`` (stable by file order)."""
    done: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in path:
            raise ComposeError(f"depends_on cycle: {' -> '.join((*path, name))}")
        for target in services[name].depends_on:
            if target in services:
                visit(target, (*path, name))
        done.append(name)

    for name in services:
        visit(name, ())
    return done
