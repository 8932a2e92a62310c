"""Index for the fleet status queries.

`status` and `wave status` group devices by tag, group, current target and last
seen; this covering index keeps them under a second over 1,000,000 devices on
SQLite (bench/fleet_status.py).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_devices_status", "devices", ["tag", "group_id", "current_target", "last_seen"]
    )


def downgrade() -> None:
    op.drop_index("ix_devices_status", table_name="devices")
