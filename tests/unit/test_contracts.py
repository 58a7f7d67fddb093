"""The contracts in docs/ are current, and say everything a client needs.

``docs/openapi/*.json`` is exactly what each API serves at ``/schema/openapi.json``;
``docs/asyncapi.yaml`` is the events exchange as the code defines it. Regenerate both with
``python scripts/export_contracts.py``. The HTTP behaviour behind the OpenAPI documents is
held to them by ``tests/e2e/test_contract_fuzz.py`` (schemathesis).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared import events, topology
from shared.config import Settings
from tests.support import TEST_KEK

ROOT = Path(__file__).resolve().parents[2]
APIS = ("auth", "users", "admin")
METHODS = ("get", "put", "post", "delete", "patch")


def operations(name: str) -> list[tuple[str, str, dict[str, Any]]]:
    doc = json.loads((ROOT / "docs" / "openapi" / f"{name}.json").read_text())
    return [(m.upper(), p, op) for p, item in doc["paths"].items()
            for m, op in item.items() if m in METHODS]


def test_exported_contracts_are_current() -> None:
    done = subprocess.run([sys.executable, "scripts/export_contracts.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("api", APIS)
def test_every_operation_is_named_and_explained(api: str) -> None:
    ids = []
    for method, path, op in operations(api):
        assert re.fullmatch(r"[a-z]+[A-Za-z0-9]*", op["operationId"]), (method, path)
        assert op.get("summary") and op.get("description"), (method, path)
        ids.append(op["operationId"])
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("api", APIS)
def test_errors_are_documented_in_the_shape_they_are_sent(api: str) -> None:
    for method, path, op in operations(api):
        for status, response in op["responses"].items():
            if status.startswith(("4", "5")) and not (path == "/ready" and status == "503"):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
        if "400" in op["responses"]:
            assert "requestBody" in op, f"{method} {path}: 400 without a body to be malformed"


@pytest.mark.parametrize("api", APIS)
def test_created_and_accepted_say_where(api: str) -> None:
    for method, path, op in operations(api):
        for status in ("201", "202"):
            if status in op["responses"]:
                assert "Location" in op["responses"][status].get("headers", {}), (method, path)


@pytest.mark.parametrize("api", APIS)
def test_every_field_is_described_and_every_status_is_an_enum(api: str) -> None:
    doc = json.loads((ROOT / "docs" / "openapi" / f"{api}.json").read_text())
    for name, schema in doc["components"]["schemas"].items():
        for field, prop in schema.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{field} has no description"
            if field in ("status", "kind"):
                assert "enum" in prop or "const" in prop or "$ref" in prop, f"{name}.{field}"


def test_asyncapi_covers_every_event_consumer_and_producer() -> None:
    doc = yaml.safe_load((ROOT / "docs" / "asyncapi.yaml").read_text())
    assert doc["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {cls.event_type for cls in events.CATALOGUE.values()}
    ops = doc["operations"]
    for spec in topology.CONSUMERS:
        for key in spec.routing_keys:
            assert f"{spec.name}_receive_{key.replace('.', '_')}" in ops
    # Every message has a producer found in the code, and its payload schema names its fields.
    for cls in events.CATALOGUE.values():
        channel = cls.event_type.replace(".", "_")
        assert ops[f"publish_{channel}"]["action"] == "send", cls.event_type
        payload = doc["components"]["messages"][cls.__name__]["payload"]
        fields = set(doc["components"]["schemas"][payload["$ref"].rsplit("/", 1)[1]]["properties"])
        assert fields == set(cls.__struct_fields__), cls.event_type


@pytest.mark.parametrize("api", APIS)
def test_options_allows_every_documented_method(api: str) -> None:
    from litestar.testing import TestClient

    from scripts.export_contracts import _apps  # the apps as the export builds them

    client = TestClient(_apps()[api](Settings.build(signing_key_kek=TEST_KEK)))  # no lifespan
    doc = json.loads((ROOT / "docs" / "openapi" / f"{api}.json").read_text())
    for path, item in doc["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "00000000-0000-4000-8000-000000000001", path)
        concrete = concrete.replace("/pages/00000000-0000-4000-8000-000000000001", "/pages/1")
        allowed = set(client.options(concrete).headers["allow"].split(", "))
        assert {m.upper() for m in item if m in METHODS} | {"OPTIONS"} == allowed, path
