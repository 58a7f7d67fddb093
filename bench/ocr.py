"""OCR benchmark: pages/min per engine and upload->completed latency p50 for one page;
for a page with structure (heading, two columns, list, table), pages/min read from a PDF
text layer beside the same page OCR-ed, and the share of a document's time spent grouping
and storing the hierarchy.

    python bench/ocr.py [--quick]

Uses the worker's default concurrency (``OCR_WORKERS``) and real OCR processes. easyocr
runs on ``OCR_MODEL_DIR`` if it holds the published models, otherwise on models with
random weights generated like the tests do (same architecture, so the same cost). The
latency is measured on an isolated admindb: the upload transaction (row, bytes, outbox
event) -> the OCR job (claim, OCR, store) -> ``completed``; the relay and broker hops
(milliseconds) are not part of it. Floor of the OCR-ed pages/min: tesseract's own
``image_to_data`` on the same image in this process (no rendering, grouping, storing or
process hop). The last line printed is one JSON object.
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
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.admin import services
from apps.admin.ocr import store_pages
from apps.admin.services import UploadLimits, Viewer
from shared.config import Settings
from shared.db import create_engine, session_factory
from shared.documents import sniff
from shared.events import DocumentUploaded
from shared.layout import group_lines, refine_blocks
from tests.documents_support import text_png
from tests.layout_documents import DPI, layout_image, layout_scan_pdf, layout_text_pdf
from tests.ocr_models import write_easyocr_models
from tests.support import isolated_settings
from workers.ocr import OcrJob
from workers.ocr_engines import (
    EngineConfig,
    TesseractEngine,
    easyocr_missing_files,
    tesseract_blocks,
)
from workers.ocr_pool import ProcessOcrRunner
from workers.pages import read_pages
from workers.runtime.context import MessageContext
from workers.text_layer import text_fragments

PAGE = text_png("Invoice 4711 paid on 2026-11-23", size=(1240, 400))


def configs(settings: Settings, model_dir: str) -> dict[str, EngineConfig]:
    base = EngineConfig.from_settings(settings.ocr)
    easy = base.__class__(**{**base.__dict__, "engine": "easyocr"})
    if easyocr_missing_files(easy):
        write_easyocr_models(Path(model_dir))
        easy = easy.__class__(**{**easy.__dict__, "model_dir": model_dir,
                                  "verify_checksums": False})
    tess = base.__class__(**{**base.__dict__, "engine": "tesseract"})
    return {"tesseract": tess, "easyocr": easy}


async def pages_per_minute(settings: Settings, config: EngineConfig, pages: int,
                           content: bytes = PAGE) -> float:
    runner = ProcessOcrRunner(config, UploadLimits.from_settings(settings).document,
                              workers=settings.ocr.workers, timeout_s=600)
    try:
        await runner.warm_up()
        start = time.perf_counter()
        await asyncio.gather(*(runner.run(content) for _ in range(pages)))
        return pages / (time.perf_counter() - start) * 60
    finally:
        await runner.close()


async def latency_p50(settings: Settings, config: EngineConfig, runs: int,
                      content: bytes = PAGE) -> float:
    engine = create_engine(settings.database.admin_url, pool_size=2)
    sessions = session_factory(engine)
    runner = ProcessOcrRunner(config, UploadLimits.from_settings(settings).document,
                              workers=settings.ocr.workers, timeout_s=600)
    job = OcrJob(sessions, runner, lease_s=600)
    samples = []
    try:
        await runner.warm_up()
        for _ in range(runs):
            owner = uuid.uuid4()
            start = time.perf_counter()
            async with sessions() as s, s.begin():
                r = await services.upload_document(s, Viewer(owner), "p", content,
                                                   UploadLimits.from_settings(settings))
            message = DocumentUploaded(document_id=r["document_id"], owner_id=owner,
                                       media_type=sniff(content), size_bytes=len(content))
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
        result["ocr_workers"] = settings.ocr.workers
        for name, config in configs(settings, models).items():
            ppm = asyncio.run(pages_per_minute(settings, config, pages))
            p50 = asyncio.run(latency_p50(settings, config, runs))
            result[f"{name}_pages_per_min"] = round(ppm, 1)
            result[f"{name}_upload_to_completed_p50_ms"] = round(p50, 1)
            print(f"{name}: {ppm:.1f} pages/min, upload->completed p50 {p50:.0f} ms", flush=True)
        tesseract = configs(settings, models)["tesseract"]
        result.update(asyncio.run(structure(settings, tesseract, pages, runs)))
    print(json.dumps(result))


def _median_s(action: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def grouping_costs(rounds: int) -> dict[str, float]:
    """Seconds per page, in this process: the engine's or pdfium's own work vs grouping."""
    import pypdfium2
    import pytesseract

    image = layout_image()
    data = pytesseract.image_to_data(image, lang="eng", output_type=pytesseract.Output.DICT)
    pdf = pypdfium2.PdfDocument(layout_text_pdf())
    page = pdf[0]
    textpage = page.get_textpage()
    scale = DPI / 72
    fragments = text_fragments(textpage, (0.0, page.get_height()), scale)
    costs = {
        "tesseract_engine_s": _median_s(
            lambda: pytesseract.image_to_data(image, lang="eng"), max(1, rounds // 2)),
        "tesseract_grouping_s": _median_s(lambda: refine_blocks(tesseract_blocks(data)), rounds),
        "text_layer_read_s": _median_s(
            lambda: text_fragments(textpage, (0.0, page.get_height()), scale), rounds),
        "text_layer_grouping_s": _median_s(lambda: group_lines(fragments), rounds),
    }
    textpage.close()
    page.close()
    pdf.close()
    return costs


async def storing_cost(settings: Settings, content: bytes, rounds: int) -> float:
    """Seconds to store one document's pages, lines and blocks (one transaction)."""
    limits = UploadLimits.from_settings(settings)
    engine = TesseractEngine(("en",))
    pages = list(read_pages(content, limits.document, engine))
    db = create_engine(settings.database.admin_url, pool_size=2)
    sessions = session_factory(db)
    samples = []
    try:
        for _ in range(rounds):
            async with sessions() as s, s.begin():
                r = await services.upload_document(s, Viewer(uuid.uuid4()), "p", content, limits)
            start = time.perf_counter()
            async with sessions() as s, s.begin():
                await store_pages(s, r["document_id"], pages)
            samples.append(time.perf_counter() - start)
    finally:
        await db.dispose()
    return statistics.median(samples)


async def structure(settings: Settings, config: EngineConfig, pages: int,
                    runs: int) -> dict[str, float]:
    """Text-layer pages beside OCR-ed pages of the same page, and what structure costs."""
    text_pdf, scan_pdf = layout_text_pdf(), layout_scan_pdf()
    text_ppm = await pages_per_minute(settings, config, pages * 5, text_pdf)
    scan_ppm = await pages_per_minute(settings, config, pages, scan_pdf)
    costs = grouping_costs(max(3, runs))
    engine_only_ppm = 60 / costs["tesseract_engine_s"]
    document_s = {
        "ocr": await latency_p50(settings, config, runs, scan_pdf) / 1000,
        "text_layer": await latency_p50(settings, config, runs, text_pdf) / 1000,
    }
    store_s = await storing_cost(settings, scan_pdf, max(3, runs))
    out = {
        "layout_text_layer_pages_per_min": round(text_ppm, 1),
        "layout_ocr_pages_per_min": round(scan_ppm, 1),
        "layout_text_layer_vs_ocr": round(text_ppm / scan_ppm, 1),
        "floor_tesseract_engine_only_pages_per_min": round(engine_only_ppm, 1),
        "layout_ocr_vs_engine_only": round(scan_ppm / engine_only_ppm, 3),
        "layout_ocr_document_p50_ms": round(document_s["ocr"] * 1000, 1),
        "layout_text_layer_document_p50_ms": round(document_s["text_layer"] * 1000, 1),
        "store_pages_lines_blocks_ms": round(store_s * 1000, 2),
        "share_grouping_and_storing_ocr": round(
            (costs["tesseract_grouping_s"] + store_s) / document_s["ocr"], 4),
        "share_grouping_and_storing_text_layer": round(
            (costs["text_layer_grouping_s"] + store_s) / document_s["text_layer"], 4),
        **{k: round(v * 1000, 2) for k, v in (
            ("tesseract_engine_ms", costs["tesseract_engine_s"]),
            ("tesseract_grouping_ms", costs["tesseract_grouping_s"]),
            ("text_layer_read_ms", costs["text_layer_read_s"]),
            ("text_layer_grouping_ms", costs["text_layer_grouping_s"]))},
    }
    print(
        f"layout page: text layer {text_ppm:.0f} pages/min vs OCR {scan_ppm:.1f} pages/min "
        f"({out['layout_text_layer_vs_ocr']}x); tesseract alone (floor) {engine_only_ppm:.1f} "
        f"pages/min; grouping + storing: {out['share_grouping_and_storing_ocr']:.1%} of an "
        f"OCR-ed document, {out['share_grouping_and_storing_text_layer']:.1%} of a text-layer one",
        flush=True,
    )
    return out


if __name__ == "__main__":
    main()
