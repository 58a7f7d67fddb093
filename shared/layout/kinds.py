"""The kind of a block: heading, paragraph, list item, table or other.

The rules, the same for every engine: a table has two or more rows of two or more cells
with short cells; a list item starts with a bullet or an enumerator; a heading is a short
block (at most ``HEADING_MAX_LINES``) whose font is ``HEADING_RATIO`` times the page's body
font or larger; a block without a letter or digit is ``other``; the rest are paragraphs.
Font sizes are estimated from line heights and the letters in the lines (:func:`font_size`).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence

from shared.layout.model import (
    Block,
    Kind,
    Line,
    Word,
    cells,
    height,
    make_block,
    make_line,
    make_paragraph,
)

HEADING_RATIO = 1.3
"""A short block this many times the page's body font size is a heading."""
HEADING_MAX_LINES = 3
"""More lines than this are not a heading, whatever their size."""

BULLETS = frozenset("•·◦▪▫●○■□‣\u2043∙*-\u2013\u2014+>¢©®°«»")
"""Marks read as a bullet (tesseract often reads a round bullet as ``¢``, ``©`` or ``e``)."""
_LOOKALIKES = frozenset("oeO")
"""Letters a small round bullet is read as: a bullet only when smaller than an x-height."""
_ENUMERATOR = re.compile(r"^(\(?(\d{1,3}|[a-zA-Z]|[ivxIVX]{1,4})[.)]|\(\w{1,4}\))$")
_ASCENDERS = re.compile(r"[A-Z0-9bdfhiklt'\"!?/()\[\]{}|$%&@#]")
_DESCENDERS = re.compile(r"[gjpqy,;()\[\]{}|$@_]")


def font_size(line: Line) -> float:
    """Font size estimated from box heights and the letters in them.

    A word of ``x``-height letters is about half an em tall, one with ascenders and
    descenders about the full em: dividing by that share makes "same." and "Quarterly"
    of one font compare equal. Words boxed one by one (tesseract, text layers) are
    estimated one by one and the median taken, so one odd box does not make a line look
    like a heading; words cut from a run's box (easyocr) share its height, so the run's
    letters decide.
    """
    words = [w for w in line.words if any(c.isalnum() for c in w.text)] or line.words
    if len({(w.bbox[1], w.bbox[3]) for w in words}) == 1:
        return height(line.bbox) / _share(line.text)
    return statistics.median(height(w.bbox) / _share(w.text) for w in words)


def _share(text: str) -> float:
    """The part of an em that ``text`` covers from its top to its bottom."""
    share = 0.52
    if _ASCENDERS.search(text):
        share += 0.2
    if _DESCENDERS.search(text):
        share += 0.2
    return share


def list_marker(line: Line) -> bool:
    """Does ``line`` start with a bullet or an enumerator (``1.``, ``a)``, ``(iv)``)?"""
    if len(line.words) < 2:
        return False
    first = line.words[0]
    if first.text in BULLETS or _ENUMERATOR.match(first.text):
        return True
    small = height(first.bbox) <= 0.45 * height(line.bbox)
    return first.text in _LOOKALIKES and small


def _normalise_bullet(line: Line) -> Line:
    first = line.words[0]
    if _ENUMERATOR.match(first.text) or first.text == "•":
        return line
    return make_line([Word(text="•", bbox=first.bbox, confidence=first.confidence),
                      *line.words[1:]])


def is_table(lines: Sequence[Line]) -> bool:
    """Two or more rows of two or more cells, most rows split, short cells."""
    split = [cells(line) for line in lines if len(cells(line)) > 1]
    if len(split) < 2 or len(split) * 3 < len(lines) * 2:
        return False
    words = [len(cell.split()) for row in split for cell in row]
    return statistics.median(words) <= 4


def classify(blocks: Sequence[Block]) -> list[Block]:
    """Decide every block's kind; the page's body size is the median size of its text."""
    sized = [(font_size(line), len(line.text)) for b in blocks for line in b.lines]
    body = _weighted_median(sized) if sized else 0.0
    return [_classified(block, body) for block in blocks]


def _classified(block: Block, body: float) -> Block:
    lines = block.lines
    if block.kind is Kind.TABLE:
        return block
    if list_marker(lines[0]):
        first = make_paragraph([_normalise_bullet(lines[0]), *block.paragraphs[0].lines[1:]])
        return make_block(Kind.LIST_ITEM, [first, *block.paragraphs[1:]])
    if not any(ch.isalnum() for ch in block.text):
        return make_block(Kind.OTHER, block.paragraphs)
    size = statistics.median(font_size(line) for line in lines)
    if len(lines) <= HEADING_MAX_LINES and body and size >= HEADING_RATIO * body:
        return make_block(Kind.HEADING, block.paragraphs)
    return make_block(Kind.PARAGRAPH, block.paragraphs)


def _weighted_median(values: list[tuple[float, int]]) -> float:
    ordered = sorted(values)
    half = sum(weight for _, weight in ordered) / 2
    seen = 0
    for value, weight in ordered:
        seen += weight
        if seen >= half:
            return value
    return ordered[-1][0]
