"""Builders for the offline appliance tests: real GnuPG homes, real appliances, requests.

Nothing here imports wavesign.online: requests are built by hand from the bundle
formats, as a broker would, so the appliance is tested on its own side of the gap.
"""

from __future__ import annotations

import copy
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from securesystemslib.signer import CryptoSigner, Signature
from tuf.api.metadata import Metadata, Role, Root, TargetFile, Targets
from wavesign.offline.appliance import Appliance
from wavesign.offline.cli import cli
from wavesign.offline.home import init_home
from wavesign.shared.bundles import Context, Payload, Purpose, SigningRequest, SigningResponse
from wavesign.shared.cliutil import run
from wavesign.shared.gpg import GnuPG
from wavesign.shared.keys import generate_signer

PASSPHRASE = "correct horse battery staple"
SCRYPT_N = 2**10  # tests only: key files open in milliseconds
BASE_ENV = {
    "WAVESIGN_OFFLINE_PASSPHRASE": PASSPHRASE,
    "WAVESIGN_OFFLINE_SCRYPT_N": str(SCRYPT_N),
}


def test_support_module_builds_a_valid_wave_request(tmp_path: Path) -> None:
    """The builders below produce requests the bundle parser accepts."""
    production = targets_signed(production_targets(3, "12"), version=1)
    wave = targets_signed({**production["targets"], **new_target("42")}, version=2)
    request = wave_request(
        "v2.0-update", "production", 42, wave, production_payload=production, keyids=["ab" * 32]
    )
    parsed = SigningRequest.from_bytes(request.to_bytes())
    assert parsed.digest() == request.digest()
    assert len(parsed.payload("wave").full()["targets"]) == 4


# -- GnuPG --------------------------------------------------------------------------------


def make_gnupg_home(folder: Path, name: str) -> tuple[Path, str]:
    """A fresh GnuPG home with one ed25519 signing key; returns (home, fingerprint)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = dict(os.environ, GNUPGHOME=str(folder))
    subprocess.run(
        [
            "gpg",
            "--batch",
            "--quiet",
            "--passphrase",
            "",
            "--quick-gen-key",
            f"{name} <{name.lower()}@example.com>",
            "ed25519",
            "sign",
            "never",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-secret-keys"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
    )
    return folder, fingerprint


def export_public(gnupg_home: Path, fingerprint: str) -> str:
    return GnuPG(gnupg_home).export_public_key(fingerprint)


# -- TUF payloads -------------------------------------------------------------------------


def expires_in(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def target_entry(name: str, hwid: str, version: str, seed: str, tag: str = "production") -> Any:
    sha = (seed * 64)[:64]
    return TargetFile(
        length=1000 + len(name),
        hashes={"sha256": sha},
        path=name,
        unrecognized_fields={
            "custom": {
                "hardwareIds": [hwid],
                "version": version,
                "targetFormat": "OSTREE",
                "tags": [tag],
                "name": name.rsplit("-", 1)[0],
            }
        },
    ).to_dict()


def production_targets(count: int, version: str) -> dict[str, Any]:
    """``count`` targets of CI build ``version`` over several hardware ids."""
    hex_digits = "0123456789abcdef"
    return {
        f"board{i}-lmp-{version}": target_entry(
            f"board{i}-lmp-{version}", f"board{i}", version, hex_digits[i % 16] + "1"
        )
        for i in range(count)
    }


def new_target(version: str, hwid: str = "board0") -> dict[str, Any]:
    name = f"{hwid}-lmp-{version}"
    return {name: target_entry(name, hwid, version, "4f")}


def targets_signed(targets: dict[str, Any], *, version: int, days: int = 365) -> dict[str, Any]:
    md = Targets(version=version, expires=datetime.now(UTC) + timedelta(days=days))
    signed = md.to_dict()
    signed["expires"] = expires_in(days)
    signed["targets"] = targets
    Targets.from_dict(copy.deepcopy(signed))  # stays valid TUF
    return signed


# -- requests -------------------------------------------------------------------------------


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def wave_request(
    wave: str,
    tag: str,
    ci_version: int,
    wave_signed: dict[str, Any],
    *,
    production_payload: dict[str, Any] | None,
    keyids: list[str],
    revert_signed: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> SigningRequest:
    """A wave request as the broker plans it: W, and R = production re-versioned."""
    if revert_signed is None:
        revert_signed = dict(wave_signed)
        revert_signed["version"] = wave_signed["version"] + 1
        revert_signed["targets"] = dict((production_payload or {}).get("targets", {}))
    from wavesign.shared.canonical import digest

    context = Context(
        root_version=1,
        production_version=production_payload["version"] if production_payload else None,
        production_sha256=digest(production_payload) if production_payload else None,
    )
    return SigningRequest(
        id=request_id or f"req-{wave}",
        factory="acme",
        created=_stamp(),
        purpose=Purpose("wave", wave=wave, tag=tag, ci_version=ci_version),
        payloads=(
            Payload.create("wave", "targets", wave_signed, keyids),
            Payload.create("revert", "targets", revert_signed, keyids),
        ),
        context=context,
    )


def root_proposal(
    online_targets: CryptoSigner,
    snapshot: CryptoSigner,
    timestamp: CryptoSigner,
    *,
    version: int = 1,
    days: int = 365,
) -> dict[str, Any]:
    """What the broker proposes: its online keys, the policy; no offline keys."""
    root = Root(
        version=version, expires=datetime.now(UTC) + timedelta(days=days), consistent_snapshot=True
    )
    root.roles["targets"] = Role([], 2)
    root.add_key(online_targets.public_key, "targets")
    root.add_key(snapshot.public_key, "snapshot")
    root.add_key(timestamp.public_key, "timestamp")
    signed = root.to_dict()
    signed["expires"] = expires_in(days)
    del signed["roles"]["root"]
    signed["roles"]["root"] = {"keyids": [], "threshold": 1}
    return signed


def root_request(proposal: dict[str, Any], current_version: int) -> SigningRequest:
    return SigningRequest(
        id=f"root-v{proposal['version']}",
        factory="acme",
        created=_stamp(),
        purpose=Purpose("root", root_version=proposal["version"]),
        payloads=(Payload.create("root", "root", proposal, []),),
        context=Context(root_version=current_version),
    )


def operator_sign(request: SigningRequest, gnupg_home: Path, fingerprint: str) -> SigningRequest:
    signature = GnuPG(gnupg_home).sign_detached(fingerprint, request.signing_bytes())
    return request.with_operator_signature(signature)


# -- appliances -------------------------------------------------------------------------------


@dataclass
class Rig:
    """One appliance with a targets key and a root key, plus a trusted operator."""

    root: Path
    appliance: Appliance
    targets_keyid: str
    root_keyid: str
    operator_home: Path
    operator_fpr: str
    officer_home: Path | None
    officer_fpr: str | None
    online_targets: CryptoSigner

    @property
    def env(self) -> dict[str, str]:
        env = dict(BASE_ENV, WAVESIGN_OFFLINE_HOME=str(self.appliance.home.root))
        if self.officer_home is not None:
            env["GNUPGHOME"] = str(self.officer_home)
        return env

    def production(self, count: int = 20, version: int = 1) -> dict[str, Any]:
        """A production targets payload this appliance signed before (stored as a base)."""
        production = targets_signed(production_targets(count, "12"), version=version)
        self.appliance.payloads.add(production)
        return production

    def write_request(self, request: SigningRequest, name: str = "request.json") -> Path:
        path = self.root / name
        path.write_bytes(request.to_bytes() + b"\n")
        return path

    def signed_wave(
        self, production: dict[str, Any], *, wave: str = "v2.0-update", version: int | None = None
    ) -> SigningRequest:
        wave_signed = targets_signed(
            {**production["targets"], **new_target("42")},
            version=version or production["version"] + 1,
        )
        return self.wave_of(wave_signed, production, wave=wave)

    def wave_of(
        self,
        wave_signed: dict[str, Any],
        production: dict[str, Any],
        *,
        wave: str = "v2.0-update",
        keyids: list[str] | None = None,
        revert_signed: dict[str, Any] | None = None,
    ) -> SigningRequest:
        """An operator-signed wave request carrying exactly ``wave_signed`` over production."""
        request = wave_request(
            wave,
            "production",
            42,
            wave_signed,
            production_payload=production,
            keyids=keyids or [self.targets_keyid],
            revert_signed=revert_signed,
        )
        return operator_sign(request, self.operator_home, self.operator_fpr)


_GPG_CACHE: dict[str, tuple[Path, str]] = {}


def make_rig(
    tmp_path: Path,
    *,
    officer: bool = False,
    allow_unsigned: bool = False,
    targets_type: str = "ed25519",
) -> Rig:
    operator_home, operator_fpr = make_gnupg_home(tmp_path / "operator.gnupg", "Operator")
    officer_home = officer_fpr = None
    if officer:
        officer_home, officer_fpr = make_gnupg_home(tmp_path / "officer.gnupg", "Officer")
    home = init_home(
        tmp_path / "appliance",
        officer_gpg_key=officer_fpr,
        allow_unsigned_requests=allow_unsigned,
    )
    appliance = Appliance(home)
    rsa_bits = {"rsa_bits": 2048} if targets_type == "rsa" else {}
    targets = appliance.keystore.add_signer(
        "targets", generate_signer(targets_type, **rsa_bits), PASSPHRASE, scrypt_n=SCRYPT_N
    )
    root = appliance.keystore.add_signer(
        "root", generate_signer("ed25519"), PASSPHRASE, scrypt_n=SCRYPT_N
    )
    appliance.add_operators(export_public(operator_home, operator_fpr).encode())
    return Rig(
        tmp_path,
        appliance,
        targets.keyid,
        root.keyid,
        operator_home,
        operator_fpr,
        officer_home,
        officer_fpr,
        generate_signer("ed25519"),
    )


def run_cli(args: list[str], env: dict[str, str], stdin: str | None = None) -> tuple[int, str, str]:
    """Run ``wavesign-offline`` in-process exactly as its console script does."""
    runner = CliRunner()
    code = 0
    with runner.isolation(input=stdin, env=env) as (out, err, _mixed):
        try:
            run(cli, args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return code, stdout, stderr


def state_of(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` and its bytes (to prove nothing changed)."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def verify_with_tuf(
    signed: dict[str, Any],
    response: SigningResponse,
    payload: str,
    offline_key: Any,
    online: CryptoSigner,
) -> None:
    """Merge the online signature and check threshold 2 with python-tuf itself."""
    root = Root(expires=datetime.now(UTC) + timedelta(days=30))
    root.roles["targets"] = Role([], 2)
    root.add_key(offline_key, "targets")
    root.add_key(online.public_key, "targets")
    md = Metadata(Targets.from_dict(copy.deepcopy(signed)))
    for entry in response.signatures:
        if entry.payload == payload:
            md.signatures[entry.keyid] = Signature(entry.keyid, entry.sig)
    md.sign(online, append=True)
    root.verify_delegate("targets", md.signed_bytes, md.signatures)
