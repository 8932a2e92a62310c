"""``wavesign evidence export``: the folder an auditor verifies with ``wavesign-audit``."""

from __future__ import annotations

import click

__all__ = ["evidence"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def evidence() -> None:
    """Evidence for auditors (see docs/formats/evidence.md)."""
