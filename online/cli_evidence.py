"""``wavesign evidence export``: the folder an auditor verifies with ``wavesign-audit``."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import click

from .cli_common import CONTEXT, client_for
from .evidence_export import EvidenceExportError, check_destination, write_evidence_folder

__all__ = ["evidence"]


@click.group(context_settings=CONTEXT)
def evidence() -> None:
    """Evidence for auditors (see docs/formats/evidence.md)."""


@evidence.command("export", context_settings=CONTEXT)
@click.option(
    "--out", "out", required=True, type=click.Path(path_type=Path), help="A new or empty folder."
)
@click.pass_context
def export(ctx: click.Context, out: Path) -> None:
    """Write the evidence folder that `wavesign-audit verify` checks.

    Every root version, every targets file ever published (exact bytes), the current
    snapshot and timestamp per tag, the signing requests and responses, the waves and
    their history, the transparency log with its signed tree heads and proofs, and the
    public keys. An auditor's token is enough. The folder appears complete or not at
    all (written beside it, then renamed).

    \b
    Example:
      WAVESIGN_TOKEN=$AUDITOR_TOKEN wavesign evidence export --out evidence-2026-12
      wavesign-audit verify evidence-2026-12 --offline-journal journal.jsonl
    """
    check_destination(out)
    answer = client_for(ctx).get("/evidence")
    files = answer.get("files") if isinstance(answer, dict) else None
    if not isinstance(files, dict):
        raise EvidenceExportError("the broker's evidence answer has no files")
    try:
        decoded = {
            str(path): base64.b64decode(str(data).encode("ascii"), validate=True)
            for path, data in files.items()
        }
    except (binascii.Error, UnicodeEncodeError):
        raise EvidenceExportError("the broker's evidence answer is not base64") from None
    written = write_evidence_folder(decoded, out)
    click.echo(f"evidence: {len(written)} files written to {out}")


@evidence.command("add-gpg-key", context_settings=CONTEXT)
@click.option(
    "--role",
    required=True,
    type=click.Choice(["operator", "officer"]),
    help="operator: signs requests; officer: attests responses.",
)
@click.argument("key_file", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def add_gpg_key(ctx: click.Context, role: str, key_file: Path) -> None:
    """Trust a GnuPG public key (admin token); auditors get it in the evidence.

    Once an officer key is registered, `requests import` refuses a response whose
    officer attestation does not verify with a registered officer key; once an
    operator key is, requests must be signed by a registered operator key.

    \b
    Example:
      wavesign evidence add-gpg-key --role officer journal.jsonl.officer.asc
      gpg --armor --export $WAVESIGN_OPERATOR_GPG_KEY > me.asc
      wavesign evidence add-gpg-key --role operator me.asc
    """
    try:
        armored = key_file.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvidenceExportError(f"cannot read {key_file}: {exc}") from None
    added = client_for(ctx).post("/gpg-keys", {"role": role, "armored": armored})
    click.echo(f"GnuPG key {added['fingerprint']} trusted as {added['role']}")
