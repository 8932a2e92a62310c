"""``wavesign-audit``: verifies an evidence export without network or broker."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .audit import JournalFile, run_checks
from .cliutil import main_for

_FILE = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wavesign")
def cli() -> None:
    """wavesign-audit: verify the whole signature chain of an evidence export.

    It needs no network and trusts nothing the broker says about itself: every
    check is recomputed from the exported files.
    """


@cli.command()
@click.argument("evidence_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--offline-journal",
    "journals",
    multiple=True,
    type=_FILE,
    help="An appliance journal export (FILE, with FILE.sig and FILE.officer.asc beside it "
    "if signed). Repeat for several appliances. Every published payload must then have "
    "a journal entry.",
)
@click.option(
    "--trusted-root",
    type=_FILE,
    help="A root.json you trust, obtained independently (e.g. from a device's factory "
    "image). Without it the chain starts from the exported 1.root.json (trust on first use).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {name, ok, detail}.")
def verify(
    evidence_dir: Path, journals: tuple[Path, ...], trusted_root: Path | None, as_json: bool
) -> None:
    """Verify an evidence export: one PASS/FAIL line per check, exit 0 only if all pass.

    The checks: manifest, root-chain, targets-signatures, versions, waves, requests,
    journal, log, current (docs/audit.md says what each proves and cannot prove).
    --json prints a JSON list of {"name", "ok", "detail"} and nothing else.

    \b
    Example:
      wavesign evidence export --out evidence/
      wavesign-offline journal export --out journal.jsonl
      wavesign-audit verify evidence/ --offline-journal journal.jsonl --trusted-root root.json
    """
    results = run_checks(
        evidence_dir,
        [JournalFile.read(path) for path in journals],
        trusted_root.read_bytes() if trusted_root is not None else None,
    )
    if as_json:
        click.echo(json.dumps([result.to_dict() for result in results], indent=2))
    else:
        for result in results:
            click.echo(result.line())
    sys.exit(0 if all(result.ok for result in results) else 1)


main = main_for(cli)
