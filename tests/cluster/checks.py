"""What the harness measures and checks, from the operator's host.

Instruments (added once, after ``migrate``/``topology``, harness-only):

- ``harness_events`` in each database: an ``AFTER INSERT`` trigger on ``outbox`` copies
  every event id, type and aggregate, in the same transaction, so "committed" is exact;
- ``harness.tap``: a quorum queue bound to ``#`` on ``events``, so "delivered by the broker"
  and the order of delivery per aggregate are exact.

Checks after a scenario: committed vs delivered (lost), order per aggregate, effects once
(one profile per user, one OCR outcome per document, one ``user.deleted`` per user; counted
from the follow-up events), every saga final and consistent with the databases, nothing
stuck outside the dead-letter queues, every dead letter with its reason.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from shared.broker import connect_plain
from shared.rabbitmq_admin import ManagementClient

DATABASES = ("authdb", "apidb", "admindb")
TAP = "harness.tap"
FINAL_SAGAS = {"completed", "compensated", "compensation_failed"}

INSTRUMENT_SQL = """
CREATE TABLE IF NOT EXISTS harness_events (
  seq bigserial PRIMARY KEY, event_id uuid NOT NULL, event_type text NOT NULL,
  aggregate_type text NOT NULL, aggregate_id text NOT NULL, outbox_id bigint NOT NULL,
  committed_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE OR REPLACE FUNCTION harness_log() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = public AS $$
BEGIN
  INSERT INTO harness_events (event_id, event_type, aggregate_type, aggregate_id, outbox_id)
  VALUES (NEW.event_id, NEW.event_type, NEW.aggregate_type, NEW.aggregate_id, NEW.id);
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS harness_log ON outbox;
CREATE TRIGGER harness_log AFTER INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION harness_log();
"""


@dataclass
class Probe:
    """Connections of the harness to the deployment (by address: the ops host has no DNS)."""

    pg_host: str
    amqp_url: str
    management: str
    tap_order: list[str] = field(default_factory=list)
    """Message ids in the order the tap received them (first sight)."""
    tap_seen: set[str] = field(default_factory=set)
    tap_copies: int = 0

    def dsn(self, db: str) -> str:
        return f"postgresql://postgres@{self.pg_host}:5432/{db}"

    async def instrument(self) -> None:
        for db in DATABASES:
            conn = await asyncpg.connect(self.dsn(db), timeout=10)
            try:
                await conn.execute(INSTRUMENT_SQL)
            finally:
                await conn.close()

    async def declare_tap(self) -> None:
        connection, _ = await connect_plain(self.amqp_url, name="harness")
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(
                TAP, durable=True, arguments={"x-queue-type": "quorum"}
            )
            await queue.bind("events", routing_key="#")
        finally:
            await connection.close()

    async def drain_tap(self) -> None:
        connection, _ = await connect_plain(self.amqp_url, name="harness")
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=2000)
            queue = await channel.get_queue(TAP)
            while True:
                message = await queue.get(no_ack=True, fail=False, timeout=10)
                if message is None:
                    break
                self.tap_copies += 1
                mid = str(message.message_id)
                if mid not in self.tap_seen:
                    self.tap_seen.add(mid)
                    self.tap_order.append(mid)
        finally:
            await connection.close()

    async def query(self, db: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsn(db), timeout=10)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def backlog(self, *, strict: bool = False) -> dict[str, int]:
        """Unsent outbox rows (older than a second unless ``strict``: all of them), the
        messages ready in the work and retry queues, counted exactly (a passive declare per
        queue), and the messages delivered but not yet acknowledged (``unacked:``, from the
        management API: samples up to 5 s old).

        Ready alone is not the backlog: a quorum queue keeps delivering to the consumers it
        knows, up to their prefetch, and after a partition those may be channels that died
        on the cut-off node. Their messages are neither ready nor handled until the queue's
        leader learns of the death (over the healed link between the nodes, seconds later)
        and returns them."""
        out: dict[str, int] = {}
        age = "" if strict else " WHERE created_at < now() - interval '1 s'"
        for db in DATABASES:
            rows = await self.query(db, "SELECT count(*) AS n FROM outbox" + age)
            out[f"outbox:{db}"] = int(rows[0]["n"])
        queues = [q for q in await asyncio.to_thread(self.queues)
                  if not q["name"].endswith(".dlq") and q["name"] != TAP]
        connection, _ = await connect_plain(self.amqp_url, name="harness")
        try:
            channel = await connection.channel()
            for q in queues:
                declared = await channel.declare_queue(q["name"], passive=True)
                out[f"queue:{q['name']}"] = int(declared.declaration_result.message_count or 0)
                out[f"unacked:{q['name']}"] = int(q.get("messages_unacknowledged") or 0)
        finally:
            await connection.close()
        return out

    def queues(self) -> list[dict[str, Any]]:
        with ManagementClient(self.management, timeout=5) as mgmt:
            return mgmt.queues("/")

    async def committed(self) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = []
        for db in DATABASES:
            rows += [
                {**dict(r), "db": db}  # type: ignore[list-item]
                for r in await self.query(db, "SELECT * FROM harness_events ORDER BY outbox_id")
            ]
        return rows


def read_load(path: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            out[entry["kind"]].append(entry)
    return out


async def verify(probe: Probe, load_file: Path) -> dict[str, Any]:
    """Every check; returns the counts (all problems listed under ``problems``)."""
    await probe.drain_tap()
    committed = await probe.committed()
    problems: list[str] = []
    lost = [r for r in committed if str(r["event_id"]) not in probe.tap_seen]
    if lost:
        problems.append(f"{len(lost)} committed event(s) never reached the broker: "
                        + ", ".join(f"{r['event_type']}:{r['event_id']}" for r in lost[:5]))
    position = {mid: i for i, mid in enumerate(probe.tap_order)}
    per_aggregate: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for r in committed:
        if str(r["event_id"]) in position:
            per_aggregate[(r["db"], r["aggregate_type"], r["aggregate_id"])].append(
                position[str(r["event_id"])])
    out_of_order = [k for k, seq in per_aggregate.items() if seq != sorted(seq)]
    if out_of_order:
        problems.append(f"{len(out_of_order)} aggregate(s) delivered out of commit order")

    follow_ups = Counter((r["event_type"], r["aggregate_id"]) for r in committed)
    duplicated = {k: n for k, n in follow_ups.items() if n > 1 and k[0] in {
        "profile.created", "document.ocr_completed", "document.ocr_failed", "user.deleted",
        "profile.deleted", "documents.deleted"}}
    if duplicated:
        problems.append(f"{len(duplicated)} effect(s) applied more than once: "
                        + ", ".join(f"{t}:{a}" for (t, a) in list(duplicated)[:5]))

    load = read_load(load_file)
    problems += await _effects(probe, load)
    stuck = {k: v for k, v in (await probe.backlog(strict=True)).items() if v}
    if stuck:
        problems.append(f"stuck outside the dead-letter queues: {stuck}")
    return {
        "committed": len(committed), "delivered": len(committed) - len(lost),
        "lost": len(lost), "duplicated": sum(n - 1 for n in duplicated.values()),
        "out_of_order": len(out_of_order), "tap_copies": probe.tap_copies,
        "accepted": {k: len(v) for k, v in load.items() if k != "summary"},
        "refused": [e.get("counts") for e in load.get("summary", [])],
        "problems": problems,
    }


async def pending(probe: Probe, load_file: Path) -> dict[str, int]:
    """Accepted requests whose effect is not there yet (none once the system has settled):
    registered users without a profile, uploads without an OCR outcome, sagas not final."""
    load = read_load(load_file)
    registered = [e["id"] for e in load.get("register", [])]
    uploads = [e["id"] for e in load.get("upload", [])]
    sagas = [e["id"] for e in load.get("delete", [])]
    rows = await probe.query(
        "apidb", "SELECT count(*) AS n FROM profiles WHERE user_id = ANY($1::uuid[])", registered)
    out = {"profiles": len(registered) - int(rows[0]["n"])}
    rows = await probe.query(
        "admindb", "SELECT count(*) AS n FROM documents WHERE id = ANY($1::uuid[]) "
        "AND status IN ('completed', 'failed')", uploads)
    out["ocr"] = len(uploads) - int(rows[0]["n"])
    rows = await probe.query(
        "authdb", "SELECT count(*) AS n FROM sagas WHERE id = ANY($1::uuid[]) "
        "AND status = ANY($2::text[])", sagas, sorted(FINAL_SAGAS))
    out["sagas"] = len(sagas) - int(rows[0]["n"])
    return out


async def _effects(probe: Probe, load: dict[str, list[dict[str, Any]]]) -> list[str]:
    problems: list[str] = []
    registered = {e["id"] for e in load.get("register", [])}
    rows = await probe.query("apidb", "SELECT user_id FROM profiles")
    profiles = {str(r["user_id"]) for r in rows}
    missing = registered - profiles
    if missing:
        problems.append(f"{len(missing)} registered user(s) without a profile")
    uploads = {e["id"] for e in load.get("upload", [])}
    if uploads:
        rows = await probe.query(
            "admindb", "SELECT id, status FROM documents WHERE id = ANY($1::uuid[])",
            list(uploads))
        status = {str(r["id"]): r["status"] for r in rows}
        undone = [d for d in uploads if status.get(d) not in {"completed", "failed"}]
        if undone:
            problems.append(f"{len(undone)} document(s) without an OCR outcome")
        failed = [d for d in uploads if status.get(d) == "failed"]
        if failed:
            problems.append(f"{len(failed)} document(s) failed OCR")
    sagas = {e["id"]: e["user"] for e in load.get("delete", [])}
    if sagas:
        rows = await probe.query("authdb", "SELECT s.id, s.status, u.status AS user_status "
                                 "FROM sagas s JOIN users u ON u.id = s.user_id "
                                 "WHERE s.id = ANY($1::uuid[])", list(sagas))
        archived = {str(r["user_id"]) for r in await probe.query(
            "apidb", "SELECT user_id FROM profiles WHERE deleted_at IS NOT NULL")}
        for r in rows:
            problem = _saga_problem(r, sagas[str(r["id"])] in archived)
            if problem:
                problems.append(problem)
        if len(rows) != len(sagas):
            problems.append(f"{len(sagas) - len(rows)} accepted saga(s) missing")
    return problems


def _saga_problem(row: Any, profile_archived: bool) -> str | None:
    """A saga that is not final, or whose final state its databases contradict."""
    status, user = row["status"], row["user_status"]
    if status not in FINAL_SAGAS:
        return f"saga {row['id']} not final: {status}"
    if status == "completed" and (user != "deleted" or not profile_archived):
        return f"saga {row['id']} completed, yet user {user}, profile archived {profile_archived}"
    if status == "compensated" and (user != "active" or profile_archived):
        return f"saga {row['id']} compensated, yet user {user}, profile archived {profile_archived}"
    return None
