"""The ca_request table: the CA's requests, their ReqID sequence, dispositions and certificates.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ca_request",
        sa.Column("req_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("requester", sa.String(length=256), nullable=False),
        sa.Column("template", sa.String(length=256), nullable=False),
        sa.Column("csr_der", sa.LargeBinary(), nullable=False),
        sa.Column("attributes", sa.Text(), nullable=False),
        sa.Column("subject", sa.String(length=1024), nullable=False),
        sa.Column("disposition", sa.String(length=16), nullable=False),
        sa.Column("disposition_message", sa.Text(), nullable=False),
        sa.Column("hresult", sa.Integer(), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=True),
        sa.Column("cert_der", sa.LargeBinary(), nullable=True),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("submitted_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolved_by", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("req_id"),
        sa.UniqueConstraint("serial"),
        # ReqIDs are never reused (see models.CARequest).
        sqlite_autoincrement=True,
    )
    op.create_index("ix_ca_request_disposition", "ca_request", ["disposition"], unique=False)
    op.create_index("ix_ca_request_requester", "ca_request", ["requester"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_ca_request_requester", table_name="ca_request")
    op.drop_index("ix_ca_request_disposition", table_name="ca_request")
    op.drop_table("ca_request")
