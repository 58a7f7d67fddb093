"""Apply :mod:`shared.topology` to a running broker: AMQP declarations plus policies."""

from __future__ import annotations

import asyncio
from urllib.parse import unquote, urlsplit

from shared import topology
from shared.broker import connect_plain, declare_topology, node_urls
from shared.config import Settings
from shared.dlq_migration import migrate_dead_letter_queues
from shared.layout_change import retire_other_layout
from shared.rabbitmq_admin import ManagementClient


def vhost_of(amqp_url: str) -> str:
    """The vhost ``RABBITMQ_URL`` names (``/`` when the path is empty); with several nodes,
    the first node's (every node of a cluster serves the same vhosts)."""
    path = urlsplit(node_urls(amqp_url)[0]).path
    return unquote(path[1:]) if len(path) > 1 else "/"


async def apply_topology(settings: Settings) -> str:
    """Declare exchanges, queues (with the configured retry delays), bindings and policies.

    Idempotent, on RabbitMQ 3.10 and 4.x: queues that exist with other arguments are kept,
    and the policies (which RabbitMQ recommends for dead-lettering and delivery limits, as
    they can change on a live queue) are written with PUT, which replaces them.
    """
    delays = topology.parse_retry_delays(settings.worker.retry_delays)
    topo = topology.deployed(delays, settings.worker.partitions)
    vhost = vhost_of(settings.broker.url)
    types, exchanges, version = await asyncio.to_thread(_broker_state, settings, vhost)
    policies = tuple(
        topology.dead_letter_policy(version) if p == topology.DEAD_LETTER_POLICY else p
        for p in topo.policies
    )
    # Policies first: a dead-letter queue created below must never run without its own.
    await asyncio.to_thread(put_policies, settings, policies)
    connection, _ = await connect_plain(settings.broker.url, name="amsctl topology")
    try:
        dlqs = [q for q in topo.queues if q.name.endswith(".dlq")]
        migrated = await migrate_dead_letter_queues(connection, dlqs, types)
        specs = tuple(s.with_partitions(settings.worker.partitions) for s in topology.CONSUMERS)
        retired = await retire_other_layout(connection, specs, delays, set(types), exchanges)
        channel = await connection.channel()
        kept = await declare_topology(channel, topo)
    finally:
        await connection.close()
    operator = await asyncio.to_thread(grant_operator, settings, vhost)
    summary = (
        f"declared {len(topo.exchanges)} exchange(s), {len(topo.queues)} queue(s), "
        f"{len(topo.bindings)} binding(s), {len(policies)} policy(ies)"
    )
    if migrated:
        summary += "; moved to quorum dead-letter queues: " + ", ".join(
            f"{name} ({count} message(s))" for name, count in migrated.items()
        )
    if kept:
        summary += f"; kept existing queue(s) with other arguments: {', '.join(kept)}"
    if retired:
        summary += (
            "; unbound the other partition layout, whose queue(s) still hold messages: "
            + ", ".join(retired)
        )
    return f"{summary}; {operator}"


def _broker_state(settings: Settings, vhost: str) -> tuple[dict[str, str], set[str], int]:
    """Queue name -> type and the exchanges in ``vhost``, and the broker's major version."""
    with ManagementClient(settings.broker.management_url) as mgmt:
        types = {q["name"]: str(q.get("type", "classic")) for q in mgmt.queues(vhost)}
        exchanges = {str(e["name"]) for e in mgmt.exchanges(vhost)}
        version = str(mgmt.overview().get("rabbitmq_version", "3"))
    return types, exchanges, int(version.split(".", maxsplit=1)[0] or 3)


def grant_operator(settings: Settings, vhost: str) -> str:
    """Give the operator's broker user exactly :data:`shared.topology.OPERATOR_PERMISSIONS`
    in ``vhost`` (created first when ``RABBITMQ_OPERATOR_PASSWORD`` is set); idempotent.
    Returns what was done, for the summary."""
    user = settings.broker.operator_user
    if not user:
        return "operator user: none configured (RABBITMQ_OPERATOR_USER is empty)"
    password = settings.broker.operator_secret()
    perms = topology.OPERATOR_PERMISSIONS
    with ManagementClient(settings.broker.management_url) as mgmt:
        if password:
            mgmt.put_user(user, password, tags="monitoring")
        elif not mgmt.user_exists(user):
            return (
                f"operator user {user!r} does not exist and RABBITMQ_OPERATOR_PASSWORD is not "
                "set: not created, no permissions written"
            )
        mgmt.put_permissions(
            vhost, user, configure=perms.configure, write=perms.write, read=perms.read
        )
    return (
        f"operator user {user!r} in vhost {vhost!r}: configure {perms.configure}, "
        f"write {perms.write}, read {perms.read}"
    )


def put_policies(settings: Settings, policies: tuple[topology.Policy, ...]) -> None:
    vhost = vhost_of(settings.broker.url)
    with ManagementClient(settings.broker.management_url) as mgmt:
        for policy in policies:
            mgmt.put_policy(vhost, policy.name, {
                "pattern": policy.pattern,
                "apply-to": policy.apply_to,
                "definition": policy.definition,
                "priority": policy.priority,
            })
