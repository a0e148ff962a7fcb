"""Indexes for the renewal scheduler's claims: devices by operation, then renewal_due_at or the deadline.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_device_operation_due", "device", ["operation", "renewal_due_at", "id"], unique=False)
    op.create_index("ix_device_operation_deadline", "device", ["operation", "operation_deadline", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_device_operation_deadline", table_name="device")
    op.drop_index("ix_device_operation_due", table_name="device")
