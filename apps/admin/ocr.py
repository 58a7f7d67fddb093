"""A document's OCR life cycle in admindb: claim, release, finish (completed | failed).

The OCR worker (``workers/ocr.py``) runs these statements; they are here because the
``documents`` table and its OCR results belong to the admin service.

1. :func:`claim`, in its own short transaction: ``pending`` -> ``processing``,
   ``attempts + 1`` (the claim token) and ``claimed_at``. A finished or deleted document
   gives ``None``; one claimed by someone else less than a lease ago is *in progress*
   (:class:`TransientError`, retried later instead of OCR-ing twice).
2. :func:`finish_completed` / :func:`finish_failed`, in the caller's transaction: the
   final status (and the pages), only if the claim token is still ours.
3. :func:`release` gives a claim back after a transient failure.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from apps.admin.models import DocumentStatus, document_blobs, documents, ocr_lines, ocr_pages
from shared.errors import TransientError
from shared.layout import PageLayout
from shared.layout.model import corners
from shared.layout.render import page_text
from shared.logging import get_logger

log = get_logger(__name__)

REASON_MAX = 1000
"""Longest failure reason stored."""


@dataclass(frozen=True)
class Claim:
    document_id: uuid.UUID
    owner_id: uuid.UUID
    token: int
    content: bytes


_CLAIM = sa.text(
    """
    UPDATE documents
       SET status = :processing, attempts = attempts + 1,
           claimed_at = clock_timestamp(), updated_at = clock_timestamp()
     WHERE id = :id
       AND (status = :pending
            OR (status = :processing
                AND (claimed_at IS NULL
                     OR claimed_at < clock_timestamp() - make_interval(secs => :lease_s))))
    RETURNING attempts
    """
).bindparams(processing=DocumentStatus.PROCESSING.value, pending=DocumentStatus.PENDING.value)


async def claim(
    session: AsyncSession, document_id: uuid.UUID, owner_id: uuid.UUID, *, lease_s: float
) -> Claim | None:
    """Take the OCR job of a document, with its bytes; None if nothing is left to do."""
    token = await session.scalar(_CLAIM, {"id": document_id, "lease_s": lease_s})
    if token is None:
        status = await session.scalar(
            sa.select(documents.c.status).where(documents.c.id == document_id)
        )
        if status == DocumentStatus.PROCESSING:
            raise TransientError(f"document {document_id} is being processed")
        log.info("ocr_skipped", document_id=str(document_id), status=status)
        return None
    content = await session.scalar(
        sa.select(document_blobs.c.content).where(document_blobs.c.document_id == document_id)
    )
    return Claim(document_id, owner_id, int(token), bytes(content or b""))


async def release(session: AsyncSession, claim: Claim) -> None:
    """Give a claim back after a transient failure so that the retry can take it at once."""
    await session.execute(
        sa.update(documents)
        .where(documents.c.id == claim.document_id, documents.c.attempts == claim.token)
        .values(
            status=DocumentStatus.PENDING, claimed_at=None,
            updated_at=sa.func.clock_timestamp(),
        )
    )


async def finish_completed(
    session: AsyncSession, claim: Claim, pages: Sequence[PageLayout], engine: str
) -> bool:
    """Status ``completed`` and the pages; False when the claim is no longer ours."""
    if not await _finish(
        session, claim, status=DocumentStatus.COMPLETED, engine=engine, failure_reason=None
    ):
        return False
    await store_pages(session, claim.document_id, pages)
    return True


async def finish_failed(session: AsyncSession, claim: Claim, reason: str) -> bool:
    """Status ``failed`` with ``reason`` (cut to :data:`REASON_MAX`); False when the claim
    is no longer ours."""
    return await _finish(
        session, claim, status=DocumentStatus.FAILED, failure_reason=reason[:REASON_MAX]
    )


async def _finish(session: AsyncSession, claim: Claim, **values: object) -> bool:
    """Set the final status if the claim is still ours (not re-claimed, not deleted)."""
    result = await session.execute(
        sa.update(documents)
        .where(
            documents.c.id == claim.document_id,
            documents.c.status == DocumentStatus.PROCESSING,
            documents.c.attempts == claim.token,
        )
        .values(
            updated_at=sa.func.clock_timestamp(), completed_at=sa.func.clock_timestamp(), **values
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def store_pages(
    session: AsyncSession, document_id: uuid.UUID, pages: Sequence[PageLayout]
) -> None:
    """Each page with its text, source, scale and blocks (JSON), and its lines in reading
    order (the flat view, boxes as four corners)."""
    if not pages:
        return
    await session.execute(
        sa.insert(ocr_pages),
        [
            {"document_id": document_id, "page_no": p.page_no, "width": p.width,
             "height": p.height, "text": page_text(p), "source": p.source.value,
             "scale": p.scale, "blocks": msgspec.to_builtins(p.blocks)}
            for p in pages
        ],
    )
    lines = [
        {"document_id": document_id, "page_no": p.page_no, "line_no": n, "text": line.text,
         "confidence": line.confidence, "bbox": corners(line.bbox)}
        for p in pages
        for n, line in enumerate(p.lines, start=1)
    ]
    if lines:
        await session.execute(sa.insert(ocr_lines), lines)
