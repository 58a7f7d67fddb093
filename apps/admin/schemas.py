"""Request and response bodies of the admin API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import msgspec
from litestar.datastructures import UploadFile

from apps.admin.models import DocumentStatus
from shared.layout import Block, Source


@dataclass
class UploadForm:
    """``multipart/form-data`` with one field ``file``."""

    file: UploadFile
    """The scan or PDF; its type is decided from its first bytes."""


class UploadAccepted(msgspec.Struct, kw_only=True):
    document_id: uuid.UUID
    """The new document (also in ``Location``)."""
    status: DocumentStatus
    """``pending`` until the OCR worker claims it."""


class OcrLineOut(msgspec.Struct, kw_only=True):
    text: str
    """The recognised text of the line."""
    confidence: float
    """0..1 as reported by the engine."""
    bbox: list[list[float]]
    """Four ``[x, y]`` corners in page pixels: top-left, top-right, bottom-right, bottom-left."""


class OcrPageOut(msgspec.Struct, kw_only=True):
    page_no: int
    """1-based page number."""
    width: int
    """Width of the page in pixels (a PDF page: points x ``scale``)."""
    height: int
    """Page height in pixels."""
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
    """The document's id."""
    owner_id: uuid.UUID
    """Who uploaded it."""
    filename: str
    """The original name, reduced to a safe subset, with the sniffed extension."""
    media_type: str
    """`image/png`, `image/jpeg`, `image/tiff` or `application/pdf`."""
    size_bytes: int
    """Size of the stored file."""
    page_count: int
    """Pages (1 for a single image)."""
    status: DocumentStatus
    """``pending`` -> ``processing`` -> ``completed`` or ``failed``."""
    failure_reason: str | None
    """Why OCR failed (status `failed`)."""
    engine: str | None
    """The OCR engine that read it (`tesseract`, `easyocr`)."""
    legal_hold: bool
    """Held documents cannot be deleted."""
    created_at: datetime
    """Upload time."""
    updated_at: datetime
    """Last change."""
    completed_at: datetime | None
    """When OCR finished."""


class DocumentDetail(DocumentSummary, kw_only=True):
    pages: list[OcrPageOut]
    """OCR text per page with its lines (empty until the document is completed)."""


class DocumentPage(msgspec.Struct, kw_only=True):
    items: list[DocumentSummary]
    """This page of documents."""
    total: int
    """Every matching document."""
    limit: int
    """Page size asked for."""
    offset: int
    """Documents skipped."""


class DocumentHit(DocumentSummary, kw_only=True):
    rank: float
    """Relevance (sum of the matching pages' ``ts_rank_cd``); hits come best first."""
    page_no: int
    """The page the snippet comes from (the best-matching one)."""
    snippet: str
    """Words around the matches on that page, each match wrapped in ``**``."""


class DocumentSearchPage(msgspec.Struct, kw_only=True):
    q: str
    """The search as sent."""
    items: list[DocumentHit]
    """This page of hits, best first."""
    total: int
    """Documents matching ``q`` (with the other filters)."""
    limit: int
    """Page size asked for."""
    offset: int
    """Hits skipped."""


class LegalHoldIn(msgspec.Struct, kw_only=True):
    legal_hold: bool
    """`true` to place the hold, `false` to lift it."""


class LegalHoldOut(msgspec.Struct, kw_only=True):
    document_id: uuid.UUID
    """The document."""
    legal_hold: bool
    """The hold as it is now."""
