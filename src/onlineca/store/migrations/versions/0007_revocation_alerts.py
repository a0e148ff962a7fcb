"""Revocation and alerts: our CA's revocations and CRLs, CAPF's queue of LSCs to
revoke, and the state that deduplicates CAPF's alert notifications.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ca_revocation",
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("req_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("revoked_at", _TS, nullable=False),
        sa.Column("revoked_by", sa.String(length=256), nullable=False),
        sa.Column("not_after", _TS, nullable=True),
        sa.PrimaryKeyConstraint("serial"),
    )
    op.create_table(
        "ca_crl",
        sa.Column("number", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("base_number", sa.Integer(), nullable=True),
        sa.Column("this_update", _TS, nullable=False),
        sa.Column("next_update", _TS, nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("number"),
    )
    op.create_index("ix_ca_crl_kind_number", "ca_crl", ["kind", "number"])
    op.create_table(
        "lsc_revocation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_name", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.String(length=1024), nullable=False),
        sa.Column("subject", sa.String(length=1024), nullable=False),
        sa.Column("not_after", _TS, nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("why", sa.String(length=512), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("requested_at", _TS, nullable=False),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=True),
        sa.Column("last_error", sa.String(length=512), nullable=False),
        sa.Column("done_at", _TS, nullable=True),
        sa.Column("done_by", sa.String(length=128), nullable=False),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("issuer", "serial", name="uq_lsc_revocation_issuer_serial"),
    )
    op.create_index("ix_lsc_revocation_state", "lsc_revocation", ["state", "next_attempt_at"])
    op.create_index("ix_lsc_revocation_device_name", "lsc_revocation", ["device_name"])
    op.create_table(
        "alert_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("condition", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("first_seen", _TS, nullable=False),
        sa.Column("last_sent", _TS, nullable=True),
        sa.Column("sent_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("condition", "subject", name="uq_alert_state_condition_subject"),
    )


def downgrade() -> None:
    op.drop_table("alert_state")
    op.drop_index("ix_lsc_revocation_device_name", table_name="lsc_revocation")
    op.drop_index("ix_lsc_revocation_state", table_name="lsc_revocation")
    op.drop_table("lsc_revocation")
    op.drop_index("ix_ca_crl_kind_number", table_name="ca_crl")
    op.drop_table("ca_crl")
    op.drop_table("ca_revocation")
