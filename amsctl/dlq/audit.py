"""The append-only audit log of replays and purges (JSON lines).

Each operation writes a ``start`` record (who, why, what was asked for) before it
touches anything, one ``messages`` record per settled window (which message ids, from
where, to where, outcome) and an ``end`` record with the totals. A run that was killed
has a ``start`` and no ``end``: its ``messages`` records still say what was moved.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def who() -> str:
    """The operating-system user and host running the command."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid:{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


@dataclass
class AuditLog:
    path: Path

    @classmethod
    def at(cls, path: str) -> AuditLog:
        return cls(Path(path).expanduser())

    def begin(self, action: str, *, reason: str | None, details: dict[str, Any],
              actor: str | None = None) -> Operation:
        """Record the start of an operation; fails (OSError) before anything is changed.
        ``actor`` names who asks (the console's admin); default: the OS user and host."""
        op = Operation(self, uuid.uuid4().hex, action, actor or who(), reason)
        op.write("start", **details)
        return op

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, default=str, separators=(",", ":")) + "\n"
        # O_APPEND: concurrent operators never interleave partial lines.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def records(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash is skipped, not fatal

    def history(self, message_id: str) -> list[dict[str, Any]]:
        """Every replay or purge outcome of one message, oldest first, with who and why."""
        starts: dict[str, dict[str, Any]] = {}
        found: list[dict[str, Any]] = []
        for record in self.records():
            if record.get("event") == "start":
                starts[record["op_id"]] = record
            elif record.get("event") == "messages":
                for item in record.get("messages", []):
                    if item.get("message_id") == message_id:
                        start = starts.get(record["op_id"], {})
                        found.append({
                            "at": record["at"], "op_id": record["op_id"],
                            "action": record["action"], "who": record["who"],
                            "reason": start.get("reason"), **item,
                        })
        return found


@dataclass
class Operation:
    log: AuditLog
    op_id: str
    action: str
    who: str
    reason: str | None

    def write(self, event: str, **details: Any) -> None:
        self.log.append({
            "at": datetime.now(UTC).isoformat(), "op_id": self.op_id, "event": event,
            "action": self.action, "who": self.who, "reason": self.reason, **details,
        })
