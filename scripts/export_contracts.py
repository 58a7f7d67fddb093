"""Write the contracts to docs/: each API's OpenAPI document (docs/openapi/NAME.json, exactly
what ``/schema/openapi.json`` serves) and the AsyncAPI document of the events exchange
(docs/asyncapi.yaml, from shared/events.py and shared/topology.py).

    python scripts/export_contracts.py           # rewrite them
    python scripts/export_contracts.py --check   # exit 1, naming the stale files

tests/unit/test_contracts.py fails while a file is stale.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import msgspec  # noqa: E402
from asyncapi_doc import asyncapi_yaml  # noqa: E402 - scripts/, beside this file

from apps.admin.app import create_app as admin  # noqa: E402
from apps.auth.app import create_app as auth  # noqa: E402
from apps.users.app import create_app as users  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.contract import openapi_document  # noqa: E402

OPENAPI_DIR = ROOT / "docs" / "openapi"
ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"


def _apps() -> dict[str, Callable[[Settings], Any]]:
    return {"auth": auth, "users": users, "admin": admin}


def openapi_documents() -> dict[str, dict[str, Any]]:
    """NAME -> the OpenAPI document its API serves (built without connecting anywhere)."""
    # The auth app needs a key-encryption key to be built; no key is ever read here.
    settings = Settings.build(signing_key_kek="openapi-export-builds-the-app-only-" * 2)
    # Through msgspec, as the API serves it (examples are structs).
    return {name: json.loads(msgspec.json.encode(openapi_document(create(settings))))
            for name, create in _apps().items()}


def rendered() -> dict[Path, str]:
    """Every contract file and the text it should hold."""

    files = {
        OPENAPI_DIR / f"{name}.json": json.dumps(doc, indent=2, sort_keys=True) + "\n"
        for name, doc in openapi_documents().items()
    }
    files[ASYNCAPI] = asyncapi_yaml()
    return files


def main(argv: list[str]) -> int:
    files = rendered()
    if "--check" in argv:
        stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run python scripts/export_contracts.py)")
        return 1 if stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
