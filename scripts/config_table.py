"""Print (or, with --write, refresh in README.md) the configuration table from shared/config/."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.config import GROUPS, Settings  # noqa: E402

BEGIN, END = "<!-- config-table:begin -->", "<!-- config-table:end -->"


def table() -> str:
    """One table per settings group, each under its name (``settings.<group>``) and purpose."""
    parts = []
    for group, variables in Settings.documented().items():
        rows = [f"**`{group}`**: {GROUPS[group].__doc__}", ""]
        rows += ["| variable | default | meaning |", "|---|---|---|"]
        for env, default, doc in variables:
            text = " ".join(doc.split()).replace("|", "\\|")
            rows.append(f"| `{env}` | `{default}` | {text} |")
        parts.append("\n".join(rows))
    return "\n\n".join(parts)


def refreshed(readme: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{BEGIN}\n{table()}\n{END}", readme)


if __name__ == "__main__":
    if "--write" in sys.argv:
        path = ROOT / "README.md"
        path.write_text(refreshed(path.read_text()))
    else:
        print(table())
