"""authdb: a spent refresh token remembers the token it was exchanged for.

``refresh_tokens.replaced_by`` is the ``jti`` issued when the token was spent. Within the
reuse grace (``REFRESH_REUSE_GRACE_S``) a second presentation of a just-spent token answers
with that same successor instead of revoking the family: a client that sent two refreshes
at once is not logged out, and the family still has one live token.

Revision ID: authdb_0007
Revises: authdb_0006
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "authdb_0007"
down_revision = "authdb_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE refresh_tokens ADD COLUMN replaced_by uuid")


def downgrade() -> None:
    op.execute("ALTER TABLE refresh_tokens DROP COLUMN replaced_by")
