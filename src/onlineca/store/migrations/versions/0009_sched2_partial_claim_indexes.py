"""The scheduler's claim indexes made partial; the lone ``operation`` index dropped.

``(operation, renewal_due_at, id)`` becomes ``(renewal_due_at, id) WHERE operation = 'OPERATION_NONE'``
and ``(operation, operation_deadline, id)`` becomes ``(operation_deadline, id) WHERE operation =
'OPERATION_UPGRADE'``: each claim reads the same rows in the same order, a row the claim moves to
the other operation gets no entry in the index it came from, and ``ix_device_operation`` (every
row, one of three values) goes: a scheduled renewal rewrites its row with every index (no HOT
update), so 100,000 renewals wrote 100,000 entries into each of the three (bench/scheduler_bench.py).

Revision ID: 0009_sched2
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_sched2"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NONE = sa.text("operation = 'OPERATION_NONE'")
_UPGRADE = sa.text("operation = 'OPERATION_UPGRADE'")


def upgrade() -> None:
    op.drop_index("ix_device_operation_due", table_name="device")
    op.drop_index("ix_device_operation_deadline", table_name="device")
    op.drop_index("ix_device_operation", table_name="device")
    op.create_index("ix_device_due_claim", "device", ["renewal_due_at", "id"], unique=False,
                    postgresql_where=_NONE, sqlite_where=_NONE)
    op.create_index("ix_device_late_claim", "device", ["operation_deadline", "id"], unique=False,
                    postgresql_where=_UPGRADE, sqlite_where=_UPGRADE)


def downgrade() -> None:
    op.drop_index("ix_device_late_claim", table_name="device")
    op.drop_index("ix_device_due_claim", table_name="device")
    op.create_index("ix_device_operation", "device", ["operation"], unique=False)
    op.create_index("ix_device_operation_deadline", "device", ["operation", "operation_deadline", "id"], unique=False)
    op.create_index("ix_device_operation_due", "device", ["operation", "renewal_due_at", "id"], unique=False)
