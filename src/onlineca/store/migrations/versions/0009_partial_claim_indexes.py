"""The scheduler's claim indexes made partial; the lone ``operation`` and ``renewal_due_at`` indexes dropped.

``(operation, renewal_due_at, id)`` becomes ``(renewal_due_at, id) WHERE operation = 'OPERATION_NONE'``
and ``(operation, operation_deadline, id)`` becomes ``(operation_deadline, id) WHERE operation =
'OPERATION_UPGRADE'``: each claim reads the same rows in the same order, a row the claim moves to
the other operation gets no entry in the index it came from, and ``ix_device_operation`` (every
row, one of three values) and ``ix_device_renewal_due_at`` (the due claim and fleet_stats' backlog
ask for OPERATION_NONE too: the partial index; device_report.overdue ORs it with a condition no
index serves) go: a scheduled renewal rewrites its row with every index (no HOT
update), so 100,000 renewals wrote 100,000 entries into each of the four (bench/scheduler_bench.py).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NONE = sa.text("operation = 'OPERATION_NONE'")
_UPGRADE = sa.text("operation = 'OPERATION_UPGRADE'")


def upgrade() -> None:
    op.drop_index("ix_device_operation_due", table_name="device")
    op.drop_index("ix_device_operation_deadline", table_name="device")
    op.drop_index("ix_device_operation", table_name="device")
    op.drop_index("ix_device_renewal_due_at", table_name="device")
    op.create_index("ix_device_due_claim", "device", ["renewal_due_at", "id"], unique=False,
                    postgresql_where=_NONE, sqlite_where=_NONE)
    op.create_index("ix_device_late_claim", "device", ["operation_deadline", "id"], unique=False,
                    postgresql_where=_UPGRADE, sqlite_where=_UPGRADE)


def downgrade() -> None:
    op.drop_index("ix_device_late_claim", table_name="device")
    op.drop_index("ix_device_due_claim", table_name="device")
    op.create_index("ix_device_renewal_due_at", "device", ["renewal_due_at"], unique=False)
    op.create_index("ix_device_operation", "device", ["operation"], unique=False)
    op.create_index("ix_device_operation_deadline", "device", ["operation", "operation_deadline", "id"], unique=False)
    op.create_index("ix_device_operation_due", "device", ["operation", "renewal_due_at", "id"], unique=False)
