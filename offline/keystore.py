"""The keystore: the appliance's root and offline targets keys, encrypted at rest.

Each key is one file in ``HOME/keys``, named ``<role>-<keyid>.key`` (a
:mod:`wavesign.shared.keyfile` document: AES-256-GCM under a scrypt-derived key) or
``<role>-<keyid>.hsm.json`` (a reference to a PKCS#11 key: URI and public key, no
secret). Listing needs no passphrase; signing does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key, Signer, SSlibKey
from wavesign.shared.errors import WavesignError
from wavesign.shared.fileio import atomic_write
from wavesign.shared.keyfile import SCRYPT_N, load_signer, read_public_key, save_signer
from wavesign.shared.keys import foundries_keyid, key_from_dict, key_to_dict
from wavesign.shared.strictjson import FieldReader, loads_strict

__all__ = [
    "ROLES",
    "SCRYPT_N_ENV",
    "Keystore",
    "KeystoreError",
    "StoredKey",
    "key_type_label",
    "scrypt_n_from_env",
]

ROLES = ("root", "targets")
#: For tests only: a lower scrypt cost makes key files fast to write and open. Production
#: appliances leave it unset and get the library default (2**15).
SCRYPT_N_ENV = "WAVESIGN_OFFLINE_SCRYPT_N"
HSM_FORMAT = "wavesign-offline-hsm-key"
_NAME = re.compile(r"(retired-)?(root|targets)-([0-9a-f]{64})\.(key|hsm\.json)")


class KeystoreError(WavesignError):
    """A key cannot be stored, found or opened."""


def scrypt_n_from_env() -> int:
    raw = os.environ.get(SCRYPT_N_ENV)
    if not raw:
        return SCRYPT_N
    try:
        value = int(raw)
    except ValueError:
        raise KeystoreError(f"{SCRYPT_N_ENV} must be a power of two, got {raw!r}") from None
    if value < 2 or value & (value - 1):
        raise KeystoreError(f"{SCRYPT_N_ENV} must be a power of two, got {raw!r}")
    return value


def key_type_label(key: Key) -> str:
    """``ed25519``, ``ecdsa-p256`` or ``rsa-<bits>``: the name ``--type`` uses."""
    if key.keytype == "ed25519":
        return "ed25519"
    if key.keytype in ("ecdsa", "ecdsa-sha2-nistp256"):
        return "ecdsa-p256"
    if key.keytype == "rsa":
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        loaded = load_pem_public_key(str(key.keyval["public"]).encode("ascii"))
        if isinstance(loaded, RSAPublicKey):
            return f"rsa-{loaded.key_size}"
    return key.keytype


@dataclass(frozen=True)
class StoredKey:
    """One key in the store: its role, public key and where the secret lives."""

    role: str
    public: SSlibKey
    path: Path
    backend: str  # "file" or "hsm"
    hsm_uri: str | None = None
    retired: bool = False

    @property
    def keyid(self) -> str:
        return self.public.keyid

    def to_dict(self) -> dict[str, Any]:
        return {
            "keyid": self.keyid,
            "role": self.role,
            "type": key_type_label(self.public),
            "foundries_keyid": foundries_keyid(self.public),
            "backend": self.backend,
            "status": "retired" if self.retired else "active",
        }


class Keystore:
    """The keys in one home's ``keys/`` folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def all_keys(self) -> list[StoredKey]:
        """Every key, root keys first, each role in key id order."""
        found: list[StoredKey] = []
        if not self.folder.is_dir():
            raise KeystoreError(f"keystore folder {self.folder} is missing")
        for path in sorted(self.folder.iterdir()):
            match = _NAME.fullmatch(path.name)
            if match is None or path.is_symlink():
                continue
            retired, role, keyid, kind = match.groups()
            if kind == "key":
                public = read_public_key(path)
                stored = StoredKey(role, public, path, "file", retired=bool(retired))
            else:
                stored = self._read_hsm_entry(path, role, bool(retired))
            if stored.keyid != keyid:
                raise KeystoreError(f"key file {path.name} holds key {stored.keyid[:16]}")
            found.append(stored)
        return sorted(found, key=lambda k: (ROLES.index(k.role), k.keyid))

    def keys_for(self, role: str) -> list[StoredKey]:
        """The active keys of ``role``: the ones new roots list and targets are signed with."""
        return [k for k in self.all_keys() if k.role == role and not k.retired]

    def retire(self, keyid: str) -> StoredKey:
        """Stop using a key for new roots and targets; it may still sign a rotation away."""
        stored = self.find(keyid)
        if stored is None:
            matches = [k for k in self.all_keys() if k.keyid.startswith(keyid)] if keyid else []
            if len(matches) != 1:
                raise KeystoreError(f"no single key in the keystore has key id {keyid!r}")
            stored = matches[0]
        if stored.retired:
            raise KeystoreError(f"key {stored.keyid[:16]} is already retired")
        target = stored.path.with_name("retired-" + stored.path.name)
        os.rename(stored.path, target)
        return StoredKey(
            stored.role, stored.public, target, stored.backend, stored.hsm_uri, retired=True
        )

    def find(self, keyid: str) -> StoredKey | None:
        return next((k for k in self.all_keys() if k.keyid == keyid), None)

    def _check_new(self, role: str, public: Key) -> None:
        if role not in ROLES:
            raise KeystoreError(f"unknown role {role!r}: choose root or targets")
        held = self.find(public.keyid)
        if held is not None:
            raise KeystoreError(
                f"key {public.keyid[:16]} is already in the keystore as a {held.role} key"
            )

    def add_signer(
        self, role: str, signer: Any, passphrase: str, *, scrypt_n: int | None = None
    ) -> StoredKey:
        """Store a new private key, encrypted with ``passphrase``."""
        public = signer.public_key
        self._check_new(role, public)
        path = self.folder / f"{role}-{public.keyid}.key"
        save_signer(path, signer, passphrase, scrypt_n=scrypt_n or scrypt_n_from_env())
        return StoredKey(role, public, path, "file")

    def add_many(
        self, entries: list[tuple[str, Any]], passphrase: str, *, scrypt_n: int | None = None
    ) -> list[StoredKey]:
        """Store several keys, all or none: a failure removes the ones already written."""
        seen: set[str] = set()
        for role, signer in entries:
            self._check_new(role, signer.public_key)
            if signer.public_key.keyid in seen:
                raise KeystoreError(f"key {signer.public_key.keyid[:16]} appears twice")
            seen.add(signer.public_key.keyid)
        written: list[StoredKey] = []
        try:
            for role, signer in entries:
                written.append(self.add_signer(role, signer, passphrase, scrypt_n=scrypt_n))
        except BaseException:
            for stored in written:
                with contextlib.suppress(FileNotFoundError):
                    stored.path.unlink()
            raise
        return written

    def add_hsm(self, role: str, uri: str, public: SSlibKey) -> StoredKey:
        """Record a PKCS#11 key: only its URI and public key are stored."""
        self._check_new(role, public)
        path = self.folder / f"{role}-{public.keyid}.hsm.json"
        document = {
            "format": HSM_FORMAT,
            "version": 1,
            "uri": uri,
            "public": key_to_dict(public),
        }
        # Not canonical JSON: a PEM public key holds newlines, which canonical JSON leaves raw.
        atomic_write(path, json.dumps(document, indent=1).encode() + b"\n", mode=0o600)
        return StoredKey(role, public, path, "hsm", uri)

    @staticmethod
    def _read_hsm_entry(path: Path, role: str, retired: bool) -> StoredKey:
        data = loads_strict(path.read_bytes(), what=str(path), max_size=64 * 1024)
        reader = FieldReader(data, path.name)
        if reader.string("format") != HSM_FORMAT or reader.integer("version") != 1:
            raise KeystoreError(f"{path.name} is not a wavesign HSM key reference")
        uri = reader.string("uri")
        public = key_from_dict(reader.mapping("public"))
        reader.done()
        return StoredKey(role, public, path, "hsm", uri, retired)

    def has_file_keys(self) -> bool:
        return any(k.backend == "file" for k in self.all_keys())

    def check_passphrase(self, passphrase: str) -> None:
        """All file keys share one passphrase: refuse one that does not open the store."""
        for stored in self.all_keys():
            if stored.backend == "file":
                load_signer(stored.path, passphrase)  # raises WrongPassphraseError
                return

    def signer_for(
        self,
        stored: StoredKey,
        passphrase: str | None,
        pin: Callable[[str], str] | None = None,
    ) -> Signer:
        """Open ``stored`` for signing (passphrase for files, PIN handler for HSM keys)."""
        if stored.backend == "file":
            return load_signer(stored.path, passphrase)
        from .hsm import hsm_signer

        assert stored.hsm_uri is not None
        return hsm_signer(stored.hsm_uri, stored.public, pin)

    def snapshot(self) -> dict[str, bytes]:
        """The bytes of every file in the store (tests compare before and after)."""
        return {p.name: p.read_bytes() for p in sorted(self.folder.iterdir()) if p.is_file()}
