"""The public device flow: each profile's LSC issuer, and how each device spoke at its last session.

``profile.issuer`` ("online-ca" or "capf"), ``device.client_flow`` ("public" or "extended") and
``device.client_capabilities`` (what it announced).  LSC rows gain the state ``discarded`` (a
value of the existing column).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("profile") as batch:
        batch.add_column(sa.Column("issuer", sa.String(length=16), nullable=False, server_default="online-ca"))
    with op.batch_alter_table("device") as batch:
        batch.add_column(sa.Column("client_flow", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("client_capabilities", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device") as batch:
        batch.drop_column("client_capabilities")
        batch.drop_column("client_flow")
    with op.batch_alter_table("profile") as batch:
        batch.drop_column("issuer")
