"""One consumer table: shared/topology.py declares the consumers, every worker is built from
its spec there, and a worker whose handlers disagree with it refuses to start."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.config import Settings
from shared.events import DeleteProfile, UserRegistered
from shared.topology import CONSUMERS, consumer_spec
from workers import __main__ as workers_main
from workers import registry
from workers.runtime.consumer import Consumer, MisconfiguredConsumer
from workers.runtime.partitions import EXIT_CANNOT_START


async def _handler(*_: object) -> None:
    return None


@pytest.fixture
async def built() -> AsyncIterator[dict[str, Consumer]]:
    """Every registered worker, built as ``python -m workers NAME`` builds it (no I/O)."""
    settings = Settings()
    consumers = {name: factory(settings) for name, factory in registry.CONSUMERS.items()}
    yield consumers
    for consumer in consumers.values():
        for hook in consumer.on_stop:
            await hook()
        if consumer.engine is not None:
            await consumer.engine.dispose()


def test_every_consumer_of_the_topology_is_registered_and_nothing_else() -> None:
    assert sorted(registry.CONSUMERS) == sorted(spec.name for spec in CONSUMERS)


async def test_every_worker_handles_exactly_its_routing_keys(built: dict[str, Consumer]) -> None:
    for name, consumer in built.items():
        spec = consumer_spec(name)
        assert consumer.spec == spec
        assert (consumer.name, consumer.database) == (spec.name, spec.database)
        assert sorted(consumer.handlers) == sorted(spec.routing_keys), name


async def test_partitions_follow_the_topology(built: dict[str, Consumer]) -> None:
    settings = Settings.build(worker_partitions=3)
    for name, consumer in built.items():
        expected = 3 if consumer_spec(name).partitionable else 1
        assert consumer.spec_for(settings).partitions == expected, name


def test_a_missing_handler_is_refused_naming_it() -> None:
    with pytest.raises(MisconfiguredConsumer, match=r"no handler for: profile\.restore"):
        Consumer(
            consumer_spec("profiles"), {UserRegistered: _handler, DeleteProfile: _handler}
        )


def test_a_handler_for_an_unrouted_event_is_refused_naming_it() -> None:
    with pytest.raises(MisconfiguredConsumer, match=r"handled but not routed: user\.registered"):
        Consumer(consumer_spec("documents"), {UserRegistered: _handler})


def test_the_worker_process_exits_3_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def mismatched(_: Settings) -> Consumer:
        return Consumer(consumer_spec("profiles"), {UserRegistered: _handler})

    monkeypatch.setitem(registry.CONSUMERS, "profiles", mismatched)
    # The process's logging set-up would outlive this test (its stderr is captured).
    monkeypatch.setattr(workers_main, "configure_logging", lambda *_, **__: None)
    monkeypatch.setattr(workers_main, "configure_tracing", lambda *_, **__: None)
    assert workers_main.main(["profiles"]) == EXIT_CANNOT_START == 3
    err = capsys.readouterr().err
    assert "worker profiles cannot start" in err
    assert "do not match its routing keys in shared/topology.py" in err
    assert "Traceback" not in err
