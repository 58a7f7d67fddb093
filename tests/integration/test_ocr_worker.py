"""The OCR job on a real admindb, real OCR processes and real engines."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from apps.admin import services
from apps.admin.models import documents
from apps.admin.services import UploadLimits, Viewer
from outbox.schema import outbox
from shared.config import Settings
from shared.db import create_engine, session_factory
from shared.errors import TransientError
from shared.events import DocumentUploaded
from shared.layout import PageLayout
from tests.documents_support import text_png, truncated_png
from tests.ocr_models import write_easyocr_models
from tests.support import handler_context
from workers.ocr import OcrJob
from workers.ocr_engines import EngineConfig, OcrModelsMissing, preflight
from workers.ocr_pool import ProcessOcrRunner


@pytest.fixture(scope="module")
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings.admin_database_url, pool_size=2)
    yield session_factory(engine)
    await engine.dispose()


def engine_config(engine: str, model_dir: str = "", **kw: Any) -> EngineConfig:
    return EngineConfig(
        engine=engine, model_dir=model_dir, languages=("en",), gpu=False,
        allow_downloads=False, verify_checksums=False, **kw,
    )


class CountingRunner:
    """Wraps a real runner and counts OCR runs."""

    def __init__(self, inner: ProcessOcrRunner) -> None:
        self.inner, self.runs = inner, 0
        self.engine_name = inner.engine_name

    async def run(self, content: bytes) -> list[PageLayout]:
        self.runs += 1
        return await self.inner.run(content)

    async def close(self) -> None:
        await self.inner.close()


async def upload(sessions: async_sessionmaker[AsyncSession], settings: Settings,
                 content: bytes) -> DocumentUploaded:
    owner = uuid.uuid4()
    async with sessions() as s, s.begin():
        result = await services.upload_document(
            s, Viewer(owner), "scan.png", content, UploadLimits.from_settings(settings)
        )
    return DocumentUploaded(
        document_id=result["document_id"], owner_id=owner, media_type="image/png",
        size_bytes=len(content),
    )


async def deliver(job: OcrJob, sessions: async_sessionmaker[AsyncSession],
                  message: DocumentUploaded) -> None:
    """What the runtime does: one transaction around the handler."""
    async with sessions() as s, s.begin():
        await job.handle(s, message, handler_context(message.event_type, "ocr"))


async def document(sessions: async_sessionmaker[AsyncSession], document_id: uuid.UUID,
                   ) -> dict[str, Any]:
    async with sessions() as s:
        return await services.get_document(s, Viewer(uuid.uuid4(), is_admin=True), document_id)


async def events_of(sessions: async_sessionmaker[AsyncSession], document_id: uuid.UUID,
                    ) -> list[str]:
    async with sessions() as s:
        rows = await s.scalars(
            sa.select(outbox.c.event_type)
            .where(outbox.c.aggregate_id == str(document_id)).order_by(outbox.c.id)
        )
        return list(rows)


def runner(settings: Settings, config: EngineConfig, timeout_s: float = 60) -> ProcessOcrRunner:
    limits = UploadLimits.from_settings(settings).document
    return ProcessOcrRunner(config, limits, workers=1, timeout_s=timeout_s)


async def test_tesseract_recognises_rendered_text_once(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    counting = CountingRunner(runner(settings, engine_config("tesseract")))
    job = OcrJob(sessions, counting, lease_s=60)
    try:
        message = await upload(sessions, settings, text_png("Invoice 4711 paid"))
        await deliver(job, sessions, message)
        await deliver(job, sessions, message)  # redelivery
    finally:
        await counting.close()

    doc = await document(sessions, message.document_id)
    assert doc["status"] == "completed", doc["failure_reason"]
    assert doc["engine"] == "tesseract"
    assert "Invoice 4711 paid" in doc["pages"][0]["text"]
    line = doc["pages"][0]["lines"][0]
    assert 0 < line["confidence"] <= 1
    assert len(line["bbox"]) == 4
    assert counting.runs == 1
    assert await events_of(sessions, message.document_id) == [
        "document.uploaded", "document.ocr_completed",
    ]


@pytest.mark.easyocr
async def test_easyocr_pipeline_runs_on_generated_models(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    write_easyocr_models(tmp_path)
    easy = runner(settings, engine_config("easyocr", str(tmp_path)))
    job = OcrJob(sessions, easy, lease_s=60)
    try:
        message = await upload(sessions, settings, text_png("Hello"))
        await deliver(job, sessions, message)
    finally:
        await easy.close()
    doc = await document(sessions, message.document_id)
    assert doc["status"] == "completed", doc["failure_reason"]
    assert doc["engine"] == "easyocr"
    lines = doc["pages"][0]["lines"]
    assert lines, "detection found no text box"
    assert lines[0]["bbox"] == [[0.0, 0.0], [900.0, 0.0], [900.0, 160.0], [0.0, 160.0]]
    assert 0 <= lines[0]["confidence"] <= 1


@pytest.mark.easyocr
async def test_missing_easyocr_models_are_named(tmp_path: Path) -> None:
    with pytest.raises(OcrModelsMissing) as info:
        preflight(engine_config("easyocr", str(tmp_path / "models")))
    message = str(info.value)
    assert "craft_mlt_25k.pth, english_g2.pth" in message
    assert str(tmp_path / "models") in message


async def test_corrupt_file_fails_with_reason_not_retry(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tess = runner(settings, engine_config("tesseract"))
    job = OcrJob(sessions, tess, lease_s=60)
    try:
        message = await upload(sessions, settings, truncated_png())
        await deliver(job, sessions, message)  # no exception: nothing to retry
    finally:
        await tess.close()
    doc = await document(sessions, message.document_id)
    assert doc["status"] == "failed"
    assert "unreadable image" in doc["failure_reason"]
    assert await events_of(sessions, message.document_id) == [
        "document.uploaded", "document.ocr_failed",
    ]


async def test_timeout_fails_the_document_and_the_pool_recovers(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    slow = runner(settings, engine_config("fake", fake_delay_s=30), timeout_s=3)
    job = OcrJob(sessions, slow, lease_s=60)
    try:
        await slow.warm_up()
        message = await upload(sessions, settings, text_png("slow"))
        await deliver(job, sessions, message)
    finally:
        await slow.close()
    doc = await document(sessions, message.document_id)
    assert doc["status"] == "failed"
    assert "longer than 3s" in doc["failure_reason"]


async def test_document_in_progress_elsewhere_is_retried_not_run(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    counting = CountingRunner(runner(settings, engine_config("fake")))
    job = OcrJob(sessions, counting, lease_s=60)
    message = await upload(sessions, settings, text_png("busy"))
    assert await job.claim(message) is not None  # another worker holds it
    with pytest.raises(TransientError, match="being processed"):
        await deliver(job, sessions, message)
    assert counting.runs == 0
    async with sessions() as s:
        status = await s.scalar(
            sa.select(documents.c.status).where(documents.c.id == message.document_id)
        )
    assert status == "processing"
