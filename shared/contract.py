"""What each API's OpenAPI document promises is what it does.

Litestar documents every route that takes input with its own ``400 {status_code, detail,
extra}`` body, which these APIs never send: a malformed body is a 400 in the shared error
shape, an invalid parameter or field a 422 (``shared.http``). :func:`finish` corrects that
in the generated document; :func:`allow_header_middleware` makes ``OPTIONS`` list every
method of a path (Litestar's automatic answer forgets the methods registered after the
first one). The documents are exported to ``docs/openapi/`` by ``scripts/export_contracts.py``.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import re
import sys
import textwrap
from functools import cache
from typing import TYPE_CHECKING, Any

import msgspec
from litestar._openapi.plugin import OpenAPIPlugin
from litestar.enums import ScopeType
from litestar.openapi.spec import Operation

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

OWN = ("apps.", "shared.")
_PARAM_TYPE = re.compile(r"\{(\w+):[^}]+\}")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
ERROR_REF = "#/components/schemas/ErrorBody"
ERROR_SHAPE = (
    "Every error has this shape, whatever its status: `code` is stable and meant for "
    "programs (`not_found`, `conflict`, `validation_failed`, `rate_limited`, "
    "`authentication_failed`, `bad_request`, `dependency_unavailable` …), `message` is for "
    "people, `details` (optional) says which fields were refused and why."
)


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": ERROR_REF}}}}


def finish(schema: dict[str, Any]) -> dict[str, Any]:
    """Correct the generated document in place (idempotent) and return it."""
    for item in schema.get("paths", {}).values():
        for method, operation in item.items():
            if method in METHODS:
                _fix_bad_request(operation)
                _document_invalid_input(operation, item)
                for response in operation.get("responses", {}).values():
                    for header in response.get("headers", {}).values():
                        header.setdefault("schema", {"type": "string"})
    components = schema.get("components", {}).get("schemas", {})
    _close_exact_objects(schema, components)
    docs = struct_field_docs()
    for name, component in components.items():
        for field, prop in component.get("properties", {}).items():
            if not prop.get("description") and field in docs.get(name, {}):
                prop["description"] = docs[name][field]
    if "ErrorBody" in components:
        components["ErrorBody"]["description"] = ERROR_SHAPE
    return schema


def _own_classes() -> dict[str, type]:
    """Name -> class, for the msgspec structs and dataclasses of ``apps`` and ``shared``."""
    found: dict[str, type] = {}
    for module in list(sys.modules.values()):
        if not getattr(module, "__name__", "").startswith(OWN):
            continue
        for cls in vars(module).values():
            if (isinstance(cls, type) and cls.__module__ == module.__name__
                    and (issubclass(cls, msgspec.Struct) or dataclasses.is_dataclass(cls))):
                found[cls.__name__] = cls
    return found


def struct_field_docs() -> dict[str, dict[str, str]]:
    """Class name -> {field: its attribute docstring}, for the msgspec structs and dataclasses
    of ``apps`` and ``shared`` (a docstring under a field is its documentation; msgspec
    itself only puts ``Meta(description=...)`` into a schema). Inherited fields keep theirs."""
    return {name: _field_docs(cls) for name, cls in _own_classes().items()}


@cache
def _field_docs(cls: type) -> dict[str, str]:
    docs: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        if base.__module__.startswith(OWN):
            docs |= _attribute_docs(base)
    return docs


def _attribute_docs(cls: type) -> dict[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):  # defined where there is no source (a REPL)
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split()).replace("``", "`")
    return docs


def _fix_bad_request(operation: dict[str, Any]) -> None:
    responses = operation.get("responses", {})
    documented = responses.get("400")
    if documented is None or _is_error_body(documented):
        return
    if "requestBody" in operation:
        responses["400"] = _error_response(
            "Malformed body: not JSON, or not `multipart/form-data` (code `bad_request`)"
        )
    else:  # only a body can be malformed; parameters that do not validate are a 422
        del responses["400"]


def _document_invalid_input(operation: dict[str, Any], item: dict[str, Any]) -> None:
    """A parameter or body field out of its documented range is a 422 (``shared.http``)."""
    parameters = [*operation.get("parameters", []), *item.get("parameters", [])]
    takes_input = "requestBody" in operation or any(
        (p.get("in") in ("query", "path") and p.get("schema", {}).keys() - {"type", "format"})
        or p.get("in") == "query" for p in parameters
    )
    if takes_input:
        operation.setdefault("responses", {}).setdefault(
            "422", _error_response("Invalid input: a parameter or field out of its range")
        )


def _close_exact_objects(schema: dict[str, Any], components: dict[str, Any]) -> None:
    """``additionalProperties: false`` where it is true: request bodies that refuse unknown
    fields (``forbid_unknown_fields``), and objects only ever sent by the API (it writes
    exactly the declared fields). Request bodies that ignore unknown fields stay open."""
    classes = _own_classes()
    requested = _referenced(
        [op.get("requestBody", {}) for item in schema.get("paths", {}).values()
         for method, op in item.items() if method in METHODS], components)
    for name, component in components.items():
        if component.get("type") != "object" or "properties" not in component:
            continue
        config = getattr(classes.get(name), "__struct_config__", None)
        if name not in requested or (config is not None and config.forbid_unknown_fields):
            component["additionalProperties"] = False


def _referenced(roots: list[Any], components: dict[str, Any]) -> set[str]:
    """Names of the components reachable through ``$ref`` from ``roots``."""
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in seen:
                    seen.add(name)
                    pending.append(components.get(name, {}))
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return seen


def also_served_as(*media_types: str) -> type[Operation]:
    """``operation_class=`` for a route whose 200 body comes in further media types (chosen
    by a parameter): the document lists each of them beside the route's own."""

    @dataclasses.dataclass
    class AlternativeMediaTypes(Operation):
        def __post_init__(self) -> None:
            ok = (self.responses or {}).get("200")
            content = getattr(ok, "content", None)
            if content:
                first = next(iter(content.values()))
                for media_type in media_types:
                    content.setdefault(media_type, first)

    return AlternativeMediaTypes


def _is_error_body(response: dict[str, Any]) -> bool:
    content = response.get("content", {}).get("application/json", {})
    return bool(content.get("schema", {}).get("$ref") == ERROR_REF)


def openapi_document(app: Litestar) -> dict[str, Any]:
    """The document ``/schema/openapi.json`` serves (built once, corrected in place)."""
    return finish(app.plugins.get(OpenAPIPlugin).provide_openapi_schema())


def allow_header_middleware(asgi: ASGIApp, app: Litestar) -> ASGIApp:
    """``Allow`` on an ``OPTIONS`` answer lists every method the matched path has."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or scope.get("method") != "OPTIONS":
            await asgi(scope, receive, send)
            return

        async def send_with_allow(message: Message) -> None:
            if message["type"] == "http.response.start":
                methods = _methods(app, scope.get("path_template"))
                if methods:
                    headers = [(k, v) for k, v in message.get("headers", [])
                               if k.lower() != b"allow"]
                    headers.append((b"allow", ", ".join(methods).encode()))
                    message["headers"] = headers
            await send(message)

        await asgi(scope, receive, send_with_allow)

    return middleware


def _methods(app: Litestar, template: str | None) -> list[str]:
    if template is None:
        return []
    for route in app.routes:
        # The template in the scope has no converters: {id}, where the route says {id:uuid}.
        if _PARAM_TYPE.sub(r"{\1}", route.path) == template:
            return sorted(set(getattr(route, "methods", ())) | {"OPTIONS"})
    return []
