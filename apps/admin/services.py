"""Documents: upload, read, delete, legal hold. Pure logic over an open session.

Services take the caller's view (:class:`Viewer`) rather than an HTTP principal and raise
``shared.errors``; the app maps those to HTTP once. A document the viewer may not see
is reported as :class:`NotFound`, so its existence is not revealed.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import pypdfium2
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from apps.admin import structure
from apps.admin.models import DocumentStatus, document_blobs, documents, ocr_lines, ocr_pages
from apps.auth.audit import AuditAction, AuditOutcome
from outbox.writer import Emitter
from shared.config import Settings
from shared.documents import (
    PDF,
    Inspector,
    Limits,
    check_name,
    inspect,
    rasterise,
    render_page,
    safe_filename,
)
from shared.errors import (
    LegalHold,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QuotaExceeded,
)
from shared.events import DocumentUploaded


@dataclass(frozen=True)
class Viewer:
    user_id: uuid.UUID
    is_admin: bool = False


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    document: Limits
    quota_documents: int = 1000
    quota_bytes: int = 1024 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(
            max_bytes=settings.uploads.max_bytes,
            document=Limits(
                max_pixels=settings.uploads.max_pixels, max_pages=settings.uploads.max_pages,
                pdf_dpi=settings.ocr.pdf_dpi,
            ),
            quota_documents=settings.uploads.quota_documents,
            quota_bytes=settings.uploads.quota_bytes,
        )


def _visible(viewer: Viewer) -> sa.ColumnElement[bool]:
    return sa.true() if viewer.is_admin else documents.c.owner_id == viewer.user_id


def _plain(mapping: Any) -> dict[str, Any]:
    # Column names are ``quoted_name`` (a str subclass); callers want plain str keys.
    return {str(key): value for key, value in mapping.items()}


_SUMMARY = (
    documents.c.id, documents.c.owner_id, documents.c.filename, documents.c.media_type,
    documents.c.size_bytes, documents.c.page_count, documents.c.status,
    documents.c.failure_reason, documents.c.engine, documents.c.legal_hold,
    documents.c.created_at, documents.c.updated_at, documents.c.completed_at,
)


async def upload_document(
    session: AsyncSession, viewer: Viewer, filename: str | None, content: bytes,
    limits: UploadLimits, *, inspector: Inspector | None = None,
) -> dict[str, Any]:
    """Validate and store a document with its bytes and ``document.uploaded`` (one transaction).

    The content is inspected off the event loop (``inspector``; the API passes its own), so
    a crafted file slows only its own request.
    """
    if len(content) > limits.max_bytes:
        raise PayloadTooLarge(f"file is larger than the limit of {limits.max_bytes} bytes")
    inspected = await (inspector or Inspector.shared()).inspect(content, limits.document)
    info = inspected.info
    check_name(filename, info.media_type)
    await _check_quota(session, viewer.user_id, len(content), limits)
    document_id = uuid.uuid4()
    await session.execute(
        sa.insert(documents).values(
            id=document_id, owner_id=viewer.user_id,
            filename=safe_filename(filename, info.media_type), media_type=info.media_type,
            size_bytes=len(content), sha256=inspected.sha256,
            page_count=info.pages,
        )
    )
    await session.execute(
        sa.insert(document_blobs).values(document_id=document_id, content=content)
    )
    await Emitter.current()(
        session,
        DocumentUploaded(
            document_id=document_id, owner_id=viewer.user_id, media_type=info.media_type,
            size_bytes=len(content),
        ),
    )
    return {"document_id": document_id, "status": DocumentStatus.PENDING}


async def _check_quota(
    session: AsyncSession, owner: uuid.UUID, size: int, limits: UploadLimits
) -> None:
    """:class:`QuotaExceeded` when this upload would take the owner past a quota. The
    owner's uploads are serialised for the rest of the transaction (an advisory lock), so
    concurrent uploads cannot all slip under the limit together."""
    await session.execute(sa.select(sa.func.pg_advisory_xact_lock(
        sa.func.hashtextextended(f"upload-quota:{owner}", 0))))
    count, total = (await session.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(documents.c.size_bytes), 0))
        .where(documents.c.owner_id == owner)
    )).one()
    if count + 1 > limits.quota_documents:
        raise QuotaExceeded(
            f"you have {count} documents, the most allowed is {limits.quota_documents}; "
            "delete some first")
    if total + size > limits.quota_bytes:
        raise QuotaExceeded(
            f"this upload would take your documents to {total + size} bytes, more than the "
            f"quota of {limits.quota_bytes}; delete some first")


@dataclass(frozen=True)
class DocumentFilter:
    """Optional narrowing of a document list (every field ``None`` = no narrowing)."""

    owner_id: uuid.UUID | None = None
    status: str | None = None
    legal_hold: bool | None = None

    def where(self) -> sa.ColumnElement[bool]:
        conditions: list[sa.ColumnElement[bool]] = [sa.true()]
        if self.owner_id is not None:
            conditions.append(documents.c.owner_id == self.owner_id)
        if self.status is not None:
            conditions.append(documents.c.status == self.status)
        if self.legal_hold is not None:
            conditions.append(documents.c.legal_hold == self.legal_hold)
        return sa.and_(*conditions)


async def list_documents(
    session: AsyncSession, viewer: Viewer, *, limit: int, offset: int,
    narrow: DocumentFilter | None = None, text: str | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """One page of the viewer's documents (all for admins) and the total: newest first, or,
    with ``text``, those whose OCR text matches it, best first, each with a ``snippet``."""
    where = sa.and_(_visible(viewer), (narrow or DocumentFilter()).where())
    if text is not None:
        return await structure.search(
            session, where, text, columns=_SUMMARY, limit=limit, offset=offset
        )
    rows = await session.execute(
        sa.select(*_SUMMARY).where(where)
        .order_by(documents.c.created_at.desc(), documents.c.id.desc())
        .limit(limit).offset(offset)
    )
    total = await session.scalar(sa.select(sa.func.count()).select_from(documents).where(where))
    return [_plain(row._mapping) for row in rows], int(total or 0)


async def get_document(
    session: AsyncSession, viewer: Viewer, document_id: uuid.UUID
) -> dict[str, Any]:
    """A document with its OCR pages: structure and lines (empty until completed)."""
    document = await _summary(session, viewer, document_id)
    document["pages"] = await _pages(session, document_id)
    return document


async def document_text(
    session: AsyncSession, viewer: Viewer, document_id: uuid.UUID, fmt: structure.TextFormat
) -> str:
    """A completed document's text in reading order, plain or Markdown."""
    document = await _summary(session, viewer, document_id)
    return await structure.document_text(session, document, fmt)


async def _summary(
    session: AsyncSession, viewer: Viewer, document_id: uuid.UUID
) -> dict[str, Any]:
    row = (
        await session.execute(
            sa.select(*_SUMMARY).where(documents.c.id == document_id, _visible(viewer))
        )
    ).first()
    if row is None:
        raise NotFound(f"document {document_id} not found")
    return _plain(row._mapping)


_PAGE = (ocr_pages.c.page_no, ocr_pages.c.width, ocr_pages.c.height, ocr_pages.c.text,
         ocr_pages.c.source, ocr_pages.c.scale, ocr_pages.c.blocks)


async def _pages(session: AsyncSession, document_id: uuid.UUID) -> list[dict[str, Any]]:
    pages = {
        r.page_no: {**_plain(r._mapping), "lines": []}
        for r in await session.execute(
            sa.select(*_PAGE).where(ocr_pages.c.document_id == document_id)
            .order_by(ocr_pages.c.page_no)
        )
    }
    lines = await session.execute(
        sa.select(ocr_lines).where(ocr_lines.c.document_id == document_id)
        .order_by(ocr_lines.c.page_no, ocr_lines.c.line_no)
    )
    for r in lines:
        pages[r.page_no]["lines"].append(
            {"text": r.text, "confidence": r.confidence, "bbox": r.bbox}
        )
    return list(pages.values())


async def page_image(
    session: AsyncSession, viewer: Viewer, document_id: uuid.UUID, page_no: int,
    limits: Limits,
) -> bytes:
    """Page ``page_no`` (1-based) as PNG, rendered as the OCR worker saw it (PDF pages at
    ``OCR_PDF_DPI``), so the OCR boxes fit it pixel for pixel. Owner or admin only."""
    content = await session.scalar(
        sa.select(document_blobs.c.content)
        .join(documents, documents.c.id == document_blobs.c.document_id)
        .where(documents.c.id == document_id, _visible(viewer))
    )
    if content is None:
        raise NotFound(f"document {document_id} not found")
    # Rendering is CPU work: off the event loop (a big PDF page takes tens of milliseconds).
    return await asyncio.get_running_loop().run_in_executor(
        None, render_page_png, bytes(content), page_no, limits
    )


def render_page_png(content: bytes, page_no: int, limits: Limits) -> bytes:
    """PNG bytes of one page; :class:`NotFound` when the document has no such page. A PDF
    renders only that page (page 40 does not render the 39 before it)."""
    info = inspect(content, limits)
    if not 1 <= page_no <= info.pages:
        raise NotFound(f"the document has no page {page_no}")
    if info.media_type == PDF:
        pdf = pypdfium2.PdfDocument(content)
        try:
            page = pdf[page_no - 1]
            try:
                image = render_page(page, page_no - 1, limits)
            finally:
                page.close()
        finally:
            pdf.close()
    else:
        image = next(itertools.islice(rasterise(content, limits), page_no - 1, None))
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=3)
    return out.getvalue()


async def delete_document(session: AsyncSession, viewer: Viewer, document_id: uuid.UUID) -> None:
    """Delete a document and everything derived from it; refused under legal hold."""
    held = await session.scalar(
        sa.select(documents.c.legal_hold)
        .where(documents.c.id == document_id, _visible(viewer))
        .with_for_update()
    )
    if held is None:
        raise NotFound(f"document {document_id} not found")
    if held:
        raise LegalHold(f"document {document_id} is under legal hold")
    await session.execute(sa.delete(documents).where(documents.c.id == document_id))


class AuditSink(Protocol):
    """Records one operator action (``apps.admin.audit_trail`` writes the audit table)."""

    async def __call__(self, action: str, target: str, outcome: AuditOutcome,
                       details: dict[str, Any]) -> None: ...


async def set_legal_hold(
    session: AsyncSession, viewer: Viewer, document_id: uuid.UUID, *, hold: bool,
    audit: AuditSink,
) -> dict[str, Any]:
    """Place or lift a legal hold (admins only); every attempt is recorded in ``audit``
    before the transaction commits."""
    target = str(document_id)
    details = {"legal_hold": hold}
    if not viewer.is_admin:
        await audit(AuditAction.DOCUMENT_LEGAL_HOLD, target, AuditOutcome.DENIED,
                    details | {"error": "not an admin"})
        raise PermissionDenied("only admins may change a legal hold")
    result = await session.execute(
        sa.update(documents).where(documents.c.id == document_id)
        .values(legal_hold=hold, updated_at=sa.func.clock_timestamp())
        .returning(documents.c.id, documents.c.legal_hold)
    )
    row = result.first()
    if row is None:
        await audit(AuditAction.DOCUMENT_LEGAL_HOLD, target, AuditOutcome.DENIED,
                    details | {"error": "document not found"})
        raise NotFound(f"document {document_id} not found")
    await audit(AuditAction.DOCUMENT_LEGAL_HOLD, target, AuditOutcome.OK, details)
    return {"document_id": row.id, "legal_hold": row.legal_hold}


async def delete_user_documents(session: AsyncSession, user_id: uuid.UUID) -> int:
    """Deletion saga step: delete all documents of ``user_id``; :class:`LegalHold` if any is held.

    All or nothing: the rows are locked first, so a hold placed concurrently either
    blocks the deletion or waits for it. Returns the number of documents deleted.
    """
    rows = (
        await session.execute(
            sa.select(documents.c.id, documents.c.legal_hold)
            .where(documents.c.owner_id == user_id)
            .with_for_update()
        )
    ).all()
    held = [str(r.id) for r in rows if r.legal_hold]
    if held:
        raise LegalHold(
            f"{len(held)} document(s) of user {user_id} under legal hold: {', '.join(held)}"
        )
    if rows:
        await session.execute(sa.delete(documents).where(documents.c.owner_id == user_id))
    return len(rows)
