"""Alembic environment: migrate the connection or URL handed over by wavesign.online.store."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection
from wavesign.online.db import make_engine, metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("wavesign migrations run online only (wavesign server migrate)")
run_migrations_online()
