"""The admin API over HTTP with real admindb and tokens signed by a key made in the test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from apps.admin.app import create_app
from apps.admin.controllers import MAX_OFFSET
from apps.auth import audit
from apps.auth.audit import AuditAction, AuditFilter
from shared.auth import JwksCache, TokenVerifier
from shared.config import Settings
from shared.db import create_engine, session_factory
from tests.admin_support import NoRevocations, StaticJwks, admin_client, files, token
from tests.documents_support import image_bytes, pdf_with_pages, png_claiming, text_png


@pytest.fixture(scope="module")
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    limited = settings.replace(
        upload_max_bytes=200_000, upload_max_pixels=2_000_000, pdf_max_pages=3
    )
    async with admin_client(limited) as c:
        yield c


async def test_upload_then_owner_reads_it(client: AsyncTestClient[Any], settings: Settings) -> None:
    owner = token(settings, uuid.uuid4())
    r = await client.post("/documents", files=files(text_png("hi"), "../x.PNG"), headers=owner)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "pending"
    doc = (await client.get(f"/documents/{body['document_id']}", headers=owner)).json()
    assert (doc["status"], doc["filename"], doc["media_type"]) == ("pending", "x.png", "image/png")
    assert doc["pages"] == []


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"GIF89a" + b"\0" * 100, 415, "unsupported_media_type"),
        (b"%!PS-Adobe fake", 415, "unsupported_media_type"),
        (png_claiming(50_000, 50_000), 422, "validation_failed"),
        (pdf_with_pages(4), 422, "validation_failed"),
        (b"%PDF-1.4 broken", 422, "validation_failed"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 300_000, 413, "request_entity_too_large"),
    ],
)
async def test_bad_uploads_are_refused_and_nothing_stored(
    client: AsyncTestClient[Any], settings: Settings, content: bytes, status: int, code: str
) -> None:
    user = token(settings, uuid.uuid4())
    # The declared type and name say PNG; only the content decides.
    r = await client.post("/documents", files=files(content), headers=user)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    listed = (await client.get("/documents", headers=user)).json()
    assert listed["total"] == 0


async def test_file_over_cap_but_body_within_multipart_room_is_413(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    r = await client.post(
        "/documents", files=files(b"\x89PNG\r\n\x1a\n" + b"\0" * 200_000),
        headers=token(settings, uuid.uuid4()),
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


async def test_visibility_pagination_legal_hold_and_delete(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    alice, bob = token(settings, uuid.uuid4()), token(settings, uuid.uuid4())
    admin = token(settings, uuid.uuid4(), "admin")
    ids = []
    for fmt in ("PNG", "JPEG", "TIFF"):
        r = await client.post("/documents", files=files(image_bytes(fmt), f"s.{fmt.lower()}"),
                              headers=alice)
        ids.append(r.json()["document_id"])
    assert (await client.post("/documents", files=files(pdf_with_pages(2), "a.pdf"),
                              headers=alice)).status_code == 202

    page = (await client.get("/documents?limit=2&offset=0", headers=alice)).json()
    assert (page["total"], len(page["items"])) == (4, 2)
    for offset in (-1, MAX_OFFSET + 1, 2**63):  # past the documented bound: not a 500
        r = await client.get(f"/documents?offset={offset}", headers=alice)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "validation_failed"), r.text
    page = (await client.get(f"/documents?offset={MAX_OFFSET}", headers=alice)).json()
    assert (page["total"], page["items"]) == (4, [])
    assert (await client.get(f"/documents/{ids[0]}", headers=bob)).status_code == 404
    assert (await client.get("/documents", headers=bob)).json()["total"] == 0
    assert (await client.get(f"/documents/{ids[0]}", headers=admin)).status_code == 200
    assert (await client.delete(f"/documents/{ids[0]}", headers=bob)).status_code == 404

    hold = f"/documents/{ids[0]}/legal-hold"
    assert (await client.put(hold, json={"legal_hold": True}, headers=alice)).status_code == 403
    r = await client.put(hold, json={"legal_hold": True}, headers=admin)
    assert r.json() == {"document_id": ids[0], "legal_hold": True}
    r = await client.delete(f"/documents/{ids[0]}", headers=alice)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "legal_hold")
    await client.put(hold, json={"legal_hold": False}, headers=admin)
    assert (await client.delete(f"/documents/{ids[0]}", headers=alice)).status_code == 204
    assert (await client.get(f"/documents/{ids[0]}", headers=alice)).status_code == 404


async def test_no_token_is_401(client: AsyncTestClient[Any]) -> None:
    assert (await client.get("/documents")).status_code == 401


async def test_legal_hold_changes_are_in_the_operator_audit(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    owner_id, admin_id = uuid.uuid4(), uuid.uuid4()
    owner, admin = token(settings, owner_id), token(settings, admin_id, "admin")
    r = await client.post("/documents", files=files(text_png("held")), headers=owner)
    doc = r.json()["document_id"]
    hold = f"/documents/{doc}/legal-hold"
    assert (await client.put(hold, json={"legal_hold": True}, headers=owner)).status_code == 403
    assert (await client.put(hold, json={"legal_hold": True}, headers=admin)).status_code == 200
    missing = f"/documents/{uuid.uuid4()}/legal-hold"
    assert (await client.put(missing, json={"legal_hold": True}, headers=admin)).status_code == 404

    engine = create_engine(settings.database.auth_url, pool_size=1)
    try:
        rows = await audit.list_entries(
            session_factory(engine), AuditFilter(action=AuditAction.DOCUMENT_LEGAL_HOLD)
        )
    finally:
        await engine.dispose()
    mine = [(r.actor, r.target, r.outcome, r.source) for r in reversed(rows)
            if r.actor in {f"user:{owner_id}", f"user:{admin_id}"}]
    assert mine == [
        (f"user:{owner_id}", doc, "denied", "api"),
        (f"user:{admin_id}", doc, "ok", "api"),
        (f"user:{admin_id}", missing.split("/")[2], "denied", "api"),
    ]


async def test_no_audit_table_no_legal_hold(settings: Settings) -> None:
    """A hold that cannot be recorded is not placed: 503 and the document stays unheld."""
    unaudited = settings.replace(
        audit_database_url="postgresql+asyncpg://postgres@127.0.0.1:1/authdb"
    )
    verifier = TokenVerifier(
        JwksCache(StaticJwks()), NoRevocations(),
        issuer=settings.tokens.issuer, audience=settings.tokens.audience,
    )
    admin = token(settings, uuid.uuid4(), "admin")
    async with AsyncTestClient(create_app(unaudited, verifier=verifier)) as c:
        doc = (await c.post("/documents", files=files(text_png("x")), headers=admin)).json()
        r = await c.put(f"/documents/{doc['document_id']}/legal-hold",
                        json={"legal_hold": True}, headers=admin)
        assert r.status_code == 503, r.text
        got = (await c.get(f"/documents/{doc['document_id']}", headers=admin)).json()
        assert got["legal_hold"] is False
async def test_page_image_is_the_page_the_boxes_refer_to(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    owner, stranger = token(settings, uuid.uuid4()), token(settings, uuid.uuid4())
    admin = token(settings, uuid.uuid4(), "admin")
    r = await client.post("/documents", files=files(pdf_with_pages(2), "two.pdf",
                                                    "application/pdf"), headers=owner)
    doc_id = r.json()["document_id"]
    image = await client.get(f"/documents/{doc_id}/pages/2/image", headers=owner)
    assert image.status_code == 200, image.text
    assert image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(image.content)) as page:
        # PDF pages are rendered at OCR_PDF_DPI, as the OCR worker saw them (200 x 100 pt).
        scale = settings.ocr.pdf_dpi / 72
        assert abs(page.width - 200 * scale) <= 1 and abs(page.height - 100 * scale) <= 1
    assert (await client.get(f"/documents/{doc_id}/pages/1/image", headers=admin)).status_code \
        == 200
    assert (await client.get(f"/documents/{doc_id}/pages/3/image", headers=owner)).status_code \
        == 404
    assert (await client.get(f"/documents/{doc_id}/pages/1/image", headers=stranger)).status_code \
        == 404
    assert (await client.get(f"/documents/{doc_id}/pages/1/image")).status_code == 401


async def test_admins_filter_documents_by_owner_status_and_hold(
    client: AsyncTestClient[Any], settings: Settings
) -> None:
    alice_id, bob_id = uuid.uuid4(), uuid.uuid4()
    alice, bob = token(settings, alice_id), token(settings, bob_id)
    admin = token(settings, uuid.uuid4(), "admin")
    a = (await client.post("/documents", files=files(text_png("a")), headers=alice)).json()
    await client.post("/documents", files=files(text_png("b")), headers=bob)
    held = await client.put(f"/documents/{a['document_id']}/legal-hold",
                            json={"legal_hold": True}, headers=admin)
    assert held.status_code == 200
    by_owner = (await client.get("/documents", params={"owner_id": str(bob_id)},
                                 headers=admin)).json()
    assert {d["owner_id"] for d in by_owner["items"]} == {str(bob_id)}
    on_hold = (await client.get("/documents", params={"legal_hold": "true"},
                                headers=admin)).json()
    assert a["document_id"] in [d["id"] for d in on_hold["items"]]
    assert all(d["legal_hold"] for d in on_hold["items"])
    not_held = (await client.get("/documents", params={"legal_hold": "false",
                                                        "owner_id": str(alice_id)},
                                 headers=admin)).json()
    assert not_held["total"] == 0
    pending = (await client.get("/documents", params={"status": "pending",
                                                      "owner_id": str(alice_id)},
                                headers=admin)).json()
    assert pending["total"] == 1
    # An owner filter never widens what a non-admin sees.
    assert (await client.get("/documents", params={"owner_id": str(bob_id)},
                             headers=alice)).json()["total"] == 0
    bad = await client.get("/documents", params={"status": "lost"}, headers=admin)
    assert bad.status_code == 422


@pytest.mark.parametrize(("name", "status"), [
    ("scan.pdf", 415), ("invoice.exe", 415), ("photo.jpeg", 415), ("scan.png", 202),
    ("scan", 202), (".hidden", 202),
])
async def test_a_name_that_contradicts_the_content_is_415(
    client: AsyncTestClient[Any], settings: Settings, name: str, status: int
) -> None:
    """Before, a PNG called scan.pdf was silently stored as scan.png."""
    r = await client.post("/documents", files=files(text_png("x"), name),
                          headers=token(settings, uuid.uuid4()))
    assert r.status_code == status, r.text
    if status == 415:
        assert r.json()["error"]["code"] == "unsupported_media_type"
        assert "the content is PNG" in r.json()["error"]["message"]


async def test_per_user_quota_of_documents_and_bytes(settings: Settings) -> None:
    one = len(text_png("q"))
    limited = settings.replace(upload_quota_documents=2, upload_quota_bytes=3 * one + 10)
    async with admin_client(limited) as c:
        user, other = token(settings, uuid.uuid4()), token(settings, uuid.uuid4())
        codes = [(await c.post("/documents", files=files(text_png("q")), headers=user)
                  ).status_code for _ in range(3)]
        assert codes == [202, 202, 413]
        r = await c.post("/documents", files=files(text_png("q")), headers=user)
        assert r.json()["error"]["code"] == "quota_exceeded"
        assert "most allowed is 2" in r.json()["error"]["message"]
        assert (await c.post("/documents", files=files(text_png("q")), headers=other)
                ).status_code == 202  # a quota is per user
        big = text_png("q" * 40, size=(1800, 900))
        assert len(big) > 3 * one + 10
        r = await c.post("/documents", files=files(big), headers=other)
        assert (r.status_code, r.json()["error"]["code"]) == (413, "quota_exceeded")


async def test_uploads_per_minute_are_limited_per_user(settings: Settings) -> None:
    limited = settings.replace(
        upload_max_per_minute=3, redis_key_prefix=f"u{uuid.uuid4().hex[:8]}:"
    )
    async with admin_client(limited) as c:
        user, other = token(settings, uuid.uuid4()), token(settings, uuid.uuid4())
        codes = [(await c.post("/documents", files=files(text_png("r")), headers=user)
                  ).status_code for _ in range(4)]
        assert codes == [202, 202, 202, 429]
        r = await c.post("/documents", files=files(text_png("r")), headers=user)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert (await c.post("/documents", files=files(text_png("r")), headers=other)
                ).status_code == 202
