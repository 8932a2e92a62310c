"""Alembic migrations of the broker's database (package data, run by ``server migrate``)."""
