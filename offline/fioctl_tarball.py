"""Reading the offline credentials tarball that fioctl writes (``targets.only.key.tgz``).

A gzip tar with key pairs under ``tufrepo/keys/``:

* ``fioctl-<role>-<keyid>.pub`` / ``.sec`` (role ``root`` or ``targets``), current fioctl;
* ``first-root.pub`` / ``.sec``: the first root key after the factory's first rotation;
* older garage-sign layouts: ``tufrepo/config.json`` and ``<name>.pub`` / ``.sec``, the
  role read from the name (``root``, ``targets``, ``offline-root``, ...).

Each ``.pub`` is ``{"keytype", "keyval": {"public"}}`` and each ``.sec`` is
``{"keytype", "keyval": {"private"}}``; ``keytype`` is ``ED25519`` or ``RSA`` in any
case. ED25519 publics are the hex of 32 raw bytes, privates the hex of the 32-byte
seed (or 64 bytes: seed then public). RSA privates are PKCS#1 PEM, publics PKIX PEM;
fioctl signs RSASSA-PSS-SHA256 with a 32-byte salt, which is what securesystemslib's
``rsassa-pss-sha256`` does (salt length = digest length) so signatures interoperate.

The tarball is untrusted input: members with absolute or ``..`` paths, links, device
files and oversized members are refused before any byte of them is read, and every
private key must match its public half.
"""

from __future__ import annotations

import json
import posixpath
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from securesystemslib.signer import CryptoSigner, SSlibKey
from wavesign.shared.errors import WavesignError
from wavesign.shared.keys import with_tuf_keyid

__all__ = ["FioctlKey", "FioctlTarballError", "read_fioctl_tarball"]

MAX_TARBALL = 16 * 1024 * 1024
MAX_MEMBER = 256 * 1024
MAX_MEMBERS = 256
KEYS_DIR = "tufrepo/keys/"
_FIOCTL_NAME = re.compile(r"fioctl-(root|targets)-([0-9a-f]+)")


class FioctlTarballError(WavesignError):
    """The tarball is not a usable fioctl offline credentials file."""


@dataclass(frozen=True)
class FioctlKey:
    """One key pair from the tarball, ready to be stored."""

    role: str
    name: str
    signer: CryptoSigner

    @property
    def public(self) -> SSlibKey:
        key = self.signer.public_key
        assert isinstance(key, SSlibKey)
        return key


def _safe_name(member: tarfile.TarInfo, tarball: Path) -> str:
    name = member.name
    normal = posixpath.normpath(name)
    if name.startswith("/") or normal.startswith("..") or "/../" in f"/{name}/":
        raise FioctlTarballError(f"{tarball}: member {name!r} has an unsafe path")
    if member.issym() or member.islnk():
        raise FioctlTarballError(f"{tarball}: member {name!r} is a link; refusing the tarball")
    if not (member.isfile() or member.isdir()):
        raise FioctlTarballError(f"{tarball}: member {name!r} is not a regular file")
    if member.size > MAX_MEMBER:
        raise FioctlTarballError(
            f"{tarball}: member {name!r} is {member.size} bytes, far larger than a key file"
        )
    return normal[2:] if normal.startswith("./") else normal


def _read_members(tarball: Path) -> dict[str, bytes]:
    if tarball.is_symlink() or not tarball.is_file():
        raise FioctlTarballError(f"{tarball} is not a regular file")
    if tarball.stat().st_size > MAX_TARBALL:
        raise FioctlTarballError(f"{tarball} is too large to be a key tarball")
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            count = 0
            for member in archive:
                count += 1
                if count > MAX_MEMBERS:
                    raise FioctlTarballError(f"{tarball} has more than {MAX_MEMBERS} members")
                name = _safe_name(member, tarball)
                if member.isdir():
                    continue
                if not (name.startswith(KEYS_DIR) or name == "tufrepo/config.json"):
                    continue  # other tufrepo content (roles, targets) is not needed
                if name in files:
                    raise FioctlTarballError(f"{tarball}: member {name!r} appears twice")
                handle = archive.extractfile(member)
                if handle is None:
                    raise FioctlTarballError(f"{tarball}: member {name!r} cannot be read")
                files[name] = handle.read(MAX_MEMBER + 1)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, FioctlTarballError):
            raise
        raise FioctlTarballError(f"{tarball} is not a gzip tar archive ({exc})") from None
    return files


def _role_of(stem: str, legacy: bool, tarball: Path) -> str:
    match = _FIOCTL_NAME.fullmatch(stem)
    if match:
        return match.group(1)
    if stem == "first-root":
        return "root"
    if legacy:
        lowered = stem.lower()
        if "root" in lowered and "targets" not in lowered:
            return "root"
        if "targets" in lowered and "root" not in lowered:
            return "targets"
    raise FioctlTarballError(f"{tarball}: cannot tell the role of key {stem!r}")


def _key_json(data: bytes, name: str, field: str) -> tuple[str, str]:
    try:
        document: Any = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise FioctlTarballError(f"{name} is not JSON") from None
    if not isinstance(document, dict):
        raise FioctlTarballError(f"{name} is not a key object")
    keytype = document.get("keytype")
    keyval = document.get("keyval")
    if not isinstance(keytype, str) or not isinstance(keyval, dict):
        raise FioctlTarballError(f"{name} lacks keytype or keyval")
    value = keyval.get(field)
    if not isinstance(value, str) or not value.strip():
        raise FioctlTarballError(f"{name} has no keyval.{field}")
    return keytype.lower(), value.strip()


def _ed25519(public_hex: str, private_hex: str, name: str) -> CryptoSigner:
    try:
        private_raw = bytes.fromhex(private_hex)
        public_raw = bytes.fromhex(public_hex)
    except ValueError:
        raise FioctlTarballError(f"{name}: ED25519 key values must be hex") from None
    if len(private_raw) == 64:
        if private_raw[32:] != public_raw:
            raise FioctlTarballError(f"{name}: the private key's public half is not the .pub key")
        private_raw = private_raw[:32]
    if len(private_raw) != 32 or len(public_raw) != 32:
        raise FioctlTarballError(f"{name}: ED25519 keys are 32 bytes")
    private = Ed25519PrivateKey.from_private_bytes(private_raw)
    derived = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    if derived != public_raw:
        raise FioctlTarballError(f"{name}: the private key does not match the .pub key")
    public = SSlibKey.from_crypto(Ed25519PublicKey.from_public_bytes(public_raw))
    return CryptoSigner(private, with_tuf_keyid(public))


def _rsa(public_pem: str, private_pem: str, name: str) -> CryptoSigner:
    try:
        private = serialization.load_pem_private_key(private_pem.encode("ascii"), None)
        public = serialization.load_pem_public_key(public_pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError):
        raise FioctlTarballError(f"{name}: unreadable RSA PEM") from None
    if not isinstance(private, RSAPrivateKey) or not isinstance(public, RSAPublicKey):
        raise FioctlTarballError(f"{name}: keytype RSA but the PEM holds another kind of key")
    if private.public_key().public_numbers() != public.public_numbers():
        raise FioctlTarballError(f"{name}: the private key does not match the .pub key")
    if public.key_size < 2048:
        raise FioctlTarballError(f"{name}: RSA keys below 2048 bits are refused")
    key = SSlibKey.from_crypto(public, scheme="rsassa-pss-sha256")
    return CryptoSigner(private, with_tuf_keyid(key))


def read_fioctl_tarball(tarball: Path) -> list[FioctlKey]:
    """Every key pair in ``tarball``, each checked; raises on anything suspicious."""
    files = _read_members(tarball)
    legacy = "tufrepo/config.json" in files
    stems: dict[str, dict[str, bytes]] = {}
    for name, data in files.items():
        if not name.startswith(KEYS_DIR):
            continue
        base = name[len(KEYS_DIR) :]
        if "/" in base:
            continue
        stem, dot, ext = base.rpartition(".")
        if not dot or ext not in ("pub", "sec"):
            continue
        stems.setdefault(stem, {})[ext] = data
    keys: list[FioctlKey] = []
    for stem, pair in sorted(stems.items()):
        if "sec" not in pair:
            continue  # a public key alone (e.g. a rotated-out key) is nothing to import
        if "pub" not in pair:
            raise FioctlTarballError(f"{tarball}: {stem}.sec has no matching {stem}.pub")
        role = _role_of(stem, legacy, tarball)
        pub_type, public = _key_json(pair["pub"], f"{stem}.pub", "public")
        sec_type, private = _key_json(pair["sec"], f"{stem}.sec", "private")
        if pub_type != sec_type:
            raise FioctlTarballError(f"{stem}: .pub is {pub_type} but .sec is {sec_type}")
        if pub_type == "ed25519":
            signer = _ed25519(public, private, stem)
        elif pub_type == "rsa":
            signer = _rsa(public, private, stem)
        else:
            raise FioctlTarballError(f"{stem}: unsupported key type {pub_type!r}")
        keys.append(FioctlKey(role, stem, signer))
    if not keys:
        raise FioctlTarballError(f"{tarball} holds no key pair under {KEYS_DIR}")
    return keys
