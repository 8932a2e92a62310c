"""Private key files, encrypted at rest.

A key file is one JSON document::

    {"format": "wavesign-private-key", "version": 1,
     "public": {"keytype", "scheme", "keyval"},
     "kdf": {"name": "scrypt", "salt", "n", "r", "p"} | null,
     "check": hex, "cipher": "aes-256-gcm" | "none", "nonce": hex, "ciphertext": hex}

scrypt derives 64 bytes from the passphrase: the first half is the AES-256-GCM key,
the second keys an HMAC ``check`` value. The check tells a wrong passphrase apart
from an altered file, so each gets its own error. The header (everything but the
ciphertext) is GCM's associated data: swapping the public key is detected too.
Files are written atomically with mode 0600.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, SSlibKey

from .canonical import canonical_bytes
from .errors import KeyFileError, WrongPassphraseError
from .fileio import atomic_write
from .keys import key_from_dict, key_to_dict

__all__ = ["load_signer", "read_public_key", "save_signer"]

FORMAT = "wavesign-private-key"
VERSION = 1
#: scrypt cost: about 0.1 s and 32 MiB per open, which is what makes guessing slow.
SCRYPT_N = 2**15
MAX_KEY_FILE = 64 * 1024


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes]:
    material = Scrypt(salt=salt, length=64, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))
    return material[:32], material[32:]


def _check_value(check_key: bytes) -> str:
    return hmac.new(check_key, b"wavesign key check v1", hashlib.sha256).hexdigest()


def save_signer(
    path: str | os.PathLike[str],
    signer: CryptoSigner,
    passphrase: str | None,
    *,
    scrypt_n: int = SCRYPT_N,
) -> Path:
    """Write ``signer``'s private key to ``path`` (0600), encrypted when given a passphrase."""
    private_pem = signer.private_bytes
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "public": key_to_dict(signer.public_key),
    }
    if passphrase is None:
        header.update(kdf=None, check="", cipher="none", nonce="")
        document = dict(header, ciphertext=private_pem.hex())
    else:
        if not passphrase:
            raise KeyFileError("an empty passphrase cannot protect a key file")
        salt, nonce = os.urandom(16), os.urandom(12)
        enc_key, check_key = _derive(passphrase, salt, scrypt_n, 8, 1)
        header.update(
            kdf={"name": "scrypt", "salt": salt.hex(), "n": scrypt_n, "r": 8, "p": 1},
            check=_check_value(check_key),
            cipher="aes-256-gcm",
            nonce=nonce.hex(),
        )
        ciphertext = AESGCM(enc_key).encrypt(nonce, private_pem, canonical_bytes(header))
        document = dict(header, ciphertext=ciphertext.hex())
    return atomic_write(path, json.dumps(document, indent=1).encode() + b"\n", mode=0o600)


def _read_document(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist") from None
    if len(raw) > MAX_KEY_FILE:
        raise KeyFileError(f"key file {path} is larger than any key file")
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise KeyFileError(f"key file {path} is truncated or not JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise KeyFileError(f"{path} is not a wavesign key file")
    if document.get("version") != VERSION:
        raise KeyFileError(f"key file {path} has unknown version {document.get('version')!r}")
    for field in ("public", "kdf", "check", "cipher", "nonce", "ciphertext"):
        if field not in document:
            raise KeyFileError(f"key file {path} is missing field {field!r}")
    return document


def read_public_key(path: str | os.PathLike[str]) -> SSlibKey:
    """The public key stored beside the encrypted private key; needs no passphrase."""
    document = _read_document(Path(path))
    return key_from_dict(document["public"])


def load_signer(path: str | os.PathLike[str], passphrase: str | None) -> CryptoSigner:
    """Open a key file and return a signer whose public key carries the TUF key id."""
    path = Path(path)
    document = _read_document(path)
    try:
        public = key_from_dict(document["public"])
        ciphertext = bytes.fromhex(document["ciphertext"])
        header = {k: v for k, v in document.items() if k != "ciphertext"}
        if document["cipher"] == "none":
            private_pem = ciphertext
        elif document["cipher"] == "aes-256-gcm":
            if passphrase is None:
                raise WrongPassphraseError(f"key file {path} is encrypted: a passphrase is needed")
            kdf = document["kdf"]
            enc_key, check_key = _derive(
                passphrase, bytes.fromhex(kdf["salt"]), int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
            )
            if not hmac.compare_digest(_check_value(check_key), str(document["check"])):
                raise WrongPassphraseError(f"wrong passphrase for key file {path}")
            try:
                private_pem = AESGCM(enc_key).decrypt(
                    bytes.fromhex(document["nonce"]), ciphertext, canonical_bytes(header)
                )
            except InvalidTag:
                raise KeyFileError(f"key file {path} has been altered") from None
        else:
            raise KeyFileError(f"key file {path} uses unknown cipher {document['cipher']!r}")
        private_key = load_pem_private_key(private_pem, None)
        return CryptoSigner(private_key, public)
    except (KeyFileError, WrongPassphraseError):
        raise
    except Exception as exc:  # any other parse failure means the file is damaged
        raise KeyFileError(
            f"key file {path} is damaged ({type(exc).__name__}); restore it from backup"
        ) from None
