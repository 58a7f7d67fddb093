"""Rich tables and panels for people (``--json`` output is built in :mod:`amsctl.dlq.cli`)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

from amsctl.dlq.broker import Outcome, QueueInfo
from amsctl.dlq.model import DeadLetter, FailureGroup

ERROR_WIDTH = 60


def ago(value: datetime | None, now: datetime) -> str:
    if value is None:
        return "-"
    return _human(now - value) + " ago"


def _human(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _short(text: str, width: int = ERROR_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def queues_table(queues: list[QueueInfo]) -> Table:
    table = Table(title="Dead-letter queues")
    for col in ("queue", "ready", "unacked", "replays into"):
        table.add_column(col, justify="right" if col in ("ready", "unacked") else "left")
    for q in queues:
        table.add_row(q.name, str(q.messages), str(q.unacked), q.work_queue)
    return table


def letters_table(letters: list[DeadLetter], now: datetime, *, title: str) -> Table:
    table = Table(title=title)
    table.add_column("queue", no_wrap=True)
    table.add_column("message id", no_wrap=True)
    table.add_column("routing key", no_wrap=True)
    table.add_column("error", ratio=1, overflow="fold")
    table.add_column("tries", justify="right")
    table.add_column("last failure", no_wrap=True)
    for dl in letters:
        error = f"{dl.error_type}: {dl.error_message}" if dl.error_type else dl.error_message
        replays = f" (replayed {len(dl.replays)}x)" if dl.replays else ""
        table.add_row(dl.queue, dl.message_id, dl.routing_key, _short(error) + replays,
                      str(dl.attempts), ago(dl.last_failure_at, now))
    return table


def groups_table(groups: list[FailureGroup], now: datetime) -> Table:
    table = Table(title="Dead letters by failure fingerprint")
    for col in ("fingerprint id", "count", "error type @ where", "queues", "first seen",
                "last seen", "sample error"):
        table.add_column(col, justify="right" if col == "count" else "left")
    for g in groups:
        table.add_row(g.fingerprint_id, str(g.count), g.fingerprint, ", ".join(sorted(g.queues)),
                      ago(g.first_seen, now), ago(g.last_seen, now), _short(g.sample_error, 40))
    return table


def letter_panel(dl: DeadLetter, now: datetime, audit: list[dict[str, Any]]) -> Panel:
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    for key, value in (
        ("message id", dl.message_id), ("type", dl.type), ("routing key", dl.routing_key),
        ("dead-letter queue", f"{dl.queue} (position {dl.position})"),
        ("replays into", dl.failed_queue), ("correlation id", dl.correlation_id or "-"),
        ("error", f"{dl.error_type}: {dl.error_message}"), ("raised at", dl.error_where or "-"),
        ("fingerprint", f"{dl.fingerprint_id}  {dl.fingerprint}"), ("attempts", str(dl.attempts)),
        ("first failure", f"{_iso(dl.first_failure_at)} ({ago(dl.first_failure_at, now)})"),
        ("last failure", f"{_iso(dl.last_failure_at)} ({ago(dl.last_failure_at, now)})"),
    ):
        facts.add_row(key, value)
    parts: list[Any] = [facts, "", "[bold]headers[/]",
                        Syntax(json.dumps(dl.headers, indent=2, default=str), "json"),
                        "", "[bold]body[/]", Syntax(dl.body_text(), "json")]
    if dl.traceback:
        parts += ["", "[bold]traceback[/]", Syntax(dl.traceback, "pytb")]
    parts += ["", "[bold]replay history[/]", replays_table(dl.replays, audit)]
    return Panel(Group(*parts), title=f"dead letter {dl.message_id}")


def replays_table(replays: tuple[dict[str, Any], ...], audit: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False)
    for col in ("at", "action", "by", "from", "to", "outcome", "reason"):
        table.add_column(col)
    for r in replays:
        table.add_row(str(r.get("at")), "replay (header)", str(r.get("by")), str(r.get("from")),
                      str(r.get("to", "")), "published", str(r.get("reason") or ""))
    for a in audit:
        table.add_row(str(a.get("at")), str(a.get("action")), str(a.get("who")),
                      str(a.get("queue")), str(a.get("target") or "-"), str(a.get("outcome")),
                      str(a.get("reason") or ""))
    return table


def plan_table(letters: list[DeadLetter], *, action: str) -> Table:
    table = Table(title=f"{action} plan (dry run: nothing changed)")
    for col in ("message id", "type", "from", "to", "error"):
        table.add_column(col)
    for dl in letters:
        target = dl.failed_queue if action == "replay" else "(removed)"
        table.add_row(dl.message_id, dl.type, dl.queue, target, _short(dl.error_type))
    return table


def outcomes_table(outcomes: list[Outcome], *, title: str) -> Table:
    table = Table(title=title)
    for col in ("message id", "type", "from", "to", "error type", "outcome"):
        table.add_column(col)
    for o in outcomes:
        table.add_row(o.message_id, o.type, o.queue, o.target or "(removed)", o.error_type,
                      "ok" if o.ok else f"[red]failed[/] {o.error}")
    return table


def print_summary(console: Console, outcomes: list[Outcome], *, verb: str) -> None:
    ok = sum(o.ok for o in outcomes)
    failed = len(outcomes) - ok
    console.print(f"{verb} {ok} message(s)" + (f", [red]{failed} failed[/]" if failed else ""))


def _iso(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")
