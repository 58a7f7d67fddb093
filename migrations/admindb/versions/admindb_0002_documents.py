"""admindb: documents, their content (bytea) and OCR results per page and line.

Revision ID: admindb_0002
Revises: admindb_0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "admindb_0002"
down_revision = "admindb_0001"
branch_labels = None
depends_on = None

# Frozen DDL: the tables as this revision creates them, whatever the models say later
# (a later change to a table is a later revision).
_CREATE = (
    """
    CREATE TABLE documents (
        id UUID NOT NULL,
        owner_id UUID NOT NULL,
        filename TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size_bytes BIGINT NOT NULL,
        sha256 TEXT NOT NULL,
        page_count INTEGER NOT NULL,
        status TEXT DEFAULT 'pending' NOT NULL,
        failure_reason TEXT,
        engine TEXT,
        attempts INTEGER DEFAULT '0' NOT NULL,
        claimed_at TIMESTAMP WITH TIME ZONE,
        legal_hold BOOLEAN DEFAULT false NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT clock_timestamp() NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT clock_timestamp() NOT NULL,
        completed_at TIMESTAMP WITH TIME ZONE,
        PRIMARY KEY (id),
        CONSTRAINT documents_status_ck
            CHECK (status IN ('pending', 'processing', 'completed', 'failed'))
    )
    """,
    "CREATE INDEX documents_created_idx ON documents (created_at)",
    "CREATE INDEX documents_owner_created_idx ON documents (owner_id, created_at)",
    """
    CREATE TABLE document_blobs (
        document_id UUID NOT NULL,
        content BYTEA NOT NULL,
        PRIMARY KEY (document_id),
        FOREIGN KEY (document_id) REFERENCES documents (id) ON DELETE CASCADE
    )
    """,
    """
    CREATE TABLE ocr_pages (
        document_id UUID NOT NULL,
        page_no INTEGER NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        text TEXT NOT NULL,
        PRIMARY KEY (document_id, page_no),
        FOREIGN KEY (document_id) REFERENCES documents (id) ON DELETE CASCADE
    )
    """,
    """
    CREATE TABLE ocr_lines (
        document_id UUID NOT NULL,
        page_no INTEGER NOT NULL,
        line_no INTEGER NOT NULL,
        text TEXT NOT NULL,
        confidence FLOAT NOT NULL,
        bbox JSONB NOT NULL,
        PRIMARY KEY (document_id, page_no, line_no),
        FOREIGN KEY (document_id, page_no)
            REFERENCES ocr_pages (document_id, page_no) ON DELETE CASCADE
    )
    """,
)


def upgrade() -> None:
    for statement in _CREATE:
        op.execute(statement)
    # Large scans: store the bytes out of line without trying to compress them again.
    op.execute("ALTER TABLE document_blobs ALTER COLUMN content SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.execute("DROP TABLE ocr_lines, ocr_pages, document_blobs, documents")
