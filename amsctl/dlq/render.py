"""Rich tables and panels for people (``--json`` output is built in :mod:`amsctl.dlq.cli`)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any

from rich.console import Console, Group
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from amsctl.dlq.broker import Outcome, QueueInfo
from amsctl.dlq.model import DeadLetter, FailureGroup

ERROR_WIDTH = 60
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""Control characters (terminal escape sequences start with ESC) other than tab and newline."""


def clean(value: object) -> str:
    """Message-borne text made harmless for a terminal: control characters shown as \ufffd."""
    return _CONTROL.sub("\ufffd", str(value))


def safe(value: object) -> Text:
    """Message-borne text for a table cell: no Rich markup, no terminal escapes."""
    return Text(clean(value))


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
        table.add_row(safe(dl.queue), safe(dl.message_id), safe(dl.routing_key),
                      safe(_short(error) + replays), str(dl.attempts), ago(dl.last_failure_at, now))
    return table


def groups_table(groups: list[FailureGroup], now: datetime) -> Table:
    table = Table(title="Dead letters by failure fingerprint")
    for col in ("fingerprint id", "count", "error type @ where", "queues", "first seen",
                "last seen", "sample error"):
        table.add_column(col, justify="right" if col == "count" else "left")
    for g in groups:
        table.add_row(safe(g.fingerprint_id), str(g.count), safe(g.fingerprint),
                      safe(", ".join(sorted(g.queues))), ago(g.first_seen, now),
                      ago(g.last_seen, now), safe(_short(g.sample_error, 40)))
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
        facts.add_row(key, safe(value))
    # json.dumps escapes control characters itself; the body and traceback are cleaned.
    parts: list[Any] = [facts, "", "[bold]headers[/]",
                        Syntax(json.dumps(dl.headers, indent=2, default=str), "json"),
                        "", "[bold]body[/]", Syntax(clean(dl.body_text()), "json")]
    if dl.traceback:
        parts += ["", "[bold]traceback[/]", Syntax(clean(dl.traceback), "pytb")]
    parts += ["", "[bold]replay history[/]", replays_table(dl.replays, audit)]
    return Panel(Group(*parts), title=safe(f"dead letter {dl.message_id}"))


def replays_table(replays: tuple[dict[str, Any], ...], audit: list[dict[str, Any]]) -> Table:
    table = Table(show_edge=False)
    for col in ("at", "action", "by", "from", "to", "outcome", "reason"):
        table.add_column(col)
    for r in replays:
        table.add_row(safe(r.get("at")), "replay (header)", safe(r.get("by")),
                      safe(r.get("from")), safe(r.get("to", "")), "published",
                      safe(r.get("reason") or ""))
    for a in audit:
        table.add_row(safe(a.get("at")), safe(a.get("action")), safe(a.get("who")),
                      safe(a.get("queue")), safe(a.get("target") or "-"), safe(a.get("outcome")),
                      safe(a.get("reason") or ""))
    return table


def plan_table(letters: list[DeadLetter], *, action: str) -> Table:
    table = Table(title=f"{action} plan (dry run: nothing changed)")
    for col in ("message id", "type", "from", "to", "error"):
        table.add_column(col)
    for dl in letters:
        target = dl.failed_queue if action == "replay" else "(removed)"
        table.add_row(safe(dl.message_id), safe(dl.type), safe(dl.queue), safe(target),
                      safe(_short(dl.error_type)))
    return table


def outcomes_table(outcomes: list[Outcome], *, title: str) -> Table:
    table = Table(title=title)
    for col in ("message id", "type", "from", "to", "error type", "outcome"):
        table.add_column(col)
    for o in outcomes:
        outcome = Text("ok") if o.ok else Text.assemble(("failed ", "red"), clean(o.error))
        table.add_row(safe(o.message_id), safe(o.type), safe(o.queue),
                      safe(o.target or "(removed)"), safe(o.error_type), outcome)
    return table


def print_summary(console: Console, outcomes: list[Outcome], *, verb: str) -> None:
    ok = sum(o.ok for o in outcomes)
    failed = len(outcomes) - ok
    console.print(f"{verb} {ok} message(s)" + (f", [red]{failed} failed[/]" if failed else ""))


def _iso(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")
