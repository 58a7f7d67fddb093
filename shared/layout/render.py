"""A document's pages as plain text or Markdown, in reading order.

Plain: blocks separated by a blank line, list items one per line (``- `` for bullets),
table rows one per line with tab-separated cells, pages separated by a form feed.
Markdown: headings as ``#`` (``##`` for headings smaller than the document's largest),
list items as ``-``, tables as pipe tables, paragraphs separated by a blank line, pages
by a rule.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from shared.layout.kinds import font_size
from shared.layout.model import Block, Kind, PageLayout, cells

_MARKDOWN_START = re.compile(r"^([#>*+\-=]|\d+[.)])")


def _item_text(block: Block) -> str:
    words = block.text.split(" ", 1)
    if words[0] == "•":
        return "- " + (words[1] if len(words) > 1 else "")
    return block.text


def _join(parts: list[tuple[Kind, str]]) -> str:
    out: list[str] = []
    for n, (kind, text) in enumerate(parts):
        if n:
            tight = kind is Kind.LIST_ITEM and parts[n - 1][0] is Kind.LIST_ITEM
            out.append("\n" if tight else "\n\n")
        out.append(text)
    return "".join(out)


def render_plain(pages: Sequence[PageLayout]) -> str:
    """The text of ``pages`` as a person would copy it, in reading order."""
    rendered = []
    for page in pages:
        parts = [
            (b.kind, _item_text(b) if b.kind is Kind.LIST_ITEM else b.text) for b in page.blocks
        ]
        rendered.append(_join(parts))
    return "\n\f".join(rendered) + "\n" if rendered else ""


def page_text(page: PageLayout) -> str:
    """The plain text of one page (stored with the page, searched, served as ``text``)."""
    return render_plain([page]).rstrip("\n")


def render_markdown(pages: Sequence[PageLayout]) -> str:
    """The text of ``pages`` as Markdown: headings, lists, tables and paragraphs."""
    headings = [
        font_size(line) for p in pages for b in p.blocks if b.kind is Kind.HEADING
        for line in b.lines
    ]
    largest = max(headings, default=0.0)
    rendered = []
    for page in pages:
        parts = [(b.kind, _markdown_block(b, largest)) for b in page.blocks]
        rendered.append(_join(parts))
    return "\n\n---\n\n".join(rendered) + "\n" if rendered else ""


def _markdown_block(block: Block, largest: float) -> str:
    if block.kind is Kind.HEADING:
        size = max(font_size(line) for line in block.lines)
        marks = "#" if size >= 0.9 * largest else "##"
        return f"{marks} {' '.join(block.text.split())}"
    if block.kind is Kind.LIST_ITEM:
        return _item_text(block).replace("\n", " ")
    if block.kind is Kind.TABLE:
        return _pipe_table([cells(line) for line in block.lines])
    return "\n\n".join(_escape(p.text) for p in block.paragraphs)


def _escape(text: str) -> str:
    return "\\" + text if _MARKDOWN_START.match(text) else text


def _pipe_table(rows: list[list[str]]) -> str:
    width = max(len(row) for row in rows)
    padded = [[c.replace("|", "\\|") for c in row] + [""] * (width - len(row)) for row in rows]
    lines = ["| " + " | ".join(padded[0]) + " |", "|" + " --- |" * width]
    lines += ["| " + " | ".join(row) + " |" for row in padded[1:]]
    return "\n".join(lines)
