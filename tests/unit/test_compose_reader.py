"""The cluster harness reads docker-compose.yml as compose does: interpolation, profiles,
env files, start order."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cluster.compose import (
    ComposeError,
    interpolate,
    load,
    read_env_file,
    start_order,
    variables_used,
)


def test_interpolation_follows_the_compose_specification() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET}-${UNSET}-$SET", env) == "x--x"
    assert interpolate("${EMPTY:-d}|${EMPTY-d}|${UNSET-d}|${UNSET:-d}", env) == "d||d|d"
    assert interpolate("cost $$5", env) == "cost $5"
    assert variables_used("a ${A:-1} $B $$C") == {"A", "B"}


def test_env_file_refuses_what_is_not_key_value(tmp_path: Path) -> None:
    good = tmp_path / "good.env"
    good.write_text("# comment\n\nA=1\nB = 'two'\n")
    assert read_env_file(good) == {"A": "1", "B": "two"}
    bad = tmp_path / "bad.env"
    bad.write_text("A=1\nnot a line\n")
    with pytest.raises(ComposeError, match=r"bad\.env:2"):
        read_env_file(bad)


def test_profiles_and_start_order_of_the_real_file() -> None:
    single = load({})
    cluster = load({"COMPOSE_PROFILES": "cluster"})
    assert "rabbitmq-2" not in single
    assert {"rabbitmq-2", "rabbitmq-3", "rabbitmq-cluster"} <= set(cluster)
    order = start_order(cluster)
    assert order.index("rabbitmq-cluster") > order.index("rabbitmq-3")
    assert order.index("topology") > order.index("rabbitmq-cluster")
    assert order.index("relay") > order.index("migrate")
    assert cluster["auth"].environment["HTTP_HOST"] == "0.0.0.0"
    urls = load({"COMPOSE_PROFILES": "cluster", "RABBITMQ_URL": "amqp://a/,amqp://b/"})
    assert urls["relay"].environment["RABBITMQ_URL"] == "amqp://a/,amqp://b/"
    assert single["relay"].environment["RABBITMQ_URL"] == "amqp://guest:guest@rabbitmq:5672/"


def test_a_required_dependency_outside_the_profiles_is_refused(tmp_path: Path) -> None:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        "services:\n"
        "  a:\n    image: x\n    depends_on:\n      b:\n        condition: service_healthy\n"
        "  b:\n    image: x\n    profiles: [extra]\n"
    )
    with pytest.raises(ComposeError, match="a depends on b"):
        load({}, compose)
    assert set(load({"COMPOSE_PROFILES": "extra"}, compose)) == {"a", "b"}
