"""The structure of a page as stored and served (the contract of ``GET /documents/{id}``).

Every level carries its text, its box and a confidence in 0..1. A line's confidence is
the mean of its words'; paragraphs and blocks weigh their parts by their number of
characters, so a long line counts more than a stray mark.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import msgspec

Bbox = list[float]
"""``[x0, y0, x1, y1]`` in page pixels (left, top, right, bottom)."""


class Kind(StrEnum):
    HEADING = "heading"
    PARAGRAPH = "paragraph"
    LIST_ITEM = "list_item"
    TABLE = "table"
    OTHER = "other"


class Source(StrEnum):
    OCR = "ocr"
    """The page was rendered to an image and recognised by the OCR engine."""
    TEXT_LAYER = "text_layer"
    """The page's text was read from the PDF's text layer: exact, no recognition."""


class Word(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    """The word as recognised."""
    bbox: Bbox
    """`[x0, y0, x1, y1]` in page pixels."""
    confidence: float
    """0..1."""


class Line(msgspec.Struct, frozen=True, kw_only=True):
    text: str
    """The line's words, space-separated."""
    bbox: Bbox
    """`[x0, y0, x1, y1]` in page pixels."""
    confidence: float
    """0..1 (mean of its words)."""
    words: list[Word]
    """Its words, left to right."""


class Paragraph(msgspec.Struct, frozen=True, kw_only=True):
    bbox: Bbox
    """`[x0, y0, x1, y1]` in page pixels."""
    text: str
    """Its lines joined."""
    confidence: float
    """0..1 (mean of its lines)."""
    lines: list[Line]
    """Its lines, top to bottom."""


class Block(msgspec.Struct, frozen=True, kw_only=True):
    kind: Kind
    """heading, paragraph, list item, table or other."""
    bbox: Bbox
    """`[x0, y0, x1, y1]` in page pixels."""
    text: str
    """Its paragraphs, separated by a blank line."""
    confidence: float
    """0..1 (mean of its paragraphs)."""
    paragraphs: list[Paragraph]
    """Its paragraphs in reading order."""

    @property
    def lines(self) -> list[Line]:
        return [line for paragraph in self.paragraphs for line in paragraph.lines]


class PageLayout(msgspec.Struct, frozen=True, kw_only=True):
    """One page: its size in pixels, where its text came from and its blocks in reading order."""

    page_no: int
    width: int
    height: int
    source: Source
    scale: float
    """Pixels per PDF point (``OCR_PDF_DPI / 72``) for PDF pages; 1.0 for images."""
    blocks: list[Block]

    @property
    def lines(self) -> list[Line]:
        """Every line in reading order (the flat ``pages[].lines`` of the API)."""
        return [line for block in self.blocks for line in block.lines]

    @property
    def words(self) -> int:
        return sum(len(line.words) for line in self.lines)


def union(boxes: Sequence[Bbox]) -> Bbox:
    return [
        min(b[0] for b in boxes), min(b[1] for b in boxes),
        max(b[2] for b in boxes), max(b[3] for b in boxes),
    ]


def corners(bbox: Bbox) -> list[list[float]]:
    """A box as four ``[x, y]`` corners: top-left, top-right, bottom-right, bottom-left."""
    x0, y0, x1, y1 = bbox
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def rounded(bbox: Sequence[float]) -> Bbox:
    """A box to a tenth of a pixel: more is noise, and it keeps the stored JSON small."""
    return [round(float(v), 1) for v in bbox]


def _weighted(parts: Sequence[tuple[str, float]]) -> float:
    weight = sum(max(1, len(text)) for text, _ in parts)
    total = sum(max(1, len(text)) * confidence for text, confidence in parts)
    return round(total / weight, 4) if weight else 0.0


def make_line(words: Sequence[Word]) -> Line:
    """A line of ``words`` (left to right): text joined by spaces, mean word confidence."""
    if not words:
        raise ValueError("a line needs at least one word")
    confidence = round(sum(w.confidence for w in words) / len(words), 4)
    return Line(
        text=" ".join(w.text for w in words), bbox=union([w.bbox for w in words]),
        confidence=confidence, words=list(words),
    )


def make_paragraph(lines: Sequence[Line]) -> Paragraph:
    """A paragraph of ``lines`` (top to bottom); its text is the lines joined by spaces."""
    if not lines:
        raise ValueError("a paragraph needs at least one line")
    return Paragraph(
        bbox=union([line.bbox for line in lines]), text=" ".join(line.text for line in lines),
        confidence=_weighted([(line.text, line.confidence) for line in lines]), lines=list(lines),
    )


def make_block(kind: Kind, paragraphs: Sequence[Paragraph]) -> Block:
    """A block; a table's text is its rows, one per line, cells separated by tabs."""
    if not paragraphs:
        raise ValueError("a block needs at least one paragraph")
    if kind is Kind.TABLE:
        text = "\n".join("\t".join(cells(line)) for p in paragraphs for line in p.lines)
    else:
        text = "\n".join(p.text for p in paragraphs)
    return Block(
        kind=kind, bbox=union([p.bbox for p in paragraphs]), text=text,
        confidence=_weighted([(p.text, p.confidence) for p in paragraphs]),
        paragraphs=list(paragraphs),
    )


CELL_GAP = 1.0
"""Words further apart than this many line heights belong to different cells (or
columns); closer ones to the same line. The grouping uses the same threshold to join
fragments of a line, so the two decisions never disagree."""


def height(bbox: Bbox) -> float:
    return max(1.0, bbox[3] - bbox[1])


def cells(line: Line) -> list[str]:
    """The texts of ``line`` split where the gap between two words exceeds ``CELL_GAP``."""
    limit = CELL_GAP * height(line.bbox)
    out: list[list[str]] = [[line.words[0].text]]
    for before, word in zip(line.words, line.words[1:], strict=False):
        if word.bbox[0] - before.bbox[2] > limit:
            out.append([])
        out[-1].append(word.text)
    return [" ".join(cell) for cell in out]


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """What a finished document holds, for its ``document.ocr_completed`` event."""

    pages: int
    words: int
    mean_confidence: float | None
    sources: dict[str, int]


def summarise(pages: Sequence[PageLayout]) -> Summary:
    confidences = [w.confidence for p in pages for line in p.lines for w in line.words]
    sources: dict[str, int] = {}
    for page in pages:
        sources[page.source.value] = sources.get(page.source.value, 0) + 1
    mean = round(sum(confidences) / len(confidences), 4) if confidences else None
    return Summary(pages=len(pages), words=len(confidences), mean_confidence=mean,
                   sources=sources)
