"""Check that every process of a Procfile can start: its ``python -m MODULE`` is importable.

Usage: ``python scripts/check_procfile.py [PROCFILE]`` (default: ``Procfile`` beside this
directory). Prints one line per process and exits 1 when any module is missing, 2 when a
line is not of the form ``name: [VAR=value ...] python -m module [args ...]``.

Only the standard library is used, and the modules are located, not imported: a package
that ``python -m`` can run must have a ``__main__`` submodule.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Process:
    """One Procfile entry reduced to what starts it."""

    name: str
    env: dict[str, str]
    module: str
    args: list[str]


class ProcfileError(ValueError):
    """A Procfile line this project does not allow."""


def parse_procfile(text: str) -> list[Process]:
    """Processes of a Procfile; every command must be ``python -m module``."""
    processes: list[Process] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not name.strip():
            raise ProcfileError(f"line {number}: expected 'name: command', got {raw!r}")
        processes.append(_parse_command(number, name.strip(), command))
    return processes


def _parse_command(number: int, name: str, command: str) -> Process:
    words = shlex.split(command)
    env: dict[str, str] = {}
    while words and "=" in words[0] and not words[0].startswith("="):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if len(words) < 3 or words[0] != "python" or words[1] != "-m":
        raise ProcfileError(f"line {number} ({name}): expected 'python -m module', got {command!r}")
    return Process(name=name, env=env, module=words[2], args=words[3:])


def runnable(module: str) -> bool:
    """Whether ``python -m module`` would find something to run (without importing it)."""
    try:
        spec = importlib.util.find_spec(module)
        if spec is None:
            return False
        if spec.submodule_search_locations is None:  # a plain module
            return True
        return importlib.util.find_spec(f"{module}.__main__") is not None
    except (ImportError, ValueError):
        return False


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else ROOT / "Procfile"
    sys.path.insert(0, str(ROOT))
    try:
        processes = parse_procfile(path.read_text(encoding="utf-8"))
    except (OSError, ProcfileError) as exc:
        print(f"check: {exc}", file=sys.stderr)
        return 2
    missing = [p for p in processes if not runnable(p.module)]
    for process in processes:
        state = "missing" if process in missing else "ok"
        command = " ".join(["python -m", process.module, *process.args])
        print(f"check: {process.name:<10} {state:<8} {command}")
    if missing:
        names = ", ".join(sorted({p.module for p in missing}))
        print(
            f"check: cannot start {len(missing)} process(es): nothing runnable as "
            f"python -m {names}",
            file=sys.stderr,
        )
        return 1
    print(f"check: all {len(processes)} processes can start")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
