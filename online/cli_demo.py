"""``wavesign demo``: the seed story played end to end on an embedded SQLite broker."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["demo"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--out",
    "out_dir",
    default="demo-out",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Folder for the demo's artifacts (broker, appliance, QR frames, requests, "
    "evidence). A second run clears only what the demo made there.",
)
def demo(out_dir: Path) -> None:
    """Play the seed story end to end, for real, and print every command it runs.

    An embedded broker on SQLite, an offline appliance (`wavesign-offline` subprocesses),
    GnuPG keys for the operator and the officer in a temporary GNUPGHOME, QR frames
    written to PNG and read back through zbar, simulated devices verifying with
    python-tuf's ngclient, and `wavesign-audit verify` at the end:

    \b
      1. root ceremony, and a fleet registers
      2. populate-targets 12 -> complete
      3. v2.0-update 42 (over QR) -> rollout canary -> status -> rollout us-east-1
         -> complete
      4. v2.1-update 43 -> rollout canary -> cancel: the canary keeps its orphan
      5. evidence export, journal export, wavesign-audit verify

    Nothing is written outside --out except the temporary GnuPG home, removed at the
    end. Exit 0 only if every step verified; otherwise one `error: step N ...` line.

    \b
    Example:
      wavesign demo --out demo-out
    """
    from rich.console import Console

    from .demo import run_demo

    run_demo(out_dir, Console(highlight=False))
