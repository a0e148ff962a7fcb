"""The RA's pending requests : keyed by public key + names + requester, shared by RA processes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ra_pending_request",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("req_id", sa.Integer(), nullable=True),
        sa.Column("cert_der", sa.LargeBinary(), nullable=True),
        sa.Column("requester", sa.String(length=256), nullable=False),
        sa.Column("subject", sa.String(length=1024), nullable=False),
        sa.Column("ca_url", sa.String(length=1024), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_ra_pending_request_updated_at", "ra_pending_request", ["updated_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ra_pending_request_updated_at", table_name="ra_pending_request")
    op.drop_table("ra_pending_request")
