"""amsctl as an operator meets it: fast help and completion, a version, clear errors instead
of tracebacks, questions before irreversible actions, passwords never on the command line.

Every command runs in a real process (``python -m amsctl``) with every service address
pointing at a closed port (tests/unit/conftest.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import resource
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("sqlalchemy", "litestar", "aio_pika", "asyncpg", "httpx", "redis")
FAST_COMMANDS = [
    ["--help"], ["--version"], ["status", "--help"], ["users", "--help"], ["keys", "--help"],
    ["db", "--help"], ["topology", "--help"],
]


def amsctl(*args: str, env: dict[str, str] | None = None,
           stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amsctl", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=60, check=False, input=stdin, env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def best_of(n: int, argv: list[str], env: dict[str, str] | None = None) -> float:
    """The least CPU time (user + system) of ``n`` runs: unlike wall time, it does not grow
    with what else the machine's two cores are doing."""
    times = []
    for _ in range(n):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=60, check=False,
                       env={**os.environ, **(env or {})})
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(times)


@pytest.mark.parametrize("args", FAST_COMMANDS, ids=" ".join)
def test_help_imports_none_of_the_heavy_libraries(args: list[str]) -> None:
    probe = (
        "import sys, runpy; sys.argv = ['amsctl', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('amsctl', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", probe, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert "LOADED []" in done.stderr, done.stderr[-2000:]


def test_help_and_completion_answer_well_under_half_a_second() -> None:
    """CPU time beyond the interpreter's own start-up, measured in the same run (best of 5)."""
    floor = best_of(5, [sys.executable, "-c", "pass"])
    entry = [sys.executable, "-c", "from amsctl.main import app; app(prog_name='amsctl')"]
    completion = {"_AMSCTL_COMPLETE": "complete_bash", "COMP_WORDS": "amsctl ", "COMP_CWORD": "1"}
    timings = {
        "--help": best_of(5, [*entry, "--help"]),
        "keys --help": best_of(5, [*entry, "keys", "--help"]),
        "completion": best_of(5, entry, env=completion),
    }
    extra = {name: t - floor for name, t in timings.items()}
    print(f"python -c pass {floor * 1000:.0f} ms; amsctl beyond that: "
          + ", ".join(f"{n} {e * 1000:.0f} ms" for n, e in extra.items()))
    assert max(extra.values()) < 0.25, extra


def test_completion_lists_the_command_groups() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from amsctl.main import app; app(prog_name='amsctl')"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "_AMSCTL_COMPLETE": "complete_bash", "COMP_WORDS": "amsctl dlq re",
             "COMP_CWORD": "2"},
    )
    assert done.stdout.split() == ["replay"]


def test_version_and_flags_shown_as_flags() -> None:
    version = amsctl("--version")
    assert version.returncode == 0 and version.stdout.startswith("amsctl ")
    help_text = amsctl("outbox", "status", "--help").stdout
    assert "--json  " in help_text and "<bool>" not in help_text


def test_a_malformed_setting_is_a_usage_error_without_traceback() -> None:
    done = amsctl("outbox", "status", env={"DB_POOL_SIZE": "many"})
    assert done.returncode == 2
    assert "DB_POOL_SIZE='many' is not a valid int" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [
    ["topology", "apply"], ["dlq", "queues"], ["saga", "list"], ["outbox", "status"],
    ["keys", "list"],
], ids=" ".join)
def test_an_unreachable_dependency_is_exit_3_without_traceback(args: list[str]) -> None:
    done = amsctl(*args)
    assert done.returncode == 3, done.stderr
    assert "error:" in done.stderr and "Traceback" not in done.stderr


def test_status_reports_what_it_cannot_reach_and_exits_3() -> None:
    done = amsctl("status", "--json", "--probe", "auth=http://127.0.0.1:9/health")
    assert done.returncode == 3, done.stderr
    report = json.loads(done.stdout)
    assert report["processes"] == [{"name": "auth", "url": "http://127.0.0.1:9/health",
                                    "up": False, "detail": "ConnectError"}]
    assert [o["database"] for o in report["outbox"]] == ["authdb", "apidb", "admindb"]
    assert all("error" in o for o in report["outbox"])
    assert "error" in report["queues"] and "error" in report["sagas"]


def test_status_probes_every_procfile_process() -> None:
    done = amsctl("status", "--json")
    names = [p["name"] for p in json.loads(done.stdout)["processes"]]
    procfile = [line.split(":")[0] for line in (ROOT / "Procfile").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert names == procfile


def test_keys_retire_asks_first_and_does_nothing_without_a_terminal() -> None:
    done = amsctl("keys", "retire", "some-kid", stdin="")
    assert done.returncode == 2
    assert "re-run with --yes" in done.stderr


def test_create_admin_takes_no_password_argument() -> None:
    done = amsctl("users", "create-admin", "--email", "a@example.com", "--password", "x" * 12)
    assert done.returncode == 2 and "No such option" in done.stderr
    done = amsctl("users", "create-admin", "--email", "a@example.com", stdin="")
    assert done.returncode == 2 and "--password-stdin" in done.stderr


def test_create_admin_asks_for_the_password_twice_at_a_terminal() -> None:
    """At a real terminal (a pty) the password is asked for, hidden, and confirmed; then the
    command goes on to authdb (unreachable here: exit 3, said clearly)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: amsctl on the pty
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "amsctl", "users", "create-admin",
                                  "--email", "root@example.com"])
    # The space after each question is written by getpass once echo is off (click writes
    # the question first; getpass's switch flushes anything typed before it).
    screen, status = _answer(pid, fd, [(b"Password: ", b"a long admin secret\n"),
                                       (b"Repeat for confirmation: ", b"a long admin secret\n")])
    assert status == 3, screen
    assert b"a long admin secret" not in screen  # hidden input is not echoed
    assert b"unreachable" in screen


def _answer(pid: int, fd: int, dialogue: list[tuple[bytes, bytes]]) -> tuple[bytes, int]:
    """Type each answer when its question is on the screen; (screen, exit code)."""
    screen, asked = b"", 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if dialogue and dialogue[0][0] in screen[asked:]:
            asked = screen.index(dialogue[0][0], asked) + len(dialogue[0][0])
            os.write(fd, dialogue.pop(0)[1])
        if select.select([fd], [], [], 0.2)[0]:
            with contextlib.suppress(OSError):  # the child closed the terminal
                screen += os.read(fd, 4096)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            while select.select([fd], [], [], 0.2)[0]:  # what it wrote before exiting
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                screen += chunk
            return screen, os.waitstatus_to_exitcode(status)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError(f"amsctl did not finish: {screen!r}")
