"""The initial schema: tokens, CI targets, groups, devices, tags, waves, requests, events.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

OPEN = "status IN ('awaiting-signatures', 'active')"


def upgrade() -> None:
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.String(20), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("revoked_at", sa.String(20), nullable=True),
    )
    op.create_table(
        "ci_targets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(500), nullable=False, unique=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("length", sa.Integer, nullable=False),
        sa.Column("entry", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(20), nullable=False),
    )
    op.create_index("ix_ci_targets_version", "ci_targets", ["version"])
    op.create_table(
        "device_groups",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", sa.String(20), nullable=False),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("hardware_id", sa.String(200), nullable=False),
        sa.Column("tag", sa.String(200), nullable=False),
        sa.Column("group_id", sa.Integer, sa.ForeignKey("device_groups.id"), nullable=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("current_target", sa.String(500), nullable=True),
        sa.Column("last_seen", sa.String(20), nullable=True),
        sa.Column("created_at", sa.String(20), nullable=False),
    )
    op.create_index("ix_devices_group_id", "devices", ["group_id"])
    op.create_index("ix_devices_tag", "devices", ["tag"])
    op.create_table(
        "roots",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("root_json", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(20), nullable=False),
    )
    op.create_table(
        "tag_state",
        sa.Column("tag", sa.String(200), primary_key=True),
        sa.Column("production_json", sa.Text, nullable=True),
        sa.Column("production_version", sa.Integer, nullable=True),
        sa.Column("production_ci_version", sa.Integer, nullable=True),
        sa.Column("production_sha256", sa.String(64), nullable=True),
        sa.Column("last_planned_version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.String(20), nullable=False),
    )
    op.create_table(
        "waves",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("tag", sa.String(200), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("created_at", sa.String(20), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("finished_at", sa.String(20), nullable=True),
        sa.Column("finished_by", sa.String(200), nullable=True),
        sa.Column("expires", sa.String(20), nullable=False),
        sa.Column("plan", sa.Text, nullable=False),
        sa.Column("wave_version", sa.Integer, nullable=False),
        sa.Column("wave_sha256", sa.String(64), nullable=False),
        sa.Column("wave_payload", sa.Text, nullable=False),
        sa.Column("wave_signed", sa.Text, nullable=True),
        sa.Column("revert_version", sa.Integer, nullable=False),
        sa.Column("revert_sha256", sa.String(64), nullable=False),
        sa.Column("revert_payload", sa.Text, nullable=False),
        sa.Column("revert_signed", sa.Text, nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
    )
    op.create_index("ix_waves_tag", "waves", ["tag"])
    op.create_index(
        "ux_waves_open_tag",
        "waves",
        ["tag"],
        unique=True,
        sqlite_where=sa.text(OPEN),
        postgresql_where=sa.text(OPEN),
    )
    op.create_table(
        "signing_requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("wave_id", sa.Integer, sa.ForeignKey("waves.id"), nullable=True),
        sa.Column("request_sha256", sa.String(64), nullable=False),
        sa.Column("request_json", sa.Text, nullable=False),
        sa.Column("response_json", sa.Text, nullable=True),
        sa.Column("created_at", sa.String(20), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("completed_at", sa.String(20), nullable=True),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("wave_id", sa.Integer, sa.ForeignKey("waves.id"), nullable=False),
        sa.Column("created_at", sa.String(20), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("group_id", sa.Integer, sa.ForeignKey("device_groups.id"), nullable=True),
        sa.Column("device_count", sa.Integer, nullable=False),
        sa.Column("full_group", sa.Boolean, nullable=False),
    )
    op.create_index("ix_rollouts_wave_id", "rollouts", ["wave_id"])
    op.create_table(
        "wave_devices",
        # No foreign keys: see wavesign.online.db.wave_devices (rollout speed).
        sa.Column("wave_id", sa.Integer, primary_key=True),
        sa.Column("device_id", sa.Integer, primary_key=True),
        sa.Column("rollout_id", sa.Integer, nullable=False),
    )
    op.create_index("ix_wave_devices_device_id", "wave_devices", ["device_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("subject", sa.String(500), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "events",
        "wave_devices",
        "rollouts",
        "signing_requests",
        "waves",
        "tag_state",
        "roots",
        "devices",
        "device_groups",
        "ci_targets",
        "tokens",
        "settings",
    ):
        op.drop_table(table)
