"""A document's structure end to end on a real admindb: upload over HTTP, the OCR job with
real OCR processes (tesseract), then the structure, the text and the search over HTTP."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient
from PIL import Image
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apps.admin.models import DocumentStatus, documents, ocr_pages
from apps.admin.services import UploadLimits
from outbox.schema import outbox
from shared.config import Settings
from shared.db import create_engine, session_factory
from shared.events import DocumentOcrCompleted, DocumentUploaded
from tests.admin_support import admin_client, files, token
from tests.documents_support import truncated_png
from tests.layout_documents import EXPECTED, cer, layout_mixed_pdf, prose_pdf
from tests.support import handler_context
from workers.ocr import OcrJob
from workers.ocr_engines import EngineConfig
from workers.ocr_pool import ProcessOcrRunner

PDF = "application/pdf"

MARKDOWN_PAGE_1 = """# Quarterly Report on Harbour Traffic

The harbour handled more ships this quarter than in any quarter before. Most of the growth \
came from small container vessels on coastal routes.

- Berth four was dredged
- Two cranes were replaced
- Night shifts were added

Waiting times fell by a third while the number of pilots stayed the same. The table below \
lists the busiest berths by ships handled.

| Berth | Ships | Tons |
| --- | --- | --- |
| North | 412 | 9100 |
| South | 388 | 8700 |
| East | 251 | 5300 |
"""


@pytest.fixture(scope="module")
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings.database.admin_url, pool_size=2)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture(scope="module")
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with admin_client(settings) as c:
        yield c


@pytest.fixture(scope="module")
async def job(settings: Settings,
              sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[OcrJob]:
    config = EngineConfig(engine="tesseract", model_dir="", languages=("en",), gpu=False,
                          allow_downloads=False, verify_checksums=True)
    runner = ProcessOcrRunner(config, UploadLimits.from_settings(settings).document, workers=1,
                              timeout_s=120)
    yield OcrJob(sessions, runner, lease_s=120)
    await runner.close()


async def upload_and_process(
    client: AsyncTestClient[Any], job: OcrJob, sessions: async_sessionmaker[AsyncSession],
    headers: dict[str, str], content: bytes, ctype: str = PDF,
) -> str:
    r = await client.post("/documents", files=files(content, "doc", ctype), headers=headers)
    assert r.status_code == 202, r.text
    document_id = uuid.UUID(r.json()["document_id"])
    async with sessions() as s:
        row = (await s.execute(sa.select(documents).where(documents.c.id == document_id))).one()
    message = DocumentUploaded(document_id=document_id, owner_id=row.owner_id,
                               media_type=row.media_type, size_bytes=row.size_bytes)
    async with sessions() as s, s.begin():  # what the runtime does around the handler
        await job.handle(s, message, handler_context(message.event_type, "ocr"))
    return str(document_id)


async def test_mixed_pdf_structure_text_and_summary(
    client: AsyncTestClient[Any], job: OcrJob, sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    owner = token(settings, uuid.uuid4())
    document_id = await upload_and_process(client, job, sessions, owner, layout_mixed_pdf())
    doc = (await client.get(f"/documents/{document_id}", headers=owner)).json()
    assert doc["status"] == "completed", doc["failure_reason"]
    text_page, scanned = doc["pages"]
    assert (text_page["source"], scanned["source"]) == ("text_layer", "ocr")
    assert text_page["scale"] == scanned["scale"] == settings.ocr.pdf_dpi / 72
    for page in doc["pages"]:
        assert [b["kind"] for b in page["blocks"]] == [kind for kind, _ in EXPECTED]
        blocks_lines = [line for b in page["blocks"] for p in b["paragraphs"]
                        for line in p["lines"]]
        # The flat lines stay: the same lines in reading order, boxes as four corners.
        assert [x["text"] for x in page["lines"]] == [x["text"] for x in blocks_lines]
        for flat, line in zip(page["lines"], blocks_lines, strict=True):
            x0, y0, x1, y1 = line["bbox"]
            assert flat["bbox"] == [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
        for block in page["blocks"]:
            assert {"kind", "bbox", "text", "confidence", "paragraphs"} <= block.keys()
            for paragraph in block["paragraphs"]:
                assert {"bbox", "text", "confidence", "lines"} <= paragraph.keys()
                for line in paragraph["lines"]:
                    assert line["words"]
                    for word in line["words"]:
                        assert 0 < word["confidence"] <= 1
                        assert 0 <= word["bbox"][0] < word["bbox"][2] <= page["width"]
    assert [b["text"] for b in text_page["blocks"]] == [text for _, text in EXPECTED]
    for page in doc["pages"]:  # the boxes are in the pixels of the served page image
        png = await client.get(f"/documents/{document_id}/pages/{page['page_no']}/image",
                               headers=owner)
        assert Image.open(io.BytesIO(png.content)).size == (page["width"], page["height"])

    markdown = await client.get(f"/documents/{document_id}/text?format=markdown", headers=owner)
    assert markdown.status_code == 200
    assert markdown.headers["content-type"].startswith("text/markdown")
    first, second = markdown.text.split("\n\n---\n\n")
    assert first + "\n" == MARKDOWN_PAGE_1
    assert cer(MARKDOWN_PAGE_1, second) <= 0.02
    plain = await client.get(f"/documents/{document_id}/text", headers=owner)
    assert plain.headers["content-type"].startswith("text/plain")
    page_1 = plain.text.split("\f")[0]
    assert page_1.startswith("Quarterly Report on Harbour Traffic\n\nThe harbour handled")
    assert "- Berth four was dredged\n- Two cranes were replaced\n" in page_1
    assert "Berth\tShips\tTons\nNorth\t412\t9100\n" in page_1

    async with sessions() as s:
        payload = await s.scalar(sa.select(outbox.c.payload).where(
            outbox.c.aggregate_id == document_id,
            outbox.c.event_type == "document.ocr_completed"))
    event = msgspec.convert(payload, DocumentOcrCompleted)
    words = sum(len(x["words"]) for p in doc["pages"] for b in p["blocks"]
                for para in b["paragraphs"] for x in para["lines"])
    assert (event.pages, event.words, event.sources) == (2, words, {"text_layer": 1, "ocr": 1})
    assert event.mean_confidence is not None
    assert 0.8 < event.mean_confidence < 1


async def test_text_of_unfinished_failed_and_hidden_documents(
    client: AsyncTestClient[Any], job: OcrJob, sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    owner, stranger = token(settings, uuid.uuid4()), token(settings, uuid.uuid4())
    r = await client.post("/documents", files=files(prose_pdf(["not yet"]), "a", PDF),
                          headers=owner)
    pending = r.json()["document_id"]
    answer = await client.get(f"/documents/{pending}/text", headers=owner)
    assert (answer.status_code, answer.headers["retry-after"]) == (404, "2")
    assert "pending" in answer.json()["error"]["message"]
    failed = await upload_and_process(client, job, sessions, owner, truncated_png(), "image/png")
    answer = await client.get(f"/documents/{failed}/text", headers=owner)
    assert answer.status_code == 409
    assert "unreadable image" in answer.json()["error"]["message"]
    async with sessions() as s:  # a failed document stores no page, not half of one
        assert await s.scalar(sa.select(sa.func.count()).select_from(ocr_pages).where(
            ocr_pages.c.document_id == uuid.UUID(failed))) == 0
    assert (await client.get(f"/documents/{failed}/text", headers=stranger)).status_code == 404
    assert (await client.get(f"/documents/{pending}/text?format=html",
                             headers=owner)).status_code == 422


async def test_search_is_ranked_with_snippets_and_sees_only_ones_own(
    client: AsyncTestClient[Any], job: OcrJob, sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    alice_id = uuid.uuid4()
    alice, bob = token(settings, alice_id), token(settings, uuid.uuid4())
    admin = token(settings, uuid.uuid4(), "admin")
    word = f"zeppelin{uuid.uuid4().hex[:6]}"  # a word no other test's document holds
    often = await upload_and_process(client, job, sessions, alice, prose_pdf([
        f"The {word} was moored at the harbour.", f"Every {word} needs a mast;",
        f"the {word} crews trained at night.",
    ]))
    once = await upload_and_process(client, job, sessions, alice, prose_pdf([
        "Cargo figures for the quarter.", f"One {word} visited in March.",
    ]))
    await upload_and_process(client, job, sessions, alice, prose_pdf(["Nothing to see here."]))
    bobs = await upload_and_process(client, job, sessions, bob, prose_pdf([f"Bob's {word}."]))

    found = (await client.get("/documents", params={"q": word}, headers=alice)).json()
    assert [hit["id"] for hit in found["items"]] == [often, once]
    assert found["total"] == 2
    assert found["items"][0]["rank"] > found["items"][1]["rank"]
    assert f"**{word}**" in found["items"][1]["snippet"]
    assert found["items"][1]["page_no"] == 1
    assert found["items"][0]["owner_id"] == str(alice_id)

    everyone = (await client.get("/documents", params={"q": word}, headers=admin)).json()
    assert {hit["id"] for hit in everyone["items"]} == {often, once, bobs}
    bob_only = (await client.get("/documents", params={"q": word}, headers=bob)).json()
    assert [hit["id"] for hit in bob_only["items"]] == [bobs]

    # Stemming, phrases, exclusion; and queries with nothing searchable find nothing.
    stem = await client.get("/documents", params={"q": f"{word} moor"}, headers=alice)
    assert [hit["id"] for hit in stem.json()["items"]] == [often]
    minus = await client.get("/documents", params={"q": f"{word} -march"}, headers=alice)
    assert [hit["id"] for hit in minus.json()["items"]] == [often]
    for q in ("the", "!!!", '"'):
        empty = await client.get("/documents", params={"q": q}, headers=alice)
        assert (empty.status_code, empty.json()["total"]) == (200, 0), q
    assert (await client.get("/documents", params={"q": ""}, headers=alice)).status_code == 422
    paged = await client.get("/documents", params={"q": word, "limit": 1, "offset": 1},
                             headers=alice)
    assert [hit["id"] for hit in paged.json()["items"]] == [once]


async def test_search_uses_the_gin_index(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as s, s.begin():
        await s.execute(sa.text("SET LOCAL enable_seqscan = off"))
        plan = "\n".join(await s.scalars(sa.text(
            "EXPLAIN SELECT document_id FROM ocr_pages "
            "WHERE search @@ websearch_to_tsquery('english'::regconfig, 'harbour')"
        )))
    assert "ocr_pages_search_idx" in plan, plan


async def test_pages_stored_before_blocks_existed_still_give_their_text(
    client: AsyncTestClient[Any], sessions: async_sessionmaker[AsyncSession], settings: Settings,
) -> None:
    owner = token(settings, uuid.uuid4())
    r = await client.post("/documents", files=files(prose_pdf(["x"]), "a", PDF), headers=owner)
    document_id = uuid.UUID(r.json()["document_id"])
    async with sessions() as s, s.begin():  # a page as the worker stored it before admindb_0005
        await s.execute(sa.update(documents).where(documents.c.id == document_id)
                        .values(status=DocumentStatus.COMPLETED))
        await s.execute(sa.insert(ocr_pages).values(
            document_id=document_id, page_no=1, width=10, height=10, text="Old text\nline two"))
    doc = (await client.get(f"/documents/{document_id}", headers=owner)).json()
    assert (doc["pages"][0]["source"], doc["pages"][0]["blocks"]) == ("ocr", [])
    text = await client.get(f"/documents/{document_id}/text?format=markdown", headers=owner)
    assert text.text == "Old text\nline two\n"
    found = await client.get("/documents", params={"q": "old"}, headers=owner)
    assert [hit["id"] for hit in found.json()["items"]] == [str(document_id)]
