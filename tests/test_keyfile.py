"""Encrypted key files: round trip, wrong passphrase, damage, file mode."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from wavesign.shared.errors import KeyFileError, WrongPassphraseError
from wavesign.shared.keyfile import load_signer, read_public_key, save_signer
from wavesign.shared.keys import generate_signer, key_to_dict
from wavesign.shared.signing import sign_payload, verify_signature

FAST_N = 2**12  # keeps the suite quick; the cost parameter is stored in the file


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa-p256", "rsa"])
def test_round_trip_signs_with_the_same_key(tmp_path: Path, key_type: str) -> None:
    signer = generate_signer(key_type, rsa_bits=2048)
    path = save_signer(tmp_path / "k.json", signer, "correct horse", scrypt_n=FAST_N)
    loaded = load_signer(path, "correct horse")
    assert loaded.public_key.keyid == signer.public_key.keyid
    assert key_to_dict(read_public_key(path)) == key_to_dict(signer.public_key)
    signature = sign_payload(loaded, {"x": 1})
    verify_signature(signer.public_key, signature, b'{"x":1}')


def test_file_mode_is_0600(tmp_path: Path, ed25519_signers: list) -> None:
    path = save_signer(tmp_path / "k.json", ed25519_signers[0], "pw", scrypt_n=FAST_N)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    plain = save_signer(tmp_path / "plain.json", ed25519_signers[0], None)
    assert stat.S_IMODE(plain.stat().st_mode) == 0o600


def test_passphrase_never_appears_in_the_file(tmp_path: Path, ed25519_signers: list) -> None:
    path = save_signer(tmp_path / "k.json", ed25519_signers[0], "s3cret-pass", scrypt_n=FAST_N)
    assert b"s3cret-pass" not in path.read_bytes()
    assert ed25519_signers[0].private_bytes not in path.read_bytes()


def test_wrong_passphrase_is_named(tmp_path: Path, ed25519_signers: list) -> None:
    path = save_signer(tmp_path / "k.json", ed25519_signers[0], "right", scrypt_n=FAST_N)
    with pytest.raises(WrongPassphraseError, match="wrong passphrase"):
        load_signer(path, "wrong")
    with pytest.raises(WrongPassphraseError, match="passphrase is needed"):
        load_signer(path, None)


def test_truncated_file_is_refused(tmp_path: Path, ed25519_signers: list) -> None:
    path = save_signer(tmp_path / "k.json", ed25519_signers[0], "pw", scrypt_n=FAST_N)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(KeyFileError, match="truncated"):
        load_signer(path, "pw")


def test_altered_ciphertext_is_refused(tmp_path: Path, ed25519_signers: list) -> None:
    path = save_signer(tmp_path / "k.json", ed25519_signers[0], "pw", scrypt_n=FAST_N)
    document = json.loads(path.read_bytes())
    flipped = "0" if document["ciphertext"][10] != "0" else "1"
    document["ciphertext"] = document["ciphertext"][:10] + flipped + document["ciphertext"][11:]
    path.write_text(json.dumps(document))
    with pytest.raises(KeyFileError, match="altered"):
        load_signer(path, "pw")


def test_swapped_public_key_is_refused(tmp_path: Path, ed25519_signers: list) -> None:
    path = save_signer(tmp_path / "k.json", ed25519_signers[0], "pw", scrypt_n=FAST_N)
    document = json.loads(path.read_bytes())
    document["public"] = key_to_dict(ed25519_signers[1].public_key)
    path.write_text(json.dumps(document))
    with pytest.raises(KeyFileError, match="altered"):
        load_signer(path, "pw")


def test_missing_file_and_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        load_signer(tmp_path / "none.json", "pw")
    (tmp_path / "other.json").write_text('{"hello": 1}')
    with pytest.raises(KeyFileError, match="not a wavesign key file"):
        load_signer(tmp_path / "other.json", "pw")
