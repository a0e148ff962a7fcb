"""The CAPF tables: profile, device (with its renewal and lease columns), lsc, device_event.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("device_event",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("device_name", sa.String(length=64), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column("actor", sa.String(length=128), nullable=False),
    sa.Column("event", sa.String(length=64), nullable=False),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint("id")
    )
    with op.batch_alter_table("device_event", schema=None) as batch_op:
        batch_op.create_index("ix_device_event_device_name", ["device_name", "at"], unique=False)

    op.create_table("profile",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=64), nullable=False),
    sa.Column("description", sa.String(length=256), nullable=False),
    sa.Column("auth_mode", sa.String(length=32), nullable=False),
    sa.Column("key_order", sa.String(length=40), nullable=False),
    sa.Column("rsa_key_size", sa.Integer(), nullable=False),
    sa.Column("ec_key_size", sa.Integer(), nullable=False),
    sa.Column("deadline_days", sa.Integer(), nullable=False),
    sa.Column("renewal_enabled", sa.Boolean(), nullable=False),
    sa.Column("renewal_fraction", sa.Float(), nullable=False),
    sa.Column("renewal_days_before", sa.Integer(), nullable=True),
    sa.Column("renewal_jitter", sa.Float(), nullable=False),
    sa.Column("auto_enroll_mic", sa.Boolean(), nullable=False),
    sa.Column("mic_trust_store", sa.String(length=1024), nullable=False),
    sa.Column("auto_enroll_name_pattern", sa.String(length=128), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("name")
    )
    op.create_table("device",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("name", sa.String(length=64), nullable=False),
    sa.Column("model", sa.String(length=64), nullable=False),
    sa.Column("description", sa.String(length=256), nullable=False),
    sa.Column("profile_id", sa.Integer(), nullable=True),
    sa.Column("auth_mode", sa.String(length=32), nullable=True),
    sa.Column("key_order", sa.String(length=40), nullable=True),
    sa.Column("rsa_key_size", sa.Integer(), nullable=True),
    sa.Column("ec_key_size", sa.Integer(), nullable=True),
    sa.Column("auth_string", sa.String(length=16), nullable=True),
    sa.Column("operation", sa.String(length=32), nullable=False),
    sa.Column("operation_deadline", sa.DateTime(timezone=True), nullable=True),
    sa.Column("operation_auth_mode", sa.String(length=32), nullable=True),
    sa.Column("status", sa.String(length=64), nullable=False),
    sa.Column("status_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("lsc_serial", sa.String(length=64), nullable=True),
    sa.Column("lsc_issuer", sa.String(length=1024), nullable=True),
    sa.Column("lsc_not_before", sa.DateTime(timezone=True), nullable=True),
    sa.Column("lsc_not_after", sa.DateTime(timezone=True), nullable=True),
    sa.Column("renewal_due_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("renewal_for_serial", sa.String(length=64), nullable=True),
    sa.Column("renewal_scheduled_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("renewal_attempts", sa.Integer(), nullable=False),
    sa.Column("renewal_next_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("renewal_last_error", sa.String(length=256), nullable=False),
    sa.Column("failed_auth_count", sa.Integer(), nullable=False),
    sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("lease_owner", sa.String(length=128), nullable=True),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(["profile_id"], ["profile.id"], ondelete="RESTRICT"),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("name")
    )
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.create_index("ix_device_lsc_not_after", ["lsc_not_after"], unique=False)
        batch_op.create_index("ix_device_operation", ["operation"], unique=False)
        batch_op.create_index("ix_device_renewal_due_at", ["renewal_due_at"], unique=False)
        batch_op.create_index("ix_device_status", ["status"], unique=False)
    op.create_table("lsc",
    sa.Column("id", sa.Integer(), nullable=False),
    sa.Column("device_id", sa.Integer(), nullable=False),
    sa.Column("serial", sa.String(length=64), nullable=False),
    sa.Column("issuer", sa.String(length=1024), nullable=False),
    sa.Column("subject", sa.String(length=1024), nullable=False),
    sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
    sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
    sa.Column("der", sa.LargeBinary(), nullable=False),
    sa.Column("state", sa.String(length=16), nullable=False),
    sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("installed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(["device_id"], ["device.id"], ondelete="CASCADE"),
    sa.PrimaryKeyConstraint("id"),
    sa.UniqueConstraint("issuer", "serial", name="uq_lsc_issuer_serial")
    )
    with op.batch_alter_table("lsc", schema=None) as batch_op:
        batch_op.create_index("ix_lsc_device_id", ["device_id"], unique=False)
        batch_op.create_index("ix_lsc_state", ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("lsc", schema=None) as batch_op:
        batch_op.drop_index("ix_lsc_state")
        batch_op.drop_index("ix_lsc_device_id")

    op.drop_table("lsc")
    with op.batch_alter_table("device", schema=None) as batch_op:
        batch_op.drop_index("ix_device_status")
        batch_op.drop_index("ix_device_renewal_due_at")
        batch_op.drop_index("ix_device_operation")
        batch_op.drop_index("ix_device_lsc_not_after")

    op.drop_table("device")
    op.drop_table("profile")
    with op.batch_alter_table("device_event", schema=None) as batch_op:
        batch_op.drop_index("ix_device_event_device_name")

    op.drop_table("device_event")
