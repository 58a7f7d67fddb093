"""The console's operator views on fakes: what they read, and that file reads stay off the
event loop (a page must not stall every other request of the console)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import cast

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from amsctl.dlq import service as dlq
from amsctl.dlq.audit import AuditLog
from amsctl.dlq.model import DeadLetter, Selection
from frontends.console.services import Operations
from shared.config import Settings
from shared.errors import NotFound


class OneLetter(Operations):
    """The broker side replaced: the dead letter asked for is ``letter`` (or none)."""

    def __init__(self, settings: Settings, letter: DeadLetter | None) -> None:
        super().__init__(settings, cast(async_sessionmaker[AsyncSession], None))
        self.letter = letter

    async def dead_letters(self, selection: Selection, queue: str | None = None
                           ) -> list[DeadLetter]:
        return [self.letter] if self.letter is not None else []


def _audit_log_with_a_replay(path: Path, message_id: str) -> None:
    log = AuditLog.at(str(path))
    op = log.begin("replay", reason="fixed the parser", details={}, actor="ops@example.com")
    op.write("messages", messages=[{"message_id": "someone-else"},
                                   {"message_id": message_id, "to": "profiles"}])


async def test_a_dead_letters_history_is_read_in_a_thread_not_on_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audit_log = tmp_path / "dlq-audit.jsonl"
    _audit_log_with_a_replay(audit_log, "m-1")
    readers: list[threading.Thread] = []
    real_history = dlq.history

    def history(settings: Settings, message_id: str) -> list[dict[str, object]]:
        readers.append(threading.current_thread())
        return real_history(settings, message_id)

    monkeypatch.setattr(dlq, "history", history)
    letter = cast(DeadLetter, object())
    ops = OneLetter(Settings.build(amsctl_audit_log=str(audit_log)), letter)

    found, past = await ops.dead_letter("m-1")

    assert found is letter
    assert [(p["action"], p["who"], p["reason"], p["to"]) for p in past] == [
        ("replay", "ops@example.com", "fixed the parser", "profiles")
    ]
    assert readers, "the history was not read at all"
    assert readers[0] is not threading.main_thread(), "the audit log was read on the loop"


async def test_an_unknown_dead_letter_is_not_found(tmp_path: Path) -> None:
    ops = OneLetter(Settings.build(amsctl_audit_log=str(tmp_path / "none.jsonl")), None)
    with pytest.raises(NotFound, match="m-404"):
        await ops.dead_letter("m-404")
