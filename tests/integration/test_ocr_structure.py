"""Structure and accuracy with the real tesseract engine on generated pages of known content.

Checks the hierarchy, the reading order (heading, left column, list, right column, table),
the block kinds and the character error rate (CER) against the ground truth; the CER is
printed so that a run shows it (``-s``).
"""

from __future__ import annotations

import io

import pytest

from shared.documents import Limits
from shared.layout import PageLayout, Source
from tests.layout_documents import (
    DPI,
    EXPECTED,
    PROSE,
    cer,
    degraded,
    layout_image,
    layout_mixed_pdf,
    layout_png,
    layout_scan_pdf,
    prose_png,
)
from workers.ocr_engines import TesseractEngine
from workers.pages import read_pages

LIMITS = Limits(max_pixels=40_000_000, max_pages=5, pdf_dpi=DPI)
MAX_CER = 0.02


@pytest.fixture(scope="module")
def tesseract() -> TesseractEngine:
    return TesseractEngine(("en",))


def check_layout_page(page: PageLayout, what: str) -> float:
    kinds = [str(b.kind) for b in page.blocks]
    assert kinds == [kind for kind, _ in EXPECTED], what
    for block, (_, text) in zip(page.blocks, EXPECTED, strict=True):
        assert cer(text, block.text) <= MAX_CER, (what, block.text, text)
        assert all(0 < line.confidence <= 1 for line in block.lines)
        assert all(p.lines and all(line.words for line in p.lines) for p in block.paragraphs)
    rate = cer("\n".join(t for _, t in EXPECTED), "\n".join(b.text for b in page.blocks))
    print(f"\n{what}: CER {rate:.4f} over {len(page.blocks)} blocks in reading order")
    return rate


def test_layout_page_png(tesseract: TesseractEngine) -> None:
    [page] = read_pages(layout_png(), LIMITS, tesseract)
    assert page.source is Source.OCR
    assert check_layout_page(page, "tesseract, PNG") <= MAX_CER
    table = page.blocks[-1]
    assert [len(line.words) for line in table.lines] == [3, 3, 3, 3]


def test_scanned_and_mixed_pdfs(tesseract: TesseractEngine) -> None:
    [scan] = read_pages(layout_scan_pdf(), LIMITS, tesseract)
    assert scan.source is Source.OCR
    assert check_layout_page(scan, "tesseract, scanned PDF") <= MAX_CER
    text_page, scanned = read_pages(layout_mixed_pdf(), LIMITS, tesseract)
    assert (text_page.source, scanned.source) == (Source.TEXT_LAYER, Source.OCR)
    assert check_layout_page(text_page, "mixed PDF, text layer page") == 0
    assert check_layout_page(scanned, "mixed PDF, scanned page") <= MAX_CER


def test_prose_character_accuracy(tesseract: TesseractEngine) -> None:
    [page] = read_pages(prose_png(), LIMITS, tesseract)
    got = "\n".join(b.text for b in page.blocks)
    rate = cer("\n".join(PROSE), got)
    print(f"\ntesseract, prose page: CER {rate:.4f} ({len(' '.join(PROSE))} characters)")
    assert rate <= MAX_CER, got
    assert [len(b.paragraphs) for b in page.blocks] and len(page.blocks) == 3


@pytest.mark.parametrize(("dpi", "how"), [(100, None), (150, "noise"), (150, "skew")])
def test_lower_resolution_and_worse_scans(tesseract: TesseractEngine, dpi: int,
                                          how: str | None) -> None:
    image = layout_image(dpi) if how is None else degraded(layout_image(dpi), how)
    out = io.BytesIO()
    image.save(out, format="PNG")
    [page] = read_pages(out.getvalue(), LIMITS, tesseract)
    kinds = [str(b.kind) for b in page.blocks]
    assert kinds == [kind for kind, _ in EXPECTED]
    rate = cer("\n".join(t for _, t in EXPECTED), "\n".join(b.text for b in page.blocks))
    print(f"\ntesseract, {dpi} dpi {how or 'clean'}: CER {rate:.4f}, kinds and order right")
    assert rate <= MAX_CER
