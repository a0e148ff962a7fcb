"""Auth strings kept as salted hashes; the enrollment outbox.

``device.auth_string`` (clear digits) becomes ``device.auth_string_hash`` (``scrypt$n$r$p$salt$hash``,
the users file's format): every string already stored is hashed here, then the clear column is
dropped.  ``lsc_intent`` records an enrollment before CAPF sends it to the RA (so a crash between
the CA issuing and CAPF recording leaves a trace reconciliation follows); what must be revoked
goes to 0007's ``lsc_revocation`` queue.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-20
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_N, _R, _P = 2 ** 14, 8, 1  # policy.capf.AUTH_STRING_SCRYPT when this revision was written


def _hash(value: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(value.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def upgrade() -> None:
    with op.batch_alter_table("device") as batch:
        batch.add_column(sa.Column("auth_string_hash", sa.String(length=160), nullable=True))
    device = sa.table("device", sa.column("id", sa.Integer), sa.column("auth_string", sa.String),
                      sa.column("auth_string_hash", sa.String))
    conn = op.get_bind()
    rows = conn.execute(sa.select(device.c.id, device.c.auth_string).where(device.c.auth_string.is_not(None))).all()
    for row_id, clear in rows:
        if clear:
            conn.execute(sa.update(device).where(device.c.id == row_id).values(auth_string_hash=_hash(clear)))
    with op.batch_alter_table("device") as batch:
        batch.drop_column("auth_string")

    op.create_table(
        "lsc_intent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_name", sa.String(length=64), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("request_der", sa.LargeBinary(), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("vouched", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("node", sa.String(length=128), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_lsc_intent_device_state", "lsc_intent", ["device_name", "state"])
    op.create_index("ix_lsc_intent_state_created", "lsc_intent", ["state", "created_at"])
    op.create_index("ix_lsc_intent_key", "lsc_intent", ["key_sha256"])


def downgrade() -> None:
    op.drop_index("ix_lsc_intent_key", table_name="lsc_intent")
    op.drop_index("ix_lsc_intent_state_created", table_name="lsc_intent")
    op.drop_index("ix_lsc_intent_device_state", table_name="lsc_intent")
    op.drop_table("lsc_intent")
    # The clear strings cannot come back from their hashes: devices "By Authentication String"
    # need a new one after a downgrade.
    with op.batch_alter_table("device") as batch:
        batch.add_column(sa.Column("auth_string", sa.String(length=16), nullable=True))
        batch.drop_column("auth_string_hash")
