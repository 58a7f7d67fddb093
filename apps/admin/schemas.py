"""Request and response bodies of the admin API."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime

import msgspec
from litestar.datastructures import UploadFile

from shared.layout import Block, Source


@dataclass
class UploadForm:
    """``multipart/form-data`` with one field ``file``."""

    file: UploadFile


class DocumentStatusParam(enum.StrEnum):
    """A document's status as a query filter."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


class UploadAccepted(msgspec.Struct, kw_only=True):
    document_id: uuid.UUID
    status: str


class OcrLineOut(msgspec.Struct, kw_only=True):
    text: str
    confidence: float
    """0..1 as reported by the engine."""
    bbox: list[list[float]]
    """Four ``[x, y]`` corners in page pixels: top-left, top-right, bottom-right, bottom-left."""


class OcrPageOut(msgspec.Struct, kw_only=True):
    page_no: int
    width: int
    """Width of the page in pixels (a PDF page: points x ``scale``)."""
    height: int
    text: str
    """The page's text in reading order: blocks separated by a blank line."""
    source: Source
    """``ocr`` (recognised from the image) or ``text_layer`` (read from the PDF's text)."""
    scale: float
    """Pixels per PDF point (``OCR_PDF_DPI / 72``) for PDF pages; 1.0 for images."""
    lines: list[OcrLineOut]
    """Every line in reading order (the flat view of ``blocks``)."""
    blocks: list[Block]
    """Blocks in reading order, each with its paragraphs, lines and words; boxes are
    ``[x0, y0, x1, y1]`` in page pixels, confidences 0..1 at every level."""


class DocumentSummary(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    owner_id: uuid.UUID
    filename: str
    media_type: str
    size_bytes: int
    page_count: int
    status: str
    """``pending``, ``processing``, ``completed`` or ``failed``."""
    failure_reason: str | None
    engine: str | None
    legal_hold: bool
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class DocumentDetail(DocumentSummary, kw_only=True):
    pages: list[OcrPageOut]
    """OCR text per page with its lines (empty until the document is completed)."""


class DocumentPage(msgspec.Struct, kw_only=True):
    items: list[DocumentSummary]
    total: int
    limit: int
    offset: int


class DocumentHit(DocumentSummary, kw_only=True):
    rank: float
    """Relevance (sum of the matching pages' ``ts_rank_cd``); hits come best first."""
    page_no: int
    """The page the snippet comes from (the best-matching one)."""
    snippet: str
    """Words around the matches on that page, each match wrapped in ``**``."""


class DocumentSearchPage(msgspec.Struct, kw_only=True):
    q: str
    items: list[DocumentHit]
    total: int
    """Documents matching ``q`` (with the other filters)."""
    limit: int
    offset: int


class LegalHoldIn(msgspec.Struct, kw_only=True):
    legal_hold: bool


class LegalHoldOut(msgspec.Struct, kw_only=True):
    document_id: uuid.UUID
    legal_hold: bool
