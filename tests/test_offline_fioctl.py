"""Importing fioctl's offline credentials tarball, built here exactly as fioctl lays it out."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from wavesign.offline.appliance import Appliance
from wavesign.offline.home import init_home
from wavesign.shared.bundles import SigningResponse
from wavesign.shared.canonical import canonical_bytes
from wavesign.shared.keys import generate_signer

from tests.test_offline_support import (
    BASE_ENV,
    export_public,
    make_gnupg_home,
    new_target,
    operator_sign,
    production_targets,
    run_cli,
    state_of,
    targets_signed,
    verify_with_tuf,
    wave_request,
)


def _go_json(value: dict) -> bytes:
    # Go's json.Marshal: struct field order, no spaces.
    return json.dumps(value, separators=(",", ":")).encode()


def _spki_kid(public_key: object) -> str:
    der = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def ed25519_pair(seed_and_public: bool = False) -> tuple[str, bytes, bytes]:
    private = ed25519.Ed25519PrivateKey.generate()
    raw_private = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    raw_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    secret = raw_private + raw_public if seed_and_public else raw_private
    pub = _go_json({"keytype": "ED25519", "keyval": {"public": raw_public.hex()}})
    sec = _go_json({"keytype": "ED25519", "keyval": {"private": secret.hex()}})
    return _spki_kid(private.public_key()), pub, sec


def rsa_pair(bits: int = 4096) -> tuple[str, bytes, bytes, rsa.RSAPublicKey]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # "RSA PRIVATE KEY", PKCS#1
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert private_pem.startswith("-----BEGIN RSA PRIVATE KEY-----")
    pub = _go_json({"keytype": "RSA", "keyval": {"public": public_pem}})
    sec = _go_json({"keytype": "RSA", "keyval": {"private": private_pem}})
    return _spki_kid(private.public_key()), pub, sec, private.public_key()


def write_tarball(path: Path, files: dict[str, bytes]) -> Path:
    """Like fioctl's saveTufCreds: gzip tar, one header (name, size) per file, no folders."""
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def _appliance(tmp_path: Path) -> tuple[Appliance, dict[str, str]]:
    home = init_home(tmp_path / "appliance")
    return Appliance(home), dict(BASE_ENV, WAVESIGN_OFFLINE_HOME=str(home.root))


def _sign_wave_with(appliance: Appliance, env: dict[str, str], tmp_path: Path, keyid: str):
    operator_home, fpr = make_gnupg_home(tmp_path / "op.gnupg", "Operator")
    appliance.add_operators(export_public(operator_home, fpr).encode())
    production = targets_signed(production_targets(5, "12"), version=1)
    appliance.payloads.add(production)
    wave = targets_signed({**production["targets"], **new_target("42")}, version=2)
    request = wave_request(
        "v2.0-update", "production", 42, wave, production_payload=production, keyids=[keyid]
    )
    request = operator_sign(request, operator_home, fpr)
    path = tmp_path / "request.json"
    path.write_bytes(request.to_bytes())
    out = tmp_path / "response.json"
    code, _, err = run_cli(["sign", str(path), "--confirm", "v2.0-update", "--out", str(out)], env)
    assert code == 0, err
    return request, SigningResponse.from_bytes(out.read_bytes().strip())


def test_ed25519_targets_only_tarball(tmp_path: Path) -> None:
    kid, pub, sec = ed25519_pair()
    tarball = write_tarball(
        tmp_path / "targets.only.key.tgz",
        {
            f"tufrepo/keys/fioctl-targets-{kid}.pub": pub,
            f"tufrepo/keys/fioctl-targets-{kid}.sec": sec,
        },
    )
    appliance, env = _appliance(tmp_path)
    code, out, err = run_cli(["keys", "import", str(tarball)], env)
    assert code == 0, err
    assert "private" not in out and json.loads(sec)["keyval"]["private"] not in out + err
    code, out, _ = run_cli(["keys", "list", "--json"], env)
    (listed,) = json.loads(out)
    assert listed["role"] == "targets" and listed["type"] == "ed25519"
    assert listed["foundries_keyid"] == kid
    stored = appliance.keystore.find(listed["keyid"])
    assert stored is not None
    # The key file on disk holds no plain private key.
    assert json.loads(sec)["keyval"]["private"] not in stored.path.read_text()
    assert stored.path.stat().st_mode & 0o777 == 0o600
    request, response = _sign_wave_with(appliance, env, tmp_path, listed["keyid"])
    verify_with_tuf(
        request.payload("wave").full(), response, "wave", stored.public, generate_signer()
    )


def test_rsa_4096_root_and_targets_tarball_signs_like_fioctl(tmp_path: Path) -> None:
    targets_kid, targets_pub, targets_sec, targets_public = rsa_pair(4096)
    root_kid, root_pub, root_sec = ed25519_pair(seed_and_public=True)
    tarball = write_tarball(
        tmp_path / "offline-creds.tgz",
        {
            "tufrepo/keys/first-root.pub": root_pub,
            "tufrepo/keys/first-root.sec": root_sec,
            f"tufrepo/keys/fioctl-targets-{targets_kid}.pub": targets_pub,
            f"tufrepo/keys/fioctl-targets-{targets_kid}.sec": targets_sec,
        },
    )
    appliance, env = _appliance(tmp_path)
    code, out, err = run_cli(["keys", "import", str(tarball), "--json"], env)
    assert code == 0, err
    imported = {k["role"]: k for k in json.loads(out)}
    assert imported["targets"]["type"] == "rsa-4096"
    assert imported["targets"]["foundries_keyid"] == targets_kid
    assert imported["root"]["foundries_keyid"] == root_kid
    request, response = _sign_wave_with(appliance, env, tmp_path, imported["targets"]["keyid"])
    stored = appliance.keystore.find(imported["targets"]["keyid"])
    assert stored is not None and stored.public.scheme == "rsassa-pss-sha256"
    verify_with_tuf(
        request.payload("wave").full(), response, "wave", stored.public, generate_signer()
    )
    # Independently of securesystemslib: RSASSA-PSS, SHA-256, salt length 32, as fioctl.
    entry = next(e for e in response.signatures if e.payload == "wave")
    targets_public.verify(
        bytes.fromhex(entry.sig),
        canonical_bytes(request.payload("wave").full()),
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )


def test_legacy_layout_with_config_json(tmp_path: Path) -> None:
    _, pub, sec = ed25519_pair()
    tarball = write_tarball(
        tmp_path / "old.tgz",
        {
            "tufrepo/config.json": b'{"reposerver": "https://example.com"}',
            "tufrepo/keys/targets.pub": pub,
            "tufrepo/keys/targets.sec": sec,
        },
    )
    _, env = _appliance(tmp_path)
    code, out, err = run_cli(["keys", "import", str(tarball), "--json"], env)
    assert code == 0, err
    assert [k["role"] for k in json.loads(out)] == ["targets"]


def _bad_members(tmp_path: Path, kind: str) -> Path:
    kid, pub, sec = ed25519_pair()
    base = f"tufrepo/keys/fioctl-targets-{kid}"
    path = tmp_path / f"{kind}.tgz"
    with tarfile.open(path, "w:gz") as archive:
        for name, data in ((base + ".pub", pub), (base + ".sec", sec)):
            if kind == "mismatch" and name.endswith(".pub"):
                data = ed25519_pair()[1]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        if kind == "traversal":
            info = tarfile.TarInfo("tufrepo/keys/../../../etc/evil.sec")
            info.size = 2
            archive.addfile(info, io.BytesIO(b"{}"))
        elif kind == "symlink":
            info = tarfile.TarInfo("tufrepo/keys/link.sec")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/shadow"
            archive.addfile(info)
        elif kind == "huge":
            info = tarfile.TarInfo("tufrepo/keys/huge.sec")
            info.size = 50 * 1024 * 1024
            archive.addfile(info, io.BytesIO(b"\0" * info.size))
        elif kind == "absolute":
            info = tarfile.TarInfo("/tufrepo/keys/abs.sec")
            info.size = 2
            archive.addfile(info, io.BytesIO(b"{}"))
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("traversal", "unsafe path"),
        ("absolute", "unsafe path"),
        ("symlink", "is a link"),
        ("huge", "larger than a key file"),
        ("mismatch", "does not match the .pub key"),
    ],
)
def test_hostile_tarballs_are_refused(tmp_path: Path, kind: str, message: str) -> None:
    tarball = _bad_members(tmp_path, kind)
    appliance, env = _appliance(tmp_path)
    before = state_of(appliance.home.root)
    code, _, err = run_cli(["keys", "import", str(tarball)], env)
    assert code == 1
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert message in err
    assert state_of(appliance.home.root) == before
    assert not Path("/etc/evil.sec").exists()


def test_not_a_tarball(tmp_path: Path) -> None:
    path = tmp_path / "x.tgz"
    path.write_bytes(b"not gzip")
    _, env = _appliance(tmp_path)
    code, _, err = run_cli(["keys", "import", str(path)], env)
    assert code == 1 and "not a gzip tar archive" in err
