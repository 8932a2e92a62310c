"""``wavesign-offline``: the security officer's command line on the air-gapped machine."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from wavesign.shared.cliutil import main_for
from wavesign.shared.errors import WavesignError
from wavesign.shared.fileio import atomic_write
from wavesign.shared.gpg import GnuPG
from wavesign.shared.keys import generate_signer

from .appliance import Appliance
from .fioctl_tarball import read_fioctl_tarball
from .home import init_home, resolve_home_path
from .journal import entries_to_json
from .keystore import key_type_label
from .output import ResponseTarget, read_request_input, response_writer
from .render import render_review
from .review import Review, review_request
from .signer import check_confirmation, commit, prepare_signing

PASSPHRASE_ENV = "WAVESIGN_OFFLINE_PASSPHRASE"
PIN_ENV = "WAVESIGN_OFFLINE_HSM_PIN"
KEY_TYPES = ("ed25519", "ecdsa-p256", "rsa-4096")


class CliError(WavesignError):
    """A value the command needs is missing and cannot be asked for."""


def _interactive() -> bool:
    return sys.stdin.isatty()


def _store_passphrase(appliance: Appliance) -> str:
    """The passphrase for a new key: a new one (asked twice) or the store's existing one."""
    if appliance.keystore.has_file_keys():
        passphrase = _passphrase(new=False)
        appliance.keystore.check_passphrase(passphrase)
        return passphrase
    return _passphrase(new=True)


def _passphrase(new: bool) -> str:
    """The key passphrase: ``$WAVESIGN_OFFLINE_PASSPHRASE``, else a prompt on a terminal."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    if not _interactive():
        raise CliError(f"a key passphrase is needed: stdin is not a terminal; set {PASSPHRASE_ENV}")
    if new:
        typed = click.prompt(
            "New key passphrase",
            hide_input=True,
            confirmation_prompt="Repeat the passphrase",
            err=True,
        )
    else:
        typed = click.prompt("Key passphrase", hide_input=True, err=True)
    if not typed:
        raise CliError("an empty passphrase cannot protect a key")
    return str(typed)


def _pin(_secret: str) -> str:
    value = os.environ.get(PIN_ENV)
    if value:
        return value
    if not _interactive():
        raise CliError(f"the token PIN is needed: stdin is not a terminal; set {PIN_ENV}")
    return str(click.prompt("Token PIN", hide_input=True, err=True))


def _appliance(ctx: click.Context) -> Appliance:
    return Appliance.open(resolve_home_path(ctx.obj.get("home")))


def _emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="wavesign")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=str),
    help="The appliance folder (default: $WAVESIGN_OFFLINE_HOME, else ~/.wavesign-offline).",
)
@click.pass_context
def cli(ctx: click.Context, home: str | None) -> None:
    """wavesign-offline: the air-gapped signer for production targets.

    It holds the root and offline targets keys, shows the security officer exactly
    what a signing request changes, signs only after confirmation, and keeps a
    hash-chained journal. It never touches a network.

    \b
    A session:
      wavesign-offline review wave-v2.0-update.request.json
      wavesign-offline sign wave-v2.0-update.request.json --out /media/usb/response.json
      wavesign-offline journal verify
    """
    ctx.ensure_object(dict)
    ctx.obj["home"] = home


@cli.command()
@click.option("--home", "init_dir", type=click.Path(file_okay=False), help="Folder to create.")
@click.option("--officer-gpg-key", metavar="FINGERPRINT", help="GnuPG key (in GNUPGHOME).")
@click.option(
    "--allow-unsigned-requests",
    is_flag=True,
    help="Accept requests without a trusted operator signature (shown in red). Not advised.",
)
@click.option("--max-expiry-days", type=click.IntRange(1, 3650), default=400, show_default=True)
@click.pass_context
def init(
    ctx: click.Context,
    init_dir: str | None,
    officer_gpg_key: str | None,
    allow_unsigned_requests: bool,
    max_expiry_days: int,
) -> None:
    """Create the appliance folder: keystore, journal, trusted operators, config.

    \b
    Example:
      wavesign-offline init --home /srv/wavesign-offline --officer-gpg-key 0123...CDEF
    """
    path = resolve_home_path(init_dir or ctx.obj.get("home"))
    if officer_gpg_key:
        gpg = GnuPG(os.environ.get("GNUPGHOME"))
        wanted = officer_gpg_key.replace(" ", "").upper()
        if wanted not in gpg.fingerprints(secret=True):
            raise CliError(f"no secret GnuPG key {wanted} in GNUPGHOME: cannot attest with it")
    home = init_home(
        path,
        officer_gpg_key=officer_gpg_key,
        allow_unsigned_requests=allow_unsigned_requests,
        max_expiry_days=max_expiry_days,
    )
    click.echo(f"initialised {home.root}")


# -- keys -------------------------------------------------------------------------------


@cli.group()
def keys() -> None:
    """The appliance's root and offline targets keys (encrypted at rest)."""


@keys.command("generate")
@click.option("--role", type=click.Choice(["root", "targets"]), required=True)
@click.option("--type", "key_type", type=click.Choice(KEY_TYPES), default="ed25519")
@click.option("--json", "as_json", is_flag=True, help="Print {keyid, role, type}.")
@click.pass_context
def keys_generate(ctx: click.Context, role: str, key_type: str, as_json: bool) -> None:
    """Generate a key and store it encrypted with a passphrase.

    The passphrase is asked twice on a terminal (once, and checked, when the store
    already holds keys: all keys share one passphrase), or read from
    $WAVESIGN_OFFLINE_PASSPHRASE.

    \b
    Example:
      wavesign-offline keys generate --role targets --type ed25519
    """
    appliance = _appliance(ctx)
    passphrase = _store_passphrase(appliance)
    signer = generate_signer(key_type)
    stored = appliance.keystore.add_signer(role, signer, passphrase)
    info = {"keyid": stored.keyid, "role": role, "type": key_type_label(stored.public)}
    if as_json:
        _emit_json(info)
    else:
        click.echo(f"generated {role} key {stored.keyid} ({info['type']})")


@keys.command("import")
@click.argument("tarball", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_import(ctx: click.Context, tarball: Path, as_json: bool) -> None:
    """Import the keys of a fioctl offline credentials tarball (ED25519 and RSA).

    Each private key is checked against its public half, then stored encrypted with
    the passphrase.

    \b
    Example:
      wavesign-offline keys import /media/usb/targets.only.key.tgz
    """
    appliance = _appliance(ctx)
    found = read_fioctl_tarball(tarball)
    passphrase = _store_passphrase(appliance)
    stored = appliance.keystore.add_many([(k.role, k.signer) for k in found], passphrase)
    if as_json:
        _emit_json([s.to_dict() for s in stored])
        return
    for item in stored:
        click.echo(f"imported {item.role} key {item.keyid} ({key_type_label(item.public)})")


@keys.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    """List keys: role, type, TUF key id and Foundries key id. Never key material."""
    rows = [k.to_dict() for k in _appliance(ctx).keystore.all_keys()]
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        click.echo("no keys: use `keys generate` or `keys import`")
    for row in rows:
        click.echo(
            f"{row['role']:8} {row['type']:11} {row['status']:8} tuf:{row['keyid']} "
            f"foundries:{row['foundries_keyid']}"
        )


@keys.command("retire")
@click.argument("keyid")
@click.pass_context
def keys_retire(ctx: click.Context, keyid: str) -> None:
    """Stop putting a key into new roots (it may still sign the rotation away from it)."""
    stored = _appliance(ctx).keystore.retire(keyid)
    click.echo(f"retired {stored.role} key {stored.keyid}")


@keys.command("add-hsm")
@click.option("--role", type=click.Choice(["root", "targets"]), required=True)
@click.option("--hsm-keyid", type=int, default=2, show_default=True, help="PKCS#11 CKA_ID.")
@click.option("--token-label", help="Token label (when several tokens are present).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def keys_add_hsm(
    ctx: click.Context, role: str, hsm_keyid: int, token_label: str | None, as_json: bool
) -> None:
    """Use an ECDSA P-256 key on a PKCS#11 token ($PYKCS11LIB names the module).

    \b
    Example:
      PYKCS11LIB=/usr/lib/softhsm/libsofthsm2.so \\
        wavesign-offline keys add-hsm --role targets --hsm-keyid 2
    """
    from .hsm import import_hsm_key

    appliance = _appliance(ctx)
    uri, public = import_hsm_key(hsm_keyid, token_label, _pin)
    stored = appliance.keystore.add_hsm(role, uri, public)
    if as_json:
        _emit_json(stored.to_dict())
    else:
        click.echo(f"added {role} key {stored.keyid} on PKCS#11 token ({uri})")


# -- operators ------------------------------------------------------------------------------


@cli.group()
def operators() -> None:
    """Trusted operators: whose GnuPG signatures on requests are accepted."""


@operators.command("add")
@click.argument("key_file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def operators_add(ctx: click.Context, key_file: Path) -> None:
    """Trust an operator's GnuPG public key (armored export).

    \b
    Example:
      wavesign-offline operators add /media/usb/operator.asc
    """
    appliance = _appliance(ctx)
    data = key_file.read_bytes()[: 1024 * 1024]
    for operator in appliance.add_operators(data):
        click.echo(f"trusted operator {operator.user_id} ({operator.fingerprint})")


@operators.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def operators_list(ctx: click.Context, as_json: bool) -> None:
    """List trusted operators."""
    found = _appliance(ctx).operators()
    if as_json:
        _emit_json([o.to_dict() for o in found])
        return
    for operator in found:
        click.echo(f"{operator.fingerprint}  {operator.user_id}")


# -- review and sign -------------------------------------------------------------------------


def _input_options(func: Any) -> Any:
    func = click.argument("inputs", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))(func)
    func = click.option(
        "--qr-images", is_flag=True, help="INPUTS are photos or scans of the QR frames."
    )(func)
    func = click.option(
        "--qr-stdin", is_flag=True, help="Read QR frame texts, one per line (zbarcam --raw)."
    )(func)
    return func


def _read_input(inputs: tuple[Path, ...], qr_images: bool, qr_stdin: bool) -> bytes:
    if qr_images:
        if not inputs:
            raise click.UsageError("--qr-images needs at least one image")
        return read_request_input(None, inputs, False, [])
    if qr_stdin:
        if inputs:
            raise click.UsageError("--qr-stdin takes no FILE")
        return read_request_input(None, [], True, sys.stdin)
    if len(inputs) != 1:
        raise click.UsageError("give one request FILE, or --qr-images IMG..., or --qr-stdin")
    return read_request_input(inputs[0], [], False, [])


def _review(ctx: click.Context, data: bytes, again: bool) -> tuple[Appliance, Review]:
    appliance = _appliance(ctx)
    return appliance, review_request(appliance, data, now=_now(), again=again)


@cli.command()
@_input_options
@click.option("--json", "as_json", is_flag=True, help="The review as one JSON document.")
@click.option("--raw", is_flag=True, help="Also show the full payloads as JSON.")
@click.option("--again", is_flag=True, help="Judge as `sign --again` would.")
@click.pass_context
def review(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    qr_images: bool,
    qr_stdin: bool,
    as_json: bool,
    raw: bool,
    again: bool,
) -> None:
    """Show what a signing request changes; exit 0 only if `sign` would accept it.

    Reads only: nothing is written, nothing is signed.

    \b
    Examples:
      wavesign-offline review wave-v2.0-update.request.json
      wavesign-offline review --qr-images scans/frame-01.png scans/frame-02.png
      zbarcam --raw | wavesign-offline review --qr-stdin
    """
    data = _read_input(inputs, qr_images, qr_stdin)
    _, result = _review(ctx, data, again)
    if as_json:
        _emit_json(result.to_dict(raw=raw))
    else:
        click.echo(render_review(result, raw=raw))
    if not result.ok:
        raise CliError(f"sign would refuse: {result.reasons[0]}")


@cli.command()
@_input_options
@click.option("--confirm", "confirm_text", help="The confirmation text, instead of typing it.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Response file.")
@click.option("--qr-png", type=click.Path(file_okay=False, path_type=Path), help="PNG folder.")
@click.option("--qr-html", type=click.Path(dir_okay=False, path_type=Path), help="HTML file.")
@click.option("--qr-terminal", is_flag=True, help="Show the response QR in the terminal.")
@click.option("--density", type=click.Choice(["low", "normal", "high"]), default="normal")
@click.option("--again", is_flag=True, help="Sign a request that was signed before.")
@click.pass_context
def sign(
    ctx: click.Context,
    inputs: tuple[Path, ...],
    qr_images: bool,
    qr_stdin: bool,
    confirm_text: str | None,
    out: Path | None,
    qr_png: Path | None,
    qr_html: Path | None,
    qr_terminal: bool,
    density: str,
    again: bool,
) -> None:
    """Review, confirm, sign, journal and write the response.

    The confirmation is the wave name, root-v<N> for a root, or renew-<TAG>.
    If anything fails, nothing is written: no response, no journal line.

    \b
    Examples:
      wavesign-offline sign wave-v2.0-update.request.json --out /media/usb/resp.json
      wavesign-offline sign --qr-images scans/frame-01.png scans/frame-02.png --qr-png /media/usb/qr
    """
    if sum([out is not None, qr_png is not None, qr_html is not None, qr_terminal]) != 1:
        raise click.UsageError("choose exactly one of --out, --qr-png, --qr-html, --qr-terminal")
    target = ResponseTarget(out, qr_png, qr_html, qr_terminal, density)
    target.check()
    data = _read_input(inputs, qr_images, qr_stdin)
    appliance, result = _review(ctx, data, again)
    if not result.ok:
        raise CliError(f"refused: {result.reasons[0]}")
    if confirm_text is None:
        if not _interactive():
            raise CliError(
                "confirmation needed: stdin is not a terminal; pass --confirm "
                f"{result.confirmation!r} after reviewing the request"
            )
        click.echo(render_review(result), err=True)
        confirm_text = str(click.prompt(f"Type {result.confirmation!r} to sign", err=True))
    check_confirmation(result, confirm_text)
    needs_passphrase = any(
        (stored := appliance.keystore.find(keyid)) is not None and stored.backend == "file"
        for _, keyid in result.signing_keys
    )
    passphrase = _passphrase(new=False) if needs_passphrase else None
    prepared = prepare_signing(
        appliance, result, confirmation=confirm_text, passphrase=passphrase, pin=_pin
    )
    title = f"wavesign response {result.request.id}"
    commit(appliance, prepared, response_writer(target, title))
    click.echo(
        f"signed request {result.request.id}: {len(prepared.response.signatures)} signature(s), "
        f"journal line {prepared.entry.index}",
        err=qr_terminal,
    )


# -- journal ---------------------------------------------------------------------------------


@cli.group()
def journal() -> None:
    """The hash-chained journal of every signing."""


@journal.command("show")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def journal_show(ctx: click.Context, as_json: bool) -> None:
    """Show journal entries (the chain is verified first)."""
    entries = _appliance(ctx).journal.entries()
    if as_json:
        _emit_json(entries_to_json(entries))
        return
    if not entries:
        click.echo("the journal is empty: nothing has been signed yet")
    for entry in entries:
        versions = ", ".join(f"{p.name} v{p.version}" for p in entry.payloads)
        click.echo(
            f"{entry.index:4} {entry.time} {entry.request_id} [{entry.confirmation}] "
            f"{versions} request {entry.request_sha256[:16]} response {entry.response_sha256[:16]}"
        )


@journal.command("verify")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def journal_verify(ctx: click.Context, as_json: bool) -> None:
    """Check the hash chain; names the first line that breaks it."""
    result = _appliance(ctx).journal.verify()
    if as_json:
        _emit_json(result.to_dict())
    elif result.ok:
        click.echo(f"journal intact: {result.lines} line(s), head {result.head}")
    if not result.ok:
        raise CliError(f"journal broken at line {result.line}: {result.problem}")


@journal.command("export")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.pass_context
def journal_export(ctx: click.Context, out: Path) -> None:
    """Export the journal, with the officer's detached GnuPG signature.

    Writes FILE (the journal lines, byte for byte), FILE.sig (base64 detached
    signature over FILE) and FILE.officer.asc (the officer's public key) when an
    officer key is configured.
    """
    appliance = _appliance(ctx)
    result = appliance.journal.verify()
    if not result.ok:
        raise CliError(f"refusing to export a broken journal: {result.problem}")
    raw = appliance.journal.raw()
    officer = appliance.home.config.officer_gpg_key
    signature = public = None
    if officer:
        gpg = GnuPG(os.environ.get("GNUPGHOME"))
        signature = gpg.sign_detached(officer, raw)
        public = gpg.export_public_key(officer)
    atomic_write(out, raw, mode=0o644)
    if signature is not None and public is not None:
        atomic_write(out.with_name(out.name + ".sig"), signature.encode() + b"\n", mode=0o644)
        atomic_write(out.with_name(out.name + ".officer.asc"), public.encode(), mode=0o644)
        click.echo(f"exported {result.lines} line(s) to {out}, signed by {officer}")
    else:
        click.echo(f"exported {result.lines} line(s) to {out} (unsigned: no officer key)")


main = main_for(cli)
