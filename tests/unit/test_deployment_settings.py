"""Every variable a deployment file sets is one the code reads.

compose once set ``API_HOST`` while the code reads ``HTTP_HOST``: the APIs bound 127.0.0.1
inside their containers, served nothing, and every health check still passed. Here each
variable set by ``docker-compose.yml`` (application services), the ``Procfile``,
``.env.example``, the cluster harness's env file and the examples in the README and
``docs/`` is held against the settings ``shared/config/`` reads; the few that configure
something else (compose itself, the RabbitMQ nodes, a shell) are listed with their reason.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from shared.config import Settings
from tests.cluster.compose import COMPOSE_FILE, ROOT, load, read_env_file, variables_used

SETTINGS = frozenset(row[0] for rows in Settings.documented().values() for row in rows)

NOT_SETTINGS = {
    # compose and the RabbitMQ / PostgreSQL images
    "COMPOSE_PROFILES": "compose: which profiles run (cluster)",
    "RABBITMQ_ERLANG_COOKIE": "compose: the cookie every RabbitMQ node and CLI shares",
    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "rabbitmq-server: the shared cookie",
    "RABBITMQ_CTL_ERL_ARGS": "rabbitmqctl / rabbitmq-queues: the shared cookie",
    "POSTGRES_USER": "postgres image: superuser of the first boot",
    "POSTGRES_PASSWORD": "postgres image: its password",
    "GRAFANA_ADMIN_PASSWORD": "compose: the Grafana admin's password",
    # OpenTelemetry's own variables, read by its SDK when TRACING_ENABLED (shared/tracing.py)
    "OTEL_TRACES_EXPORTER": "OpenTelemetry: otlp, console or none",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "OpenTelemetry: the collector's OTLP/HTTP address",
    "OTEL_SERVICE_NAME": "OpenTelemetry: overrides the process's service name",
    "OTEL_TRACES_SAMPLER": "OpenTelemetry: sampler (parentbased_traceidratio …)",
    "OTEL_TRACES_SAMPLER_ARG": "OpenTelemetry: the sampler's ratio",
    # shells and tools in the docs' examples
    "PROCFILE": "scripts/run.sh: which Procfile to start",
    "VIRTUAL_ENV": "shell: the virtualenv",
    "PATH": "shell",
    "PYTHON": "scripts: the interpreter",
    "PYTHONUNBUFFERED": "Python itself",
    "TORCH_INDEX_URL": "scripts/install.sh --ocr and the Dockerfile: where CPU torch comes from",
    "TORCH_VARIANT": "scripts/install.sh --ocr and the Dockerfile: cpu or cuda build of torch",
    "VENV": "scripts/install.sh: which virtualenv",
    "AMSCTL_DEBUG": "amsctl: show the traceback of an unexpected error",
    "TOKEN": "a shell variable of the README's curl example",
    "PGHOST": "libpq / scripts/services.sh",
    "DEBIAN_FRONTEND": "apt-get",
    "HEALTHCHECK_TIMEOUT_S": "scripts/healthcheck.py",
    "CI": "CI runner",
}

_ASSIGNMENT = re.compile(r"(?<![A-Za-z0-9_$])([A-Z][A-Z0-9_]{2,})=")


def unknown(names: set[str]) -> set[str]:
    """The names that are neither a setting nor a documented non-setting."""
    return {n for n in names if n not in SETTINGS and n not in NOT_SETTINGS}


def compose_app_variables(path: Path = COMPOSE_FILE) -> dict[str, set[str]]:
    """Environment keys of every service that runs the project's code, per service."""
    services = load({"COMPOSE_PROFILES": "cluster"}, path)
    return {
        name: set(service.environment)
        for name, service in services.items()
        if service.command[:2] == ["python", "-m"]
    }


def procfile_variables(text: str) -> set[str]:
    names: set[str] = set()
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        for word in shlex.split(line.partition(":")[2]):
            if "=" not in word:
                break
            names.add(word.split("=", 1)[0])
    return names


def documented_assignments(text: str) -> set[str]:
    """``NAME=value`` written in a Markdown page (code blocks and inline code alike)."""
    return set(_ASSIGNMENT.findall(text))


def test_the_checker_catches_the_misspelt_host_variable(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    data["services"]["auth"]["environment"] = {"API_HOST": "0.0.0.0"}
    broken.write_text(yaml.safe_dump(data))
    assert unknown(compose_app_variables(broken)["auth"]) == {"API_HOST"}
    assert unknown(documented_assignments("run it with `API_HOST=0.0.0.0 make run`")) == {
        "API_HOST"
    }
    assert procfile_variables("w: A_B=1 C_D=2 python -m workers x FOO=bar\n") == {"A_B", "C_D"}


@pytest.mark.parametrize("service", sorted(compose_app_variables()))
def test_compose_sets_only_settings_the_code_reads(service: str) -> None:
    assert unknown(compose_app_variables()[service]) == set(), service


def test_compose_interpolates_only_variables_env_example_documents() -> None:
    example = read_env_file(ROOT / ".env.example")
    used = variables_used(COMPOSE_FILE.read_text())
    assert used <= set(example), f"not in .env.example: {sorted(used - set(example))}"
    commented = {
        line.lstrip("# ").split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if re.match(r"^# ?[A-Z][A-Z0-9_]+=", line)
    }
    assert unknown(set(example) | commented) == set()
    assert set(example) <= used | {"COMPOSE_PROFILES"}, "an .env.example line compose ignores"


def test_the_cluster_harness_env_file_sets_settings() -> None:
    env = read_env_file(ROOT / "tests" / "cluster" / "harness.env")
    assert unknown(set(env)) == set()


def test_procfile_sets_only_settings() -> None:
    names = procfile_variables((ROOT / "Procfile").read_text())
    assert names, "the Procfile sets the metrics ports"
    assert unknown(names) == set()


@pytest.mark.parametrize(
    "page", ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
)
def test_docs_examples_set_only_settings(page: str) -> None:
    assert unknown(documented_assignments((ROOT / page).read_text())) == set(), page


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(
        float(amount) * units[unit] for amount, unit in re.findall(r"(\d+)(ms|s|m|h)", duration)
    )


def test_workers_may_drain_before_compose_kills_them() -> None:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    default = Settings().worker.shutdown_timeout_s
    for name, service in load({}).items():
        if service.command[:3] != ["python", "-m", "workers"]:
            continue
        drain = float(service.environment.get("WORKER_SHUTDOWN_TIMEOUT_S") or default)
        grace = _seconds(str(raw[name].get("stop_grace_period", "10s")))
        assert grace > drain + 5, f"{name}: stop_grace_period {grace}s vs drain {drain}s"
