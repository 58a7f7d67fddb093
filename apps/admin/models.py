"""admindb tables of the documents context: documents, their content and OCR results.

The content lives in ``document_blobs`` (bytea) so that the document row, its bytes and
the ``document.uploaded`` outbox row commit in one transaction. OCR output is one row
per page (text, source, blocks, a full-text search vector) and one row per line in
reading order (text, confidence, bounding box) for clients of the flat ``lines``.
"""

from __future__ import annotations

from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg


class DocumentStatus(StrEnum):
    """Life cycle of a document: pending -> processing -> completed | failed."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


SEARCH_CONFIG = "english"
"""PostgreSQL text search configuration of ``ocr_pages.search`` (stemming, stop words)."""

metadata = sa.MetaData()

documents = sa.Table(
    "documents",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("owner_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("filename", sa.Text, nullable=False),
    sa.Column("media_type", sa.Text, nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("page_count", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default=DocumentStatus.PENDING.value),
    sa.Column("failure_reason", sa.Text),
    sa.Column("engine", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("claimed_at", sa.DateTime(timezone=True)),
    sa.Column("legal_hold", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False,
        server_default=sa.text("clock_timestamp()"),
    ),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False,
        server_default=sa.text("clock_timestamp()"),
    ),
    sa.Column("completed_at", sa.DateTime(timezone=True)),
    sa.CheckConstraint(
        "status IN (" + ", ".join(f"'{status}'" for status in DocumentStatus) + ")",
        name="documents_status_ck",
    ),
    sa.Index("documents_owner_created_idx", "owner_id", "created_at"),
    sa.Index("documents_created_idx", "created_at"),
)

document_blobs = sa.Table(
    "document_blobs",
    metadata,
    sa.Column(
        "document_id", pg.UUID(as_uuid=True),
        sa.ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True,
    ),
    sa.Column("content", sa.LargeBinary, nullable=False),
)

ocr_pages = sa.Table(
    "ocr_pages",
    metadata,
    sa.Column(
        "document_id", pg.UUID(as_uuid=True),
        sa.ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True,
    ),
    sa.Column("page_no", sa.Integer, primary_key=True),
    sa.Column("width", sa.Integer, nullable=False),
    sa.Column("height", sa.Integer, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False, server_default="ocr"),
    sa.Column("scale", sa.Float, nullable=False, server_default="1.0"),
    sa.Column("blocks", pg.JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
    sa.Column(
        "search", pg.TSVECTOR,
        sa.Computed(f"to_tsvector('{SEARCH_CONFIG}'::regconfig, text)", persisted=True),
    ),
    sa.CheckConstraint("source IN ('ocr', 'text_layer')", name="ocr_pages_source_ck"),
    sa.Index("ocr_pages_search_idx", "search", postgresql_using="gin"),
)
"""One row per page: its plain text in reading order, where it came from, the scale of its
boxes and its blocks (JSON, the shape of ``shared.layout.Block``); ``search`` is generated."""

ocr_lines = sa.Table(
    "ocr_lines",
    metadata,
    sa.Column("document_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("page_no", sa.Integer, primary_key=True),
    sa.Column("line_no", sa.Integer, primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("bbox", pg.JSONB, nullable=False),
    sa.ForeignKeyConstraint(
        ["document_id", "page_no"], ["ocr_pages.document_id", "ocr_pages.page_no"],
        ondelete="CASCADE",
    ),
)
