"""admindb: documents, their content (bytea) and OCR results per page and line.

Revision ID: admindb_0002
Revises: admindb_0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

from apps.admin.models import document_blobs, documents, ocr_lines, ocr_pages

revision = "admindb_0002"
down_revision = "admindb_0001"
branch_labels = None
depends_on = None

_TABLES = (documents, document_blobs, ocr_pages, ocr_lines)


def upgrade() -> None:
    bind = op.get_bind()
    for table in _TABLES:
        table.create(bind)
    # Large scans: store the bytes out of line without trying to compress them again.
    op.execute("ALTER TABLE document_blobs ALTER COLUMN content SET STORAGE EXTERNAL")


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(_TABLES):
        table.drop(bind)
