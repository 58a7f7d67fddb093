"""From lines to paragraphs and blocks by geometry, and the kind of every block.

:func:`group_lines` is the one grouping function for sources that give lines and words
but no blocks (easyocr, a PDF text layer): fragments of one line are joined, the lines
are put in reading order (:mod:`shared.layout.order`), rows of cells become tables, and
the remaining lines are cut into blocks and paragraphs where the geometry says so.
:func:`refine_blocks` takes blocks an engine found itself (tesseract) and applies the
same rules: list items and style changes start blocks, the kinds are decided, the blocks
are put in reading order. Thresholds are in units of the line's own height, so the
rules hold at any resolution.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from enum import Enum

from shared.layout.kinds import classify, font_size, is_table, list_marker
from shared.layout.model import (
    CELL_GAP,
    Bbox,
    Block,
    Kind,
    Line,
    Word,
    cells,
    height,
    make_block,
    make_line,
    make_paragraph,
    rounded,
)
from shared.layout.order import reading_order

BLOCK_GAP = 0.8
"""A vertical gap above this many ems (about a blank line) starts a new block. Gaps are
measured in the font size estimated from the lines, not in box heights: the gap below a
line without descenders is larger than below one with them at the same leading."""
STYLE_RATIO = 1.35
"""Lines whose estimated font sizes differ by this factor belong to different blocks."""
INDENT = 1.0
"""A first line indented by this many line heights starts a paragraph."""
SHORT_LINE = 3.0
"""A line ending this many line heights before the block's right edge ends a paragraph."""

class _Break(Enum):
    NONE = 0
    PARAGRAPH = 1
    BLOCK = 2


def merge_fragments(fragments: Sequence[Line]) -> list[Line]:
    """Join fragments on one baseline closer than ``CELL_GAP`` line heights into lines."""
    lines: list[list[Word]] = []
    boxes: list[list[float]] = []
    for fragment in sorted(fragments, key=lambda f: f.bbox[0]):
        for words, box in zip(lines, boxes, strict=True):
            h = max(height(fragment.bbox), height(box))
            overlap = min(box[3], fragment.bbox[3]) - max(box[1], fragment.bbox[1])
            gap = fragment.bbox[0] - box[2]
            low = min(height(fragment.bbox), height(box))
            if overlap >= 0.5 * low and -0.5 * h <= gap <= CELL_GAP * h:
                words.extend(fragment.words)
                box[1], box[2] = min(box[1], fragment.bbox[1]), fragment.bbox[2]
                box[3] = max(box[3], fragment.bbox[3])
                break
        else:
            lines.append(list(fragment.words))
            boxes.append(list(fragment.bbox))
    return [make_line(words) for words in lines]


def split_words(text: str, bbox: Bbox, confidence: float) -> list[Word]:
    """The words of a run of ``text`` boxed as a whole, each box cut from ``bbox`` in
    proportion to the characters before it (for engines that box runs, not words)."""
    per_char = (bbox[2] - bbox[0]) / max(1, len(text))
    words = []
    for match in re.finditer(r"\S+", text):
        x0, x1 = bbox[0] + match.start() * per_char, bbox[0] + match.end() * per_char
        words.append(Word(text=match.group(), bbox=rounded([x0, bbox[1], x1, bbox[3]]),
                          confidence=round(confidence, 4)))
    return words


def _unit(lines: Sequence[Line]) -> float:
    return statistics.median(height(line.bbox) for line in lines) if lines else 1.0


def group_lines(fragments: Sequence[Line]) -> list[Block]:
    """Blocks in reading order, with kinds, from lines or line fragments and their words."""
    fragments = [f for f in fragments if f.words]
    if not fragments:
        return []
    lines = merge_fragments(fragments)
    rows = reading_order(lines, lambda x: x.bbox, lambda x: len(x.text), _unit(lines))
    return classify(_blocks(rows))


def _stacked(above: Line, below: Line) -> bool:
    """``below`` sits under ``above``, overlapping it horizontally, at most two ems apart."""
    gap = below.bbox[1] - above.bbox[3]
    em = max(font_size(above), font_size(below))
    x_overlap = min(above.bbox[2], below.bbox[2]) - max(above.bbox[0], below.bbox[0])
    return x_overlap > 0 and -0.5 * em <= gap <= 2 * em


def _table_run(rows: list[list[Line]], start: int) -> list[Line]:
    """Consecutive rows of two or more cells from ``start``, each merged into one line."""
    run: list[Line] = []
    for row in rows[start:]:
        if len(row) < 2:
            break
        line = _joined(row)
        if run and not _stacked(run[-1], line):
            break
        run.append(line)
    return run


def _joined(row: list[Line]) -> Line:
    """The items of a row as one line, words left to right."""
    return make_line(sorted((w for item in row for w in item.words), key=lambda w: w.bbox[0]))


def _blocks(rows: list[list[Line]]) -> list[Block]:
    blocks: list[Block] = []
    text: list[list[Line]] = []  # paragraphs of the block being built

    def close() -> None:
        if text:
            blocks.append(make_block(Kind.PARAGRAPH, [make_paragraph(p) for p in text]))
            text.clear()

    index = 0
    while index < len(rows):
        run = _table_run(rows, index)
        if len(run) >= 2:
            close()
            blocks.append(make_block(Kind.TABLE, [make_paragraph(run)]))
            index += len(run)
            continue
        row = rows[index]
        line = _joined(row)
        step = _break(text, line) if text else _Break.BLOCK
        if step is _Break.BLOCK:
            close()
            text.append([line])
        elif step is _Break.PARAGRAPH:
            text.append([line])
        else:
            text[-1].append(line)
        index += 1
    close()
    return blocks


def _break(paragraphs: list[list[Line]], line: Line) -> _Break:
    """Where ``line`` goes relative to the block whose ``paragraphs`` precede it."""
    first, previous = paragraphs[0][0], paragraphs[-1][-1]
    if list_marker(line) or not _continues(previous, line):
        return _Break.BLOCK
    if list_marker(first):  # an item's next line continues it only if indented past the mark
        return _Break.NONE if line.bbox[0] > first.bbox[0] + 0.3 * height(line.bbox) else (
            _Break.BLOCK
        )
    h = height(line.bbox)
    left = min(p[0].bbox[0] for p in paragraphs)
    right = max(x.bbox[2] for p in paragraphs for x in p)
    if line.bbox[0] - left > INDENT * h or previous.bbox[2] < right - SHORT_LINE * h:
        return _Break.PARAGRAPH
    return _Break.NONE


def _continues(previous: Line, line: Line) -> bool:
    """Same block as far as geometry goes: below, overlapping, close, same font size."""
    sizes = sorted((font_size(previous), font_size(line)))
    return (
        _stacked(previous, line)
        and line.bbox[1] - previous.bbox[3] <= BLOCK_GAP * sizes[1]
        and sizes[1] <= STYLE_RATIO * sizes[0]
    )


def refine_blocks(blocks: Sequence[Block]) -> list[Block]:
    """Blocks an engine found, split at list items and style changes, classified, in order."""
    pieces: list[Block] = []
    for block in blocks:
        lines = block.lines
        if is_table(lines):
            pieces.append(make_block(Kind.TABLE, block.paragraphs))
            continue
        current: list[list[Line]] = []
        for paragraph in block.paragraphs:
            for n, line in enumerate(paragraph.lines):
                if current and (list_marker(line) or not _same_style(current[-1][-1], line)):
                    pieces.append(make_block(Kind.PARAGRAPH, [make_paragraph(p) for p in current]))
                    current = []
                if n == 0 or not current:
                    current.append([])
                current[-1].append(line)
        if current:
            pieces.append(make_block(Kind.PARAGRAPH, [make_paragraph(p) for p in current]))
    unit = _unit([line for piece in pieces for line in piece.lines])
    rows = reading_order(pieces, lambda b: b.bbox, _chars_per_line, unit)
    return _join_table_rows(classify([block for row in rows for block in row]))


def _join_table_rows(blocks: list[Block]) -> list[Block]:
    """Rows an engine put in a block of their own, right under a table, join the table."""
    out: list[Block] = []
    for block in blocks:
        previous = out[-1] if out else None
        if previous is not None and previous.kind is Kind.TABLE and _more_rows(previous, block):
            rows = [*previous.paragraphs[-1].lines, *block.lines]
            out[-1] = make_block(Kind.TABLE, [*previous.paragraphs[:-1], make_paragraph(rows)])
        else:
            out.append(block)
    return out


def _more_rows(table: Block, block: Block) -> bool:
    width = _cell_count(table.lines[-1])
    return _stacked(table.lines[-1], block.lines[0]) and all(
        _cell_count(line) == width for line in block.lines
    )


def _cell_count(line: Line) -> int:
    """Cells with a letter or digit (a speck read as ``~`` is not a cell)."""
    return sum(1 for cell in cells(line) if any(c.isalnum() for c in cell))


def _same_style(previous: Line, line: Line) -> bool:
    sizes = sorted((font_size(previous), font_size(line)))
    return sizes[1] <= STYLE_RATIO * sizes[0]


def _chars_per_line(block: Block) -> float:
    """A block of one line may be a table cell; one of several lines is text, never a cell."""
    lines = block.lines
    return len(lines[0].text) if len(lines) == 1 else float("inf")
