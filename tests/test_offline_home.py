"""The appliance home and its keystore, through the command line."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.test_offline_support import (
    BASE_ENV,
    PASSPHRASE,
    export_public,
    make_gnupg_home,
    run_cli,
    state_of,
)


def _init(tmp_path: Path, *extra: str) -> tuple[Path, dict[str, str]]:
    home = tmp_path / "home"
    env = dict(BASE_ENV, WAVESIGN_OFFLINE_HOME=str(home))
    code, _, err = run_cli(["init", *extra], env)
    assert code == 0, err
    return home, env


def test_init_makes_a_private_home_and_refuses_to_overwrite(tmp_path: Path) -> None:
    home, env = _init(tmp_path)
    for path in [home, *home.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
    config = json.loads((home / "config.json").read_text())
    assert config["allow_unsigned_requests"] is False and config["max_expiry_days"] == 400
    before = state_of(home)
    code, _, err = run_cli(["init", "--home", str(home)], env)
    assert code == 1 and err.startswith("error: ") and "not empty" in err
    assert state_of(home) == before


def test_init_with_officer_key_checks_gnupg(tmp_path: Path) -> None:
    gnupg, fpr = make_gnupg_home(tmp_path / "officer.gnupg", "Officer")
    env = dict(BASE_ENV, GNUPGHOME=str(gnupg))
    code, _, err = run_cli(
        ["init", "--home", str(tmp_path / "a"), "--officer-gpg-key", "AB" * 20], env
    )
    assert code == 1 and "no secret GnuPG key" in err
    assert not (tmp_path / "a").exists()
    code, _, err = run_cli(["init", "--home", str(tmp_path / "b"), "--officer-gpg-key", fpr], env)
    assert code == 0, err
    assert json.loads((tmp_path / "b" / "config.json").read_text())["officer_gpg_key"] == fpr


def test_commands_refuse_a_home_others_can_read(tmp_path: Path) -> None:
    home, env = _init(tmp_path)
    os.chmod(home, 0o755)
    code, _, err = run_cli(["keys", "list"], env)
    assert code == 1 and "readable by other users" in err


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa-p256"])
def test_generate_and_list_show_ids_never_material(tmp_path: Path, key_type: str) -> None:
    home, env = _init(tmp_path)
    code, out, err = run_cli(
        ["keys", "generate", "--role", "targets", "--type", key_type, "--json"], env
    )
    assert code == 0, err
    generated = json.loads(out)
    assert set(generated) == {"keyid", "role", "type"}
    assert generated["role"] == "targets" and generated["type"] == key_type
    (key_file,) = (home / "keys").iterdir()
    document = json.loads(key_file.read_text())
    assert document["cipher"] == "aes-256-gcm" and document["kdf"]["name"] == "scrypt"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    code, out, err = run_cli(["keys", "list", "--json"], env)
    (listed,) = json.loads(out)
    assert listed["keyid"] == generated["keyid"]
    # The Foundries key id is sha256 of the DER SubjectPublicKeyInfo; recompute it here.
    public = document["public"]["keyval"]["public"]
    if key_type == "ed25519":
        loaded = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public))
    else:
        loaded = serialization.load_pem_public_key(public.encode())
    der = loaded.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert listed["foundries_keyid"] == hashlib.sha256(der).hexdigest()
    code, text, _ = run_cli(["keys", "list"], env)
    assert generated["keyid"] in text and "PRIVATE" not in text and PASSPHRASE not in text


def test_rsa_4096_generation(tmp_path: Path) -> None:
    _, env = _init(tmp_path)
    code, out, err = run_cli(
        ["keys", "generate", "--role", "root", "--type", "rsa-4096", "--json"], env
    )
    assert code == 0, err
    assert json.loads(out)["type"] == "rsa-4096"


def test_generate_without_passphrase_or_terminal_fails(tmp_path: Path) -> None:
    home, env = _init(tmp_path)
    del env["WAVESIGN_OFFLINE_PASSPHRASE"]
    code, _, err = run_cli(["keys", "generate", "--role", "root"], env)
    assert code == 1
    assert err.startswith("error: a key passphrase is needed: stdin is not a terminal")
    assert list((home / "keys").iterdir()) == []


def test_operators_add_and_list(tmp_path: Path) -> None:
    _, env = _init(tmp_path)
    gnupg, fpr = make_gnupg_home(tmp_path / "op.gnupg", "Operator")
    key_file = tmp_path / "operator.asc"
    key_file.write_text(export_public(gnupg, fpr))
    code, out, err = run_cli(["operators", "add", str(key_file)], env)
    assert code == 0, err
    assert fpr in out
    code, out, _ = run_cli(["operators", "list", "--json"], env)
    assert [o["fingerprint"] for o in json.loads(out)] == [fpr]
    secret = tmp_path / "secret.asc"
    secret.write_text("-----BEGIN PGP PRIVATE KEY BLOCK-----\n...\n")
    code, _, err = run_cli(["operators", "add", str(secret)], env)
    assert code == 1 and "secret key" in err


def test_all_keys_share_one_passphrase(tmp_path: Path) -> None:
    home, env = _init(tmp_path)
    assert run_cli(["keys", "generate", "--role", "root"], env)[0] == 0
    before = state_of(home)
    code, _, err = run_cli(
        ["keys", "generate", "--role", "targets"],
        env | {"WAVESIGN_OFFLINE_PASSPHRASE": "another passphrase"},
    )
    assert code == 1 and "wrong passphrase" in err
    assert state_of(home) == before
