"""The OCR job on a real admindb, real OCR processes and real engines."""

from __future__ import annotations

import asyncio
import threading
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
from tests.documents_support import pdf_bomb, text_png, tiff_of_pages, truncated_png
from tests.ocr_models import write_easyocr_models
from tests.support import handler_context
from workers.ocr import OcrJob
from workers.ocr_engines import EngineConfig, OcrModelsMissing, preflight
from workers.ocr_pool import OcrCrashed, ProcessOcrRunner


@pytest.fixture(scope="module")
async def sessions(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings.database.admin_url, pool_size=2)
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
            s, Viewer(owner), "scan", content, UploadLimits.from_settings(settings)
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


def runner(settings: Settings, config: EngineConfig, timeout_s: float = 60, workers: int = 1,
           memory_limit_mb: int | None = None) -> ProcessOcrRunner:
    """A real runner with the worker's settings (the default memory limit included)."""
    limits = UploadLimits.from_settings(settings).document
    memory = settings.ocr.memory_limit_mb if memory_limit_mb is None else memory_limit_mb
    return ProcessOcrRunner(config, limits, workers=workers, timeout_s=timeout_s,
                            memory_limit_mb=memory)


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


class PeakRss:
    """Samples the resident memory of a runner's OCR processes (``VmRSS``) every 20 ms."""

    def __init__(self, runner: ProcessOcrRunner) -> None:
        self.runner, self.peak_kib, self._stop = runner, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            for pid in self.runner.pids:
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_kib = max(self.peak_kib, int(line.split()[1]))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def test_a_pdf_bomb_fails_for_good_after_one_retry_in_bounded_memory(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A 600 KB PDF whose content stream inflates to 300 MB of path operators took an OCR
    process to 6.4 GB; under OCR_MEMORY_LIMIT_MB it dies at the limit, is retried once and
    then fails for good, saying why."""
    limit_mb = 512
    bounded = runner(settings, engine_config("fake"), memory_limit_mb=limit_mb)
    job = OcrJob(sessions, bounded, lease_s=60)
    message = await upload(sessions, settings, pdf_bomb(300))
    try:
        await bounded.warm_up()
        with PeakRss(bounded) as rss:
            with pytest.raises(OcrCrashed):  # the first time: retried (maybe a fluke)
                await deliver(job, sessions, message)
            await deliver(job, sessions, message)  # the second time: fails for good
    finally:
        await bounded.close()
    doc = await document(sessions, message.document_id)
    print(f"\nOCR peak RSS for the 300 MB bomb with OCR_MEMORY_LIMIT_MB={limit_mb}: "
          f"{rss.peak_kib / 1024:.0f} MB")
    assert doc["status"] == "failed"
    assert "OCR_MEMORY_LIMIT_MB" in doc["failure_reason"]
    assert "2 tries" in doc["failure_reason"]
    assert 0 < rss.peak_kib < (limit_mb + 64) * 1024


async def test_one_documents_timeout_does_not_kill_other_jobs(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """Two OCR processes: a document that overruns OCR_TIMEOUT_S kills its own process only;
    a job started before that moment in the other process completes (the old pool killed
    every process on a timeout)."""
    pool = runner(settings, engine_config("fake", fake_delay_s=2), timeout_s=4, workers=2)
    job = OcrJob(sessions, pool, lease_s=60)
    slow = await upload(sessions, settings, tiff_of_pages(3))  # 3 pages x 2 s > 4 s
    fast = await upload(sessions, settings, text_png("fast"))  # 1 page, 2 s

    async def fast_later() -> None:
        await asyncio.sleep(2.5)  # still running when the slow one times out at 4 s
        await deliver(job, sessions, fast)

    try:
        await pool.warm_up()
        await asyncio.gather(deliver(job, sessions, slow), fast_later())
    finally:
        await pool.close()
    assert (await document(sessions, slow.document_id))["status"] == "failed"
    assert (await document(sessions, fast.document_id))["status"] == "completed"
