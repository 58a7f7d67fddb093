"""OCR benchmark: pages/min per engine and upload->completed latency p50 for one page.

    python bench/ocr.py [--quick]

Uses the worker's default concurrency (``OCR_WORKERS``) and real OCR processes. easyocr
runs on ``OCR_MODEL_DIR`` if it holds the published models, otherwise on models with
random weights generated like the tests do (same architecture, so the same cost). The
latency is measured on an isolated admindb: the upload transaction (row, bytes, outbox
event) -> the OCR job (claim, OCR, store) -> ``completed``; the relay and broker hops
(milliseconds) are not part of it. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.admin import services
from apps.admin.services import UploadLimits, Viewer
from shared.config import Settings
from shared.db import create_engine, session_factory
from shared.events import DocumentUploaded
from tests.documents_support import text_png
from tests.ocr_models import write_easyocr_models
from tests.support import isolated_settings
from workers.ocr import OcrJob
from workers.ocr_engines import EngineConfig, easyocr_missing_files
from workers.ocr_pool import ProcessOcrRunner
from workers.runtime.context import MessageContext

PAGE = text_png("Invoice 4711 paid on 2026-11-23", size=(1240, 400))


def configs(settings: Settings, model_dir: str) -> dict[str, EngineConfig]:
    base = EngineConfig.from_settings(settings)
    easy = base.__class__(**{**base.__dict__, "engine": "easyocr"})
    if easyocr_missing_files(easy):
        write_easyocr_models(Path(model_dir))
        easy = easy.__class__(**{**easy.__dict__, "model_dir": model_dir,
                                  "verify_checksums": False})
    tess = base.__class__(**{**base.__dict__, "engine": "tesseract"})
    return {"tesseract": tess, "easyocr": easy}


async def pages_per_minute(settings: Settings, config: EngineConfig, pages: int) -> float:
    runner = ProcessOcrRunner(config, UploadLimits.from_settings(settings).document,
                              workers=settings.ocr_workers, timeout_s=600)
    try:
        await runner.warm_up()
        start = time.perf_counter()
        await asyncio.gather(*(runner.run(PAGE) for _ in range(pages)))
        return pages / (time.perf_counter() - start) * 60
    finally:
        await runner.close()


async def latency_p50(settings: Settings, config: EngineConfig, runs: int) -> float:
    engine = create_engine(settings.admin_database_url, pool_size=2)
    sessions = session_factory(engine)
    runner = ProcessOcrRunner(config, UploadLimits.from_settings(settings).document,
                              workers=settings.ocr_workers, timeout_s=600)
    job = OcrJob(sessions, runner, lease_s=600)
    samples = []
    try:
        await runner.warm_up()
        for _ in range(runs):
            owner = uuid.uuid4()
            start = time.perf_counter()
            async with sessions() as s, s.begin():
                r = await services.upload_document(s, Viewer(owner), "p.png", PAGE,
                                                   UploadLimits.from_settings(settings))
            message = DocumentUploaded(document_id=r["document_id"], owner_id=owner,
                                       media_type="image/png", size_bytes=len(PAGE))
            async with sessions() as s, s.begin():
                ctx = MessageContext(
                    message_id=str(uuid.uuid4()), event_type=message.event_type,
                    correlation_id=None, causation_id=None, headers={}, redelivered=False,
                    attempts=0, consumer="ocr",
                )
                await job.handle(s, message, ctx)
            samples.append(time.perf_counter() - start)
    finally:
        await runner.close()
        await engine.dispose()
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small run, under a minute")
    args = parser.parse_args()
    pages, runs = (3, 2) if args.quick else (20, 10)
    result: dict[str, object] = {"quick": args.quick}
    with isolated_settings("bench_ocr") as settings, tempfile.TemporaryDirectory() as models:
        result["ocr_workers"] = settings.ocr_workers
        for name, config in configs(settings, models).items():
            ppm = asyncio.run(pages_per_minute(settings, config, pages))
            p50 = asyncio.run(latency_p50(settings, config, runs))
            result[f"{name}_pages_per_min"] = round(ppm, 1)
            result[f"{name}_upload_to_completed_p50_ms"] = round(p50, 1)
            print(f"{name}: {ppm:.1f} pages/min, upload->completed p50 {p50:.0f} ms", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
