"""PDF pages read from their text layer: exact text and positions, no OCR.

pdfium reports every character of a page's text with its box (PDF points, origin at the
bottom left). Characters become words at spaces and gaps, words become line fragments
at line ends, and :func:`shared.layout.group_lines` (the same grouping as for easyocr)
turns those into paragraphs and blocks in reading order. Boxes are converted to the
pixels of the page rendered at ``scale`` (``OCR_PDF_DPI / 72``), so a client draws them
over the rendered page exactly like OCR boxes. Confidence is 1.0: nothing is guessed.

A page is read from its text layer when it has one: at least one character of text,
unless an image covers most of the page and the text is a few characters only (a scan
with a stamped page number is still OCR-ed).
"""

from __future__ import annotations

import pypdfium2
import pypdfium2.raw as pdfium_c

from shared.layout import Block, Line, Word, group_lines, make_line
from shared.layout.model import CELL_GAP, rounded, union

MIN_TEXT_ON_SCAN = 32
"""Characters of text a page mostly covered by an image needs to count as text layer."""
SCAN_COVERAGE = 0.5
"""Share of the page an image must cover for the page to count as a scan."""
WORD_GAP = 0.3
"""A horizontal gap wider than this many ems separates two words (a space is about 0.28
em; pdfium reports the spaces it finds as characters, so this only catches the rest)."""


def text_chars(textpage: pypdfium2.PdfTextPage) -> int:
    """Characters of the text layer that are not whitespace."""
    count = textpage.count_chars()
    return sum(
        1 for i in range(count)
        if not chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, i) or 32).isspace()
    )


def image_coverage(page: pypdfium2.PdfPage) -> float:
    """Largest share of the page covered by one image object."""
    width, height = page.get_size()
    largest = 0.0
    for obj in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=3):
        left, bottom, right, top = obj.get_pos()
        largest = max(largest, float((right - left) * (top - bottom)))
    return largest / max(1.0, float(width * height))


def has_text_layer(page: pypdfium2.PdfPage, textpage: pypdfium2.PdfTextPage) -> bool:
    """Read this page from its text? (A rotated page is OCR-ed from its upright rendering
    instead: its text layer's coordinates are those of the unrotated page.)"""
    chars = text_chars(textpage)
    if chars == 0 or page.get_rotation() % 360:
        return False
    return chars >= MIN_TEXT_ON_SCAN or image_coverage(page) < SCAN_COVERAGE


def read_text_layer(page: pypdfium2.PdfPage, textpage: pypdfium2.PdfTextPage,
                    scale: float) -> list[Block]:
    """The page's blocks in reading order, boxes in pixels at ``scale``."""
    left, _, _, top = page.get_cropbox()
    return group_lines(text_fragments(textpage, (float(left), float(top)), scale))


def text_fragments(textpage: pypdfium2.PdfTextPage, origin: tuple[float, float],
                   scale: float) -> list[Line]:
    """Line fragments of the text layer; ``origin`` is the top-left corner of the visible
    page (its crop box) in PDF points, where pixel (0, 0) of the rendering is."""
    lines: list[list[Word]] = [[]]
    word: list[tuple[str, list[float]]] = []
    em = 0.0

    def end_word() -> None:
        if word:
            lines[-1].append(_word(word))
            word.clear()

    for i in range(textpage.count_chars()):
        char = chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, i) or 32)
        if char.isspace():
            end_word()
            if char in "\r\n" and lines[-1]:
                lines.append([])
            continue
        left, bottom, right, top = textpage.get_charbox(i)
        box = [(left - origin[0]) * scale, (origin[1] - top) * scale,
               (right - origin[0]) * scale, (origin[1] - bottom) * scale]
        if word and _apart(word[-1][1], box, em):
            end_word()
        em = float(pdfium_c.FPDFText_GetFontSize(textpage.raw, i)) * scale or box[3] - box[1]
        if not word and lines[-1] and _new_fragment(lines[-1][-1].bbox, box):
            lines.append([])
        word.append((char, box))
    end_word()
    return [make_line(words) for words in lines if words]


def _word(chars: list[tuple[str, list[float]]]) -> Word:
    return Word(text="".join(c for c, _ in chars), confidence=1.0,
                bbox=rounded(union([b for _, b in chars])))


def _apart(previous: list[float], box: list[float], em: float) -> bool:
    """Not the next character of the same word: a gap, a step back, or another baseline."""
    gap = box[0] - previous[2]
    return gap > WORD_GAP * em or gap < -0.5 * em or not _same_line(previous, box)


def _new_fragment(previous: list[float], box: list[float]) -> bool:
    """Another line, a step back, or a gap as wide as between columns or table cells."""
    gap = box[0] - previous[2]
    return not _same_line(previous, box) or gap < 0 or gap > CELL_GAP * (box[3] - box[1])


def _same_line(previous: list[float], box: list[float]) -> bool:
    overlap = min(previous[3], box[3]) - max(previous[1], box[1])
    return overlap >= 0.3 * min(previous[3] - previous[1], box[3] - box[1])
