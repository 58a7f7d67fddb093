"""``amsctl status`` for people: one screen of small tables."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

ATTENTION = {"compensating", "compensation_failed"}


def render(report: dict[str, Any]) -> Group:
    return Group(
        _processes(report["processes"]), _outbox(report["outbox"]),
        _queues(report["queues"], report["dead_letters"]), _sagas(report["sagas"]),
    )


def _processes(rows: list[dict[str, Any]]) -> Table | Text:
    if not rows:
        return Text("processes: none to probe (no Procfile here; use --probe NAME=URL)")
    table = Table("process", "up", "probe", "answer", title="Processes", title_justify="left")
    for r in rows:
        up = Text("up", "green") if r["up"] else Text("DOWN", "bold red")
        table.add_row(r["name"], up, r["url"], r["detail"])
    return table


def _outbox(rows: list[dict[str, Any]]) -> Table:
    table = Table("database", "backlog", "oldest unsent", "retrying", "parked",
                  title="Outbox", title_justify="left")
    for r in rows:
        if "error" in r:
            table.add_row(r["database"], Text(r["error"], "red"), "", "", "")
            continue
        age = r["oldest_age_s"]
        parked = Text(str(r["parked"]), "bold red" if r["parked"] else "")
        table.add_row(r["database"], str(r["backlog"]),
                      "-" if age is None else f"{age:.1f} s", str(r["retrying"]), parked)
    return table


def _queues(queues: dict[str, Any], dead: dict[str, Any]) -> Group | Text:
    if "error" in queues:
        return Text(f"queues: {queues['error']}", "red")
    table = Table("queue", "ready", "unacked", "consumers", title="Queues", title_justify="left")
    for q in queues["queues"]:
        consumers = Text(str(q["consumers"]), "bold red" if q["consumers"] == 0 else "")
        table.add_row(q["name"], str(q["ready"]), str(q["unacked"]), consumers)
    letters = Text("Dead letters: ")
    for i, d in enumerate(dead["queues"]):
        letters.append(("  " if i else "") + f"{d['queue']} {d['messages']}",
                       "bold red" if d["messages"] else "")
    return Group(table, letters)


def _sagas(sagas: dict[str, Any]) -> Text:
    if "error" in sagas:
        return Text(f"sagas: {sagas['error']}", "red")
    text = Text("Sagas: ")
    for i, (status, count) in enumerate(sagas["counts"].items()):
        style = "bold red" if status in ATTENTION and count else ""
        text.append(("  " if i else "") + f"{status} {count}", style)
    return text
