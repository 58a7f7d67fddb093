"""Page structure: words -> lines -> paragraphs -> blocks, reading order, rendering.

Pure code (no I/O, no engine): the OCR worker builds a :class:`PageLayout` per page from
an engine's output or a PDF's text layer, the admin API renders stored layouts as plain
text or Markdown. Every box is ``[x0, y0, x1, y1]`` in page pixels, y growing downwards.
"""

from shared.layout.grouping import group_lines, refine_blocks
from shared.layout.model import (
    Block,
    Kind,
    Line,
    PageLayout,
    Paragraph,
    Source,
    Summary,
    Word,
    make_block,
    make_line,
    make_paragraph,
    summarise,
)
from shared.layout.order import reading_order
from shared.layout.render import render_markdown, render_plain

__all__ = [
    "Block",
    "Kind",
    "Line",
    "PageLayout",
    "Paragraph",
    "Source",
    "Summary",
    "Word",
    "group_lines",
    "make_block",
    "make_line",
    "make_paragraph",
    "reading_order",
    "refine_blocks",
    "render_markdown",
    "render_plain",
    "summarise",
]
