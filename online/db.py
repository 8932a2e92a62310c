"""The broker's tables (SQLAlchemy 2 Core) and the engine that opens them.

The same schema runs on SQLite (the embedded default, in WAL mode) and on PostgreSQL
(psycopg 3). The schema itself is created by the Alembic migrations in
``migrations/``; ``metadata`` here is what the code queries and what a test compares
the migrated database against.

Conventions: times are UTC strings ``YYYY-MM-DDTHH:MM:SSZ`` (TUF's own format, so no
driver ever converts them); JSON documents are stored as text, canonical where their
bytes matter (a signed payload is published byte for byte).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

metadata = MetaData()

#: Small settings and counters: the factory name, the global snapshot/timestamp counter.
settings = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)
#: Keys of ``settings`` rows that are server heartbeats (``online/serving.py``): they
#: change every second and say nothing about the store's state.
HEARTBEAT_PREFIX = "serving_node:"

#: API tokens of people and scripts. Only the sha256 of a token is stored.
tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("created_at", String(20), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("revoked_at", String(20), nullable=True),
)

#: Targets registered by CI (not yet production): one row per target name.
ci_targets = Table(
    "ci_targets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(500), nullable=False, unique=True),
    Column("version", Integer, nullable=False, index=True),
    Column("sha256", String(64), nullable=False),
    Column("length", Integer, nullable=False),
    # The full TUF target entry {length, hashes, custom}, canonical JSON.
    Column("entry", Text, nullable=False),
    Column("created_at", String(20), nullable=False),
)

device_groups = Table(
    "device_groups",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", String(20), nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("hardware_id", String(200), nullable=False),
    Column("tag", String(200), nullable=False),
    Column("group_id", Integer, ForeignKey("device_groups.id"), nullable=True),
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("current_target", String(500), nullable=True),
    Column("last_seen", String(20), nullable=True),
    Column("created_at", String(20), nullable=False),
    Index("ix_devices_group_id", "group_id"),
    Index("ix_devices_tag", "tag"),
    # Covers the GROUP BY of `status` and `wave status`: < 1 s over 1,000,000 devices.
    Index("ix_devices_status", "tag", "group_id", "current_target", "last_seen"),
)

#: Every signed root version, as published (``N.root.json``).
roots = Table(
    "roots",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("root_json", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", String(20), nullable=False),
)

#: Per tag: the published production targets and the TUF targets version counter.
tag_state = Table(
    "tag_state",
    metadata,
    Column("tag", String(200), primary_key=True),
    # The production targets Metadata (with signatures), the exact bytes published.
    Column("production_json", Text, nullable=True),
    Column("production_version", Integer, nullable=True),
    Column("production_ci_version", Integer, nullable=True),
    Column("production_sha256", String(64), nullable=True),
    # Strictly above every targets version ever planned for this tag, in any view.
    Column("last_planned_version", Integer, nullable=False),
    Column("updated_at", String(20), nullable=False),
)

WAVE_STATUSES = ("awaiting-signatures", "active", "complete", "canceled")
OPEN_WAVE_STATUSES = ("awaiting-signatures", "active")

waves = Table(
    "waves",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("version", Integer, nullable=False),
    Column("tag", String(200), nullable=False),
    Column("status", String(24), nullable=False),
    Column("created_at", String(20), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("finished_at", String(20), nullable=True),
    Column("finished_by", String(200), nullable=True),
    Column("expires", String(20), nullable=False),
    Column("plan", Text, nullable=False),  # prune list, source tag: what init was asked
    # W: the wave's targets; R: the revert payload published to the wave's devices on cancel.
    Column("wave_version", Integer, nullable=False),
    Column("wave_sha256", String(64), nullable=False),
    Column("wave_payload", Text, nullable=False),
    Column("wave_signed", Text, nullable=True),
    Column("revert_version", Integer, nullable=False),
    Column("revert_sha256", String(64), nullable=False),
    Column("revert_payload", Text, nullable=False),
    Column("revert_signed", Text, nullable=True),
    Column("request_id", String(64), nullable=True),
    Index("ix_waves_tag", "tag"),
    # One awaiting-signatures or active wave per tag, enforced by the database too.
    Index(
        "ux_waves_open_tag",
        "tag",
        unique=True,
        sqlite_where=text("status IN ('awaiting-signatures', 'active')"),
        postgresql_where=text("status IN ('awaiting-signatures', 'active')"),
    ),
)

REQUEST_STATUSES = ("pending", "signed", "canceled")

signing_requests = Table(
    "signing_requests",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("purpose", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("wave_id", Integer, ForeignKey("waves.id"), nullable=True),
    Column("request_sha256", String(64), nullable=False),
    Column("request_json", Text, nullable=False),
    Column("response_json", Text, nullable=True),
    Column("created_at", String(20), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("completed_at", String(20), nullable=True),
)

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("wave_id", Integer, ForeignKey("waves.id"), nullable=False, index=True),
    Column("created_at", String(20), nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("group_id", Integer, ForeignKey("device_groups.id"), nullable=True),
    Column("device_count", Integer, nullable=False),
    # A rollout to a whole group (no --limit, no --uuids) also covers later joiners.
    Column("full_group", Boolean, nullable=False),
)

#: The devices each wave reached. No foreign keys here, on purpose: a full-group rollout
#: inserts 100,000 rows in one statement, and PostgreSQL's per-row foreign-key triggers
#: make that 8x slower (3 s instead of 0.4 s). Only the store writes this table, always
#: with ids it has just read in the same transaction, and nothing is ever deleted.
wave_devices = Table(
    "wave_devices",
    metadata,
    Column("wave_id", Integer, primary_key=True),
    Column("device_id", Integer, primary_key=True),
    Column("rollout_id", Integer, nullable=False),
    Index("ix_wave_devices_device_id", "device_id"),
)

#: Append-only log: one row per committed change (the evidence log's leaves).
events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", String(20), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("subject", String(500), nullable=False),
    Column("detail", Text, nullable=False),  # canonical JSON
    # Position in the transparency log (RFC 9162 leaf index, from 0). NULL for device
    # reports: they are stored here but are not broker decisions, so not logged.
    Column("leaf_index", Integer, nullable=True),
    Index("ux_events_leaf_index", "leaf_index", unique=True),
)

#: Signed tree heads of the transparency log, one per committed change (append-only).
tree_heads = Table(
    "tree_heads",
    metadata,
    Column("size", Integer, primary_key=True, autoincrement=False),
    Column("root_hash", String(64), nullable=False),
    Column("timestamp", String(20), nullable=False),
    # The signed head {"signed": {...}, "signatures": [...]}, canonical JSON.
    Column("head_json", Text, nullable=False),
)

#: The exact bytes of every file made visible to devices, by publication number (the
#: ``published`` event in ``events`` is the record; this keeps the bytes after the
#: production file of a tag is replaced).
published_files = Table(
    "published_files",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("leaf_index", Integer, nullable=False, unique=True),
    Column("sha256", String(64), nullable=False),
    Column("body", Text, nullable=False),
)

#: GnuPG public keys the broker trusts: operators (request signatures) and security
#: officers (response attestations). Exported to auditors as keys/*.asc.
gpg_keys = Table(
    "gpg_keys",
    metadata,
    Column("fingerprint", String(40), primary_key=True),
    Column("role", String(16), nullable=False),
    Column("armored", Text, nullable=False),
    Column("created_at", String(20), nullable=False),
    Column("created_by", String(200), nullable=False),
)

ALL_TABLES = [t.name for t in metadata.sorted_tables]


def insert_skipping_duplicates(conn: Connection, table: Table) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` into ``table``, in the connection's dialect:
    rows whose unique key exists already are skipped."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine whose transactions take the write lock up front.

    SQLite: WAL mode, a busy timeout, foreign keys on, and ``BEGIN IMMEDIATE`` for every
    transaction (pysqlite's own deferred BEGIN would let two writers read the same state
    and lose an update). PostgreSQL: the store locks rows with ``SELECT ... FOR UPDATE``.
    """
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Hand transaction control to SQLAlchemy's "begin" event below.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Readers (marked by Store.read) need no write lock: WAL lets them run beside
            # the one writer.
            read_only = conn.get_execution_options().get("wavesign_read_only", False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)
