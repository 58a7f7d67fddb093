"""amsctl as an operator meets it: a version, clear errors instead of tracebacks, questions
before irreversible actions, passwords never on the command line, help that imports none of
the heavy libraries.

The commands run in this process (typer's ``CliRunner``, ``prog_name`` ``amsctl``) with every
service address pointing at a closed port (tests/unit/conftest.py). An operator sees a
traceback only when an exception escapes the app, so "no traceback" is checked on the
result's exception as well as on its output. What needs a real process (start-up time
against ``python -c pass``, a password typed at a real terminal) is in
tests/integration/test_amsctl_process.py; the import probe below starts one interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from amsctl.main import app

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("sqlalchemy", "litestar", "aio_pika", "asyncpg", "httpx", "redis")
FAST_COMMANDS = [
    ["--help"], ["--version"], ["status", "--help"], ["users", "--help"], ["keys", "--help"],
    ["db", "--help"], ["topology", "--help"], ["outbox", "--help"], ["outbox", "requeue", "--help"],
    ["dlq", "--help"], ["dlq", "list", "--help"], ["dlq", "replay", "--help"],
    ["saga", "--help"], ["saga", "list", "--help"],
]


def amsctl(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    """``amsctl ARGS`` in this process; an exception escaping the app (a traceback for an
    operator) fails the test here."""
    result = CliRunner().invoke(
        app, list(args), input=stdin, env={"COLUMNS": "200", **(env or {})}, prog_name="amsctl",
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"amsctl {' '.join(args)} raised {result.exception!r}: {result.stderr}"
    )
    return result


def said(text: str) -> str:
    """Output with its line breaks (rich wraps at the console's width) as single spaces."""
    return " ".join(text.split())


def test_help_imports_none_of_the_heavy_libraries() -> None:
    """One fresh interpreter runs each command in turn and lists the heavy modules loaded
    after each; modules only accumulate, so the first command that loads one is named."""
    probe = (
        "import json, runpy, sys\n"
        f"for argv in {FAST_COMMANDS!r}:\n"
        "    sys.argv = ['amsctl', *argv]\n"
        "    try:\n        runpy.run_module('amsctl', run_name='__main__')\n"
        "    except SystemExit:\n        pass\n"
        f"    print('LOADED', json.dumps([argv, sorted(m for m in {HEAVY!r} if m in sys.modules)]),"
        " file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)
    loaded = [json.loads(line.removeprefix("LOADED ")) for line in done.stderr.splitlines()
              if line.startswith("LOADED ")]
    assert [argv for argv, _ in loaded] == FAST_COMMANDS, done.stderr[-2000:]
    assert [(argv, heavy) for argv, heavy in loaded if heavy] == [], done.stderr[-2000:]


def test_completion_lists_the_command_groups() -> None:
    done = amsctl(env={"_AMSCTL_COMPLETE": "complete_bash", "COMP_WORDS": "amsctl dlq re",
                       "COMP_CWORD": "2"})
    assert done.stdout.split() == ["replay"]


def test_version_and_flags_shown_as_flags() -> None:
    version = amsctl("--version")
    assert version.exit_code == 0 and version.stdout.startswith("amsctl ")
    help_text = amsctl("outbox", "status", "--help").stdout
    assert "--json  " in help_text and "<bool>" not in help_text


def test_a_malformed_setting_is_a_usage_error_without_traceback() -> None:
    done = amsctl("outbox", "status", env={"DB_POOL_SIZE": "many"})
    assert done.exit_code == 2
    assert "DB_POOL_SIZE='many' is not a valid int" in said(done.stderr)
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args", [
    ["topology", "apply"], ["dlq", "queues"], ["saga", "list"], ["outbox", "status"],
    ["keys", "list"],
], ids=" ".join)
def test_an_unreachable_dependency_is_exit_3_without_traceback(args: list[str]) -> None:
    done = amsctl(*args)
    assert done.exit_code == 3, done.stderr
    assert "error:" in done.stderr and "Traceback" not in done.stderr


def test_status_reports_what_it_cannot_reach_and_exits_3() -> None:
    done = amsctl("status", "--json", "--probe", "auth=http://127.0.0.1:9/health")
    assert done.exit_code == 3, done.stderr
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
    assert done.exit_code == 2
    assert "re-run with --yes" in said(done.stderr)


def test_create_admin_takes_no_password_argument() -> None:
    done = amsctl("users", "create-admin", "--email", "a@example.com", "--password", "x" * 12)
    assert done.exit_code == 2 and "No such option" in done.stderr
    done = amsctl("users", "create-admin", "--email", "a@example.com", stdin="")
    assert done.exit_code == 2 and "--password-stdin" in said(done.stderr)
