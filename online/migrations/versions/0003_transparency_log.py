"""The transparency log: leaf indexes of events, signed tree heads, published files,
and the GnuPG keys of operators and officers.

Existing events (but device reports) become the log's first leaves, in id order; the
next change signs the first tree head over them (the migration has no key).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

LOG_STATE_KEY = "transparency_log"
DEVICE_EVENTS_KIND = "device-events"


def upgrade() -> None:
    from wavesign.shared.canonical import canonical_bytes
    from wavesign.shared.evidence import LogEvent
    from wavesign.shared.merkle import MerkleLog

    op.add_column("events", sa.Column("leaf_index", sa.Integer, nullable=True))
    op.create_index("ux_events_leaf_index", "events", ["leaf_index"], unique=True)
    op.create_table(
        "tree_heads",
        sa.Column("size", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        sa.Column("timestamp", sa.String(20), nullable=False),
        sa.Column("head_json", sa.Text, nullable=False),
    )
    op.create_table(
        "published_files",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("leaf_index", sa.Integer, nullable=False, unique=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_table(
        "gpg_keys",
        sa.Column("fingerprint", sa.String(40), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("armored", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(20), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    conn = op.get_bind()
    events = sa.table(
        "events",
        sa.column("id", sa.Integer),
        sa.column("at", sa.String),
        sa.column("actor", sa.String),
        sa.column("kind", sa.String),
        sa.column("subject", sa.String),
        sa.column("detail", sa.Text),
        sa.column("leaf_index", sa.Integer),
    )
    log = MerkleLog()
    rows = conn.execute(
        sa.select(events).where(events.c.kind != DEVICE_EVENTS_KIND).order_by(events.c.id)
    ).all()
    for row in rows:
        event = LogEvent(log.size, row.at, row.actor, row.kind, row.subject, json.loads(row.detail))
        conn.execute(events.update().where(events.c.id == row.id).values(leaf_index=event.index))
        log.append(event.leaf())
    state = {
        "size": log.size,
        "frontier": [node.hex() for node in log.frontier],
        "publications": 0,
        "head_time": None,
    }
    settings = sa.table("settings", sa.column("key", sa.String), sa.column("value", sa.Text))
    conn.execute(settings.insert().values(key=LOG_STATE_KEY, value=canonical_bytes(state).decode()))


def downgrade() -> None:
    settings = sa.table("settings", sa.column("key", sa.String))
    op.get_bind().execute(settings.delete().where(settings.c.key == LOG_STATE_KEY))
    op.drop_table("gpg_keys")
    op.drop_table("published_files")
    op.drop_table("tree_heads")
    op.drop_index("ux_events_leaf_index", table_name="events")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("leaf_index")
