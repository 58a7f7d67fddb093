"""HTTP routes of the admin API; each one hands over to a service."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec
from litestar import Controller, Response, delete, get, post, put
from litestar.di import Provide
from litestar.enums import RequestEncodingType
from litestar.params import Body, Parameter
from sqlalchemy.ext.asyncio import AsyncSession

from apps.admin import services
from apps.admin.audit_trail import AuditTrail
from apps.admin.limits import RedisUploadLimit
from apps.admin.models import DocumentStatus
from apps.admin.schemas import (
    DocumentDetail,
    DocumentHit,
    DocumentPage,
    DocumentSearchPage,
    DocumentSummary,
    LegalHoldIn,
    LegalHoldOut,
    UploadAccepted,
    UploadForm,
)
from apps.admin.services import UploadLimits, Viewer
from apps.admin.structure import TextFormat
from shared.auth import SECURITY, Principal, current_principal
from shared.contract import also_served_as
from shared.documents import Inspector
from shared.http import LOCATION, NO_NUL, error_responses

MAX_QUERY = 200
"""Longest search query accepted (characters)."""

MAX_OFFSET = 2**53 - 1
"""Below PostgreSQL's bigint OFFSET (a larger one would fail in the driver, a 500), and exact in
the OpenAPI document: the schema renders the bound as a JSON number, which 2**63 - 1 is not
(it rounds up to 2**63, so clients were told a value valid that the API refused)."""


def viewer_of(principal: Principal) -> Viewer:
    return Viewer(user_id=principal.user_id, is_admin=principal.is_admin)


class DocumentController(Controller):
    path = "/documents"
    tags = ["documents"]
    security = SECURITY
    dependencies = {"principal": Provide(current_principal)}

    @post(
        "/", operation_id="uploadDocument", status_code=202,
        responses=error_responses(401, 413, 415, 422, 429, 503),
        summary="Upload a scan or PDF for OCR",
        response_headers=[LOCATION],
    )
    async def upload(
        self, *, principal: Principal, db_session: AsyncSession, upload_limits: UploadLimits,
        inspector: Inspector, upload_rate: RedisUploadLimit,
        data: Annotated[UploadForm, Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> Response[UploadAccepted]:
        """Stores the file and its ``document.uploaded`` event in one transaction; the OCR
        worker fills in the text. The type is sniffed from the first bytes (PNG, JPEG, TIFF,
        PDF); 413 above UPLOAD_MAX_BYTES, 415 for another type, 422 for too many pixels or
        pages, 429 past UPLOAD_MAX_PER_MINUTE. ``Location`` is the document, to poll until
        ``status`` is final."""
        await upload_rate.check(principal.user_id)
        content = await data.file.read()
        result = await services.upload_document(
            db_session, viewer_of(principal), data.file.filename, content, upload_limits,
            inspector=inspector,
        )
        accepted = UploadAccepted(**result)
        return Response(accepted, status_code=202,
                        headers={"Location": f"/documents/{accepted.document_id}"})

    @get(
        "/", operation_id="listDocuments", responses=error_responses(401, 422, 503),
        summary="Documents, newest first (one's own; every document for admins)",
    )
    async def list_documents(  # noqa: PLR0917 - one parameter per query filter
        self, principal: Principal, db_session: AsyncSession,
        limit: Annotated[int, Parameter(ge=1, le=100)] = 20,
        offset: Annotated[int, Parameter(ge=0, le=MAX_OFFSET)] = 0,
        owner_id: Annotated[
            uuid.UUID | None, Parameter(description="Only this owner's (admins)")
        ] = None,
        status: Annotated[DocumentStatus | None, Parameter(description="Only this status")]
        = None,
        legal_hold: Annotated[bool | None, Parameter(description="Only held / not held")] = None,
        q: Annotated[str | None, Parameter(
            min_length=1, max_length=MAX_QUERY, pattern=NO_NUL,
            description='Full-text search of the OCR text (words, "phrases", or, -word): '
                        "hits best first, each with a snippet",
        )] = None,
    ) -> DocumentPage | DocumentSearchPage:
        """A page of documents without their text; ``total`` counts every match. Filters
        combine; ``owner_id`` never widens what a non-admin sees. With ``q``: full-text
        search, hits best first, each with a snippet."""
        narrow = services.DocumentFilter(
            owner_id=owner_id, status=status.value if status else None, legal_hold=legal_hold
        )
        rows, total = await services.list_documents(
            db_session, viewer_of(principal), limit=limit, offset=offset, narrow=narrow, text=q
        )
        if q is not None:
            hits = [msgspec.convert(r, DocumentHit) for r in rows]
            return DocumentSearchPage(q=q, items=hits, total=total, limit=limit, offset=offset)
        items = [msgspec.convert(r, DocumentSummary) for r in rows]
        return DocumentPage(items=items, total=total, limit=limit, offset=offset)

    @get(
        "/{document_id:uuid}/text", operation_id="getDocumentText",
        media_type="text/plain", responses=error_responses(401, 404, 409, 503),
        summary="The document's text in reading order, plain or Markdown",
        operation_class=also_served_as("text/markdown"),
    )
    async def get_document_text(
        self, principal: Principal, db_session: AsyncSession, document_id: uuid.UUID,
        fmt: Annotated[TextFormat, Parameter(
            query="format", description="plain (default) or markdown (# headings, - lists)"
        )] = TextFormat.PLAIN,
    ) -> Response[str]:
        """Blocks in reading order (columns first, tables row by row); 409 until the
        document is completed."""
        text = await services.document_text(db_session, viewer_of(principal), document_id, fmt)
        media_type = "text/markdown" if fmt is TextFormat.MARKDOWN else "text/plain"
        return Response(text, media_type=media_type)  # Litestar adds "; charset=utf-8"

    @get(
        "/{document_id:uuid}", operation_id="getDocument",
        responses=error_responses(401, 404, 503),
        summary="A document with its OCR result (owner or admin)",
    )
    async def get_document(
        self, principal: Principal, db_session: AsyncSession, document_id: uuid.UUID
    ) -> DocumentDetail:
        """Status, and once ``completed`` the text of every page with each line, its
        confidence and bounding box; ``failure_reason`` once ``failed``. Another user's
        document is a 404, as if it did not exist."""
        document: dict[str, Any] = await services.get_document(
            db_session, viewer_of(principal), document_id
        )
        return msgspec.convert(document, DocumentDetail)

    @get(
        "/{document_id:uuid}/pages/{page_no:int}/image", operation_id="getPageImage",
        media_type="image/png", responses=error_responses(401, 404, 503),
        summary="One page as PNG, in the pixels the OCR boxes refer to (owner or admin)",
    )
    async def page_image(
        self, principal: Principal, db_session: AsyncSession, upload_limits: UploadLimits,
        document_id: uuid.UUID, page_no: Annotated[int, Parameter(ge=1, le=10_000)],
    ) -> Response[bytes]:
        """PDF pages are rendered at OCR_PDF_DPI, images are converted page by page, off the
        event loop."""
        png = await services.page_image(
            db_session, viewer_of(principal), document_id, page_no, upload_limits.document
        )
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=300"})

    @delete(
        "/{document_id:uuid}", operation_id="deleteDocument", status_code=204,
        responses=error_responses(401, 404, 409, 503),
        summary="Delete a document and its OCR result (owner or admin)",
    )
    async def delete_document(
        self, principal: Principal, db_session: AsyncSession, document_id: uuid.UUID
    ) -> None:
        """409 while the document is under legal hold."""
        await services.delete_document(db_session, viewer_of(principal), document_id)

    @put(
        "/{document_id:uuid}/legal-hold", operation_id="setLegalHold",
        responses=error_responses(401, 403, 404, 422, 503),
        summary="Place or lift a legal hold (admins)",
    )
    async def set_legal_hold(
        self, principal: Principal, db_session: AsyncSession, document_id: uuid.UUID,
        data: LegalHoldIn, audit_trail: AuditTrail,
    ) -> LegalHoldOut:
        """A held document cannot be deleted, not even by a user-deletion saga (which then
        compensates). Every change, and every refused attempt, is in the operator audit."""
        result = await services.set_legal_hold(
            db_session, viewer_of(principal), document_id, hold=data.legal_hold,
            audit=audit_trail.recorder(principal),
        )
        return LegalHoldOut(**result)
