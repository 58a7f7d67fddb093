"""Reading a document's structure: pages as layouts, its text as plain or Markdown, and
full-text search over the stored page text.

Search runs on ``ocr_pages.search`` (a generated tsvector, GIN-indexed): the query is
parsed by ``websearch_to_tsquery`` (words, ``"quoted phrases"``, ``or``, ``-excluded``;
never a syntax error), a document's rank is the sum of its matching pages' ``ts_rank_cd``,
and its snippet comes from its best page, the matches wrapped in ``**``.
"""

from __future__ import annotations

import enum
import uuid
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncSession

from apps.admin.models import SEARCH_CONFIG, DocumentStatus, documents, ocr_pages
from shared.errors import Conflict, NotYetAvailable
from shared.layout import Block, PageLayout, Source, render_markdown, render_plain

SNIPPET_OPTIONS = (
    "StartSel=**, StopSel=**, MaxWords=35, MinWords=12, ShortWord=2, MaxFragments=2, "
    'FragmentDelimiter=" … "'
)
"""``ts_headline`` options: up to two fragments of 12 to 35 words around the matches."""


class TextFormat(enum.StrEnum):
    PLAIN = "plain"
    MARKDOWN = "markdown"


async def page_layouts(session: AsyncSession, document_id: uuid.UUID) -> list[PageLayout]:
    """The stored pages of a document with their blocks, in page order."""
    rows = await session.execute(
        sa.select(ocr_pages.c.page_no, ocr_pages.c.width, ocr_pages.c.height,
                  ocr_pages.c.source, ocr_pages.c.scale, ocr_pages.c.blocks)
        .where(ocr_pages.c.document_id == document_id).order_by(ocr_pages.c.page_no)
    )
    return [
        PageLayout(page_no=r.page_no, width=r.width, height=r.height, source=Source(r.source),
                   scale=r.scale, blocks=msgspec.convert(r.blocks, list[Block]))
        for r in rows
    ]


async def document_text(
    session: AsyncSession, document: dict[str, Any], fmt: TextFormat
) -> str:
    """The text of a visible ``document`` (a row of ``documents``) in reading order.

    Not yet completed: :class:`NotYetAvailable` (404 with ``Retry-After``); failed:
    :class:`Conflict` with the reason.
    """
    status = DocumentStatus(document["status"])
    if status is DocumentStatus.FAILED:
        raise Conflict(f"OCR of document {document['id']} failed: {document['failure_reason']}")
    if status is not DocumentStatus.COMPLETED:
        raise NotYetAvailable(
            f"document {document['id']} is {status.value}; its text is there once completed",
            retry_after=2,
        )
    pages = await page_layouts(session, document["id"])
    if pages and not any(page.blocks for page in pages):  # stored before blocks existed
        texts = await session.scalars(
            sa.select(ocr_pages.c.text).where(ocr_pages.c.document_id == document["id"])
            .order_by(ocr_pages.c.page_no)
        )
        return "\n\f".join(texts) + "\n"
    return render_markdown(pages) if fmt is TextFormat.MARKDOWN else render_plain(pages)


def _query(text: str) -> sa.ColumnElement[Any]:
    return sa.func.websearch_to_tsquery(sa.cast(SEARCH_CONFIG, pg.REGCONFIG), text)


async def search(
    session: AsyncSession, where: sa.ColumnElement[bool], text: str, *, columns: tuple[Any, ...],
    limit: int, offset: int,
) -> tuple[list[dict[str, Any]], int]:
    """Documents matching ``where`` whose text matches ``text``, best first, with a snippet.

    Returns the rows (``columns`` plus ``rank``, ``page_no`` and ``snippet``) and the
    number of matching documents.
    """
    query = _query(text)
    rank = sa.func.ts_rank_cd(ocr_pages.c.search, query)
    pages = (
        sa.select(
            ocr_pages.c.document_id, ocr_pages.c.page_no,
            sa.func.row_number().over(partition_by=ocr_pages.c.document_id,
                                      order_by=(rank.desc(), ocr_pages.c.page_no)).label("n"),
            sa.func.sum(rank).over(partition_by=ocr_pages.c.document_id).label("rank"),
        )
        .join(documents, documents.c.id == ocr_pages.c.document_id)
        .where(ocr_pages.c.search.bool_op("@@")(query), where)
        .subquery()
    )
    hits = (
        sa.select(*columns, pages.c.rank, pages.c.page_no)
        .join(pages, sa.and_(pages.c.document_id == documents.c.id, pages.c.n == 1))
        .order_by(pages.c.rank.desc(), documents.c.created_at.desc(), documents.c.id)
        .limit(limit).offset(offset)
        .subquery()
    )
    # The snippet is computed for the page of hits only (ts_headline is the costly part).
    snippet = sa.func.ts_headline(sa.cast(SEARCH_CONFIG, pg.REGCONFIG), ocr_pages.c.text, query,
                                  SNIPPET_OPTIONS)
    rows = await session.execute(
        sa.select(hits, snippet.label("snippet"))
        .join(ocr_pages, sa.and_(ocr_pages.c.document_id == hits.c.id,
                                 ocr_pages.c.page_no == hits.c.page_no))
        .order_by(hits.c.rank.desc(), hits.c.created_at.desc(), hits.c.id)
    )
    total = await session.scalar(
        sa.select(sa.func.count(sa.distinct(pages.c.document_id)))
    )
    return [{str(k): v for k, v in row._mapping.items()} for row in rows], int(total or 0)
