"""apidb tables owned by the users API (the outbox and inbox live in ``outbox.schema``)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

metadata = sa.MetaData()

profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("user_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("display_name", sa.Text),
    sa.Column("bio", sa.Text),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.Column(
        "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    # Set while a deletion saga has archived the profile; NULL when live.
    sa.Column("deleted_at", sa.DateTime(timezone=True)),
    sa.Column("deleted_by_saga", sa.UUID(as_uuid=True)),
)
