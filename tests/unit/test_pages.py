"""Pages of a document: PDF text layers read directly, scans and images handed to the engine,
and the engines' raw output turned into structure (no services, no real OCR)."""

from __future__ import annotations

import io
import itertools
import math
import random

import pypdfium2
import pytest
from PIL import Image

from shared.documents import Limits, UnreadableDocument
from shared.layout import (
    Block,
    Kind,
    Line,
    Source,
    Word,
    group_lines,
    make_block,
    make_line,
    make_paragraph,
)
from shared.layout.grouping import split_words
from shared.layout.model import CELL_GAP
from tests.documents_support import pdf_with_pages
from tests.layout_documents import (
    DPI,
    EXPECTED,
    PAGE_H,
    PAGE_W,
    layout_mixed_pdf,
    layout_png,
    layout_scan_pdf,
    layout_text_pdf,
)
from workers.ocr_engines import easyocr_fragments, tesseract_blocks
from workers.pages import read_pages

LIMITS = Limits(max_pixels=40_000_000, max_pages=5, pdf_dpi=DPI)
SCALE = DPI / 72


class RecordingEngine:
    """Answers every page with one marker block and remembers the images it was given."""

    name = "recording"

    def __init__(self) -> None:
        self.images: list[tuple[int, int]] = []

    def analyse(self, image: Image.Image) -> list[Block]:
        self.images.append(image.size)
        line = make_line(split_words("recognised", [0, 0, 100, 20], 0.5))
        return [make_block(Kind.PARAGRAPH, [make_paragraph([line])])]


def test_text_layer_page_is_read_exactly_without_ocr() -> None:
    engine = RecordingEngine()
    [page] = read_pages(layout_text_pdf(), LIMITS, engine)
    assert engine.images == []
    assert page.source is Source.TEXT_LAYER
    # sized like its rendering (GET /documents/{id}/pages/{n}/image), to the pixel
    assert (page.width, page.height, page.scale) == (
        math.ceil(PAGE_W * SCALE), math.ceil(PAGE_H * SCALE), SCALE)
    assert [(str(b.kind), b.text) for b in page.blocks] == EXPECTED
    heading = page.blocks[0]
    assert heading.bbox[0] == pytest.approx(54 * SCALE, abs=3)  # drawn at x = 54 pt
    # baseline 80 pt from the top, 22 pt type: "y" descends below it, capitals rise above
    assert 80 * SCALE < heading.bbox[3] < (80 + 0.25 * 22) * SCALE
    assert (80 - 22) * SCALE < heading.bbox[1] < (80 - 0.6 * 22) * SCALE
    words = [w for line in page.lines for w in line.words]
    assert all(w.confidence == 1.0 for w in words)
    assert all(0 <= w.bbox[0] < w.bbox[2] <= page.width for w in words)
    assert all(0 <= w.bbox[1] < w.bbox[3] <= page.height for w in words)
    table = page.blocks[-1]
    assert [len(p.lines) for p in table.paragraphs] == [4]
    assert [w.text for w in table.lines[1].words] == ["North", "412", "9100"]


def test_scanned_pdf_pages_go_to_the_engine_at_the_render_scale() -> None:
    engine = RecordingEngine()
    [page] = read_pages(layout_scan_pdf(), LIMITS, engine)
    assert page.source is Source.OCR
    assert page.scale == SCALE
    assert engine.images == [(page.width, page.height)]
    assert page.blocks[0].text == "recognised"


def test_mixed_pdf_says_which_page_came_from_where() -> None:
    engine = RecordingEngine()
    pages = list(read_pages(layout_mixed_pdf(), LIMITS, engine))
    assert [(p.page_no, p.source) for p in pages] == [(1, Source.TEXT_LAYER), (2, Source.OCR)]
    assert len(engine.images) == 1
    assert [b.text for b in pages[0].blocks] == [text for _, text in EXPECTED]


def test_images_and_empty_pdf_pages_are_recognised() -> None:
    engine = RecordingEngine()
    [png] = read_pages(layout_png(), LIMITS, engine)
    assert (png.source, png.scale) == (Source.OCR, 1.0)
    blank = list(read_pages(pdf_with_pages(2), LIMITS, engine))
    assert [p.source for p in blank] == [Source.OCR, Source.OCR]
    assert len(engine.images) == 3


def test_corrupt_pdf_fails_with_a_reason() -> None:
    with pytest.raises(UnreadableDocument, match="unreadable PDF"):
        list(read_pages(b"%PDF-1.4\n" + b"\x00" * 64, LIMITS, RecordingEngine()))


def tsv(*rows: tuple[int, int, int, int, str, float, tuple[int, int, int, int]]) -> dict:
    """``image_to_data`` output: (level, block, par, line, text, conf, (left, top, w, h))."""
    data: dict[str, list] = {k: [] for k in (
        "level", "block_num", "par_num", "line_num", "text", "conf", "left", "top", "width",
        "height")}
    for level, block, par, line, text, conf, (left, top, width, height) in rows:
        for key, value in zip(data, (level, block, par, line, text, conf, left, top, width,
                                     height), strict=True):
            data[key].append(value)
    return data


def test_tesseract_levels_become_blocks_paragraphs_lines_words() -> None:
    data = tsv(
        (1, 0, 0, 0, "", -1, (0, 0, 1000, 1000)),
        (2, 1, 0, 0, "", -1, (10, 10, 300, 60)),
        (5, 1, 1, 1, "Hello", 96.0, (10, 10, 100, 20)),
        (5, 1, 1, 1, "world", 90.0, (120, 10, 100, 20)),
        (5, 1, 1, 2, "again", 80.0, (10, 40, 100, 20)),
        (5, 1, 2, 1, " ", 95.0, (10, 70, 5, 20)),  # blank: dropped
        (5, 1, 2, 1, "second", 70.0, (10, 70, 120, 20)),
        (5, 2, 1, 1, "other", -1, (500, 10, 100, 20)),  # not recognised: dropped
        (5, 3, 1, 1, "block", 50.0, (500, 10, 100, 20)),
    )
    blocks = tesseract_blocks(data)
    assert [[[line.text for line in p.lines] for p in b.paragraphs] for b in blocks] == [
        [["Hello world", "again"], ["second"]], [["block"]],
    ]
    first = blocks[0].paragraphs[0].lines[0]
    assert first.confidence == 0.93
    assert first.words[1].bbox == [120, 10, 220, 30]
    assert first.bbox == [10, 10, 220, 30]


def test_easyocr_runs_are_split_into_words_with_estimated_boxes() -> None:
    corners = [[100, 50], [300, 50], [300, 80], [100, 80]]
    [line] = easyocr_fragments([(corners, "ab  cdef", 0.8)])
    assert [w.text for w in line.words] == ["ab", "cdef"]
    assert line.words[0].bbox == [100, 50, 150, 80]  # 2 of 8 characters
    assert line.words[1].bbox == [200, 50, 300, 80]
    assert line.confidence == 0.8
    assert easyocr_fragments([(corners, "   ", 0.9)]) == []


def _edited(content: bytes, edit: str) -> bytes:
    pdf = pypdfium2.PdfDocument(content)
    page = pdf[0]
    if edit == "rotate":
        page.set_rotation(90)
    else:
        page.set_cropbox(50, 50, PAGE_W - 50, PAGE_H - 50)
    out = io.BytesIO()
    pdf.save(out)
    page.close()
    pdf.close()
    return out.getvalue()


def test_cropped_page_boxes_are_in_the_pixels_of_its_rendering() -> None:
    [page] = read_pages(_edited(layout_text_pdf(), "crop"), LIMITS, RecordingEngine())
    assert page.source is Source.TEXT_LAYER
    assert (page.width, page.height) == (math.ceil((PAGE_W - 100) * SCALE),
                                         math.ceil((PAGE_H - 100) * SCALE))
    heading = page.blocks[0]
    assert heading.bbox[0] == pytest.approx((54 - 50) * SCALE, abs=3)
    assert (80 - 50) * SCALE < heading.bbox[3] < (80 - 50 + 0.25 * 22) * SCALE


def test_rotated_page_is_ocred_upright_not_read_sideways() -> None:
    engine = RecordingEngine()
    [page] = read_pages(_edited(layout_text_pdf(), "rotate"), LIMITS, engine)
    assert page.source is Source.OCR
    assert engine.images == [(math.ceil(PAGE_H * SCALE), math.ceil(PAGE_W * SCALE))]  # landscape


def test_easyocr_path_rebuilds_the_layout_page_from_runs_in_any_order() -> None:
    """easyocr boxes runs of words (a table cell, a column's line); given such runs with the
    page's real geometry, in shuffled order, the grouping rebuilds the page's structure."""
    [page] = read_pages(layout_text_pdf(), LIMITS, RecordingEngine())
    results = []
    for line in page.lines:
        for run in _runs(line):
            x0, y0 = min(w.bbox[0] for w in run), min(w.bbox[1] for w in run)
            x1, y1 = max(w.bbox[2] for w in run), max(w.bbox[3] for w in run)
            corners = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
            results.append((corners, " ".join(w.text for w in run), 0.9))
    random.Random(7).shuffle(results)
    blocks = group_lines(easyocr_fragments(results))
    assert [(str(b.kind), b.text) for b in blocks] == EXPECTED
    assert all(b.confidence == 0.9 for b in blocks)


def _runs(line: Line) -> list[list[Word]]:
    runs = [[line.words[0]]]
    for before, word in itertools.pairwise(line.words):
        if word.bbox[0] - before.bbox[2] > CELL_GAP * (line.bbox[3] - line.bbox[1]):
            runs.append([])
        runs[-1].append(word)
    return runs
