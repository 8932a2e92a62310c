"""Keys: generation, TUF key ids, public key dicts and key identity.

wavesign signs through securesystemslib's :class:`~securesystemslib.signer.Signer`
interface, so a key on disk, a PKCS#11 token or a KMS all look the same to the code
that signs. Public keys are :class:`~securesystemslib.signer.SSlibKey` objects whose
key id is always the TUF-spec one (sha256 of the canonical ``keytype``, ``scheme``,
``keyval``): some TUF clients refuse any other.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from securesystemslib.signer import CryptoSigner, Key, SSlibKey

from .canonical import digest
from .errors import UnsupportedKeyTypeError, WavesignError

__all__ = [
    "KEY_TYPES",
    "foundries_keyid",
    "generate_signer",
    "key_from_dict",
    "key_to_dict",
    "public_identity",
    "tuf_keyid",
    "with_tuf_keyid",
]

#: The key types wavesign generates. "rsa" is 4096-bit RSASSA-PSS-SHA256, as fioctl uses.
KEY_TYPES = ("ed25519", "ecdsa-p256", "rsa")

_SCHEMES = {
    ("ed25519", "ed25519"),
    ("ecdsa", "ecdsa-sha2-nistp256"),
    ("ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256"),
    ("rsa", "rsassa-pss-sha256"),
}


def tuf_keyid(keytype: str, scheme: str, keyval: dict[str, Any]) -> str:
    """The TUF-spec key id: sha256 of the canonical ``{keytype, scheme, keyval}``."""
    return digest({"keytype": keytype, "scheme": scheme, "keyval": keyval})


def with_tuf_keyid(key: Key) -> SSlibKey:
    """A copy of ``key`` whose key id is the TUF-spec one."""
    if not isinstance(key, SSlibKey):
        raise UnsupportedKeyTypeError(f"unsupported key class {type(key).__name__}")
    keyid = tuf_keyid(key.keytype, key.scheme, key.keyval)
    return SSlibKey(keyid, key.keytype, key.scheme, dict(key.keyval))


def generate_signer(key_type: str = "ed25519", *, rsa_bits: int = 4096) -> CryptoSigner:
    """A new in-memory signer of ``key_type`` (one of :data:`KEY_TYPES`)."""
    if key_type == "ed25519":
        signer = CryptoSigner.generate_ed25519()
    elif key_type == "ecdsa-p256":
        signer = CryptoSigner.generate_ecdsa(scheme="ecdsa-sha2-nistp256")
    elif key_type in ("rsa", "rsa-4096"):
        signer = CryptoSigner.generate_rsa(scheme="rsassa-pss-sha256", size=rsa_bits)
    else:
        raise UnsupportedKeyTypeError(
            f"unknown key type {key_type!r}: choose one of {', '.join(KEY_TYPES)}"
        )
    # Rebind so the public key carries the TUF-spec id however the library computed it.
    return CryptoSigner(signer._private_key, with_tuf_keyid(signer.public_key))


def key_to_dict(key: Key) -> dict[str, Any]:
    """The TUF key dict (``keytype``, ``scheme``, ``keyval``) of a public key."""
    return {"keytype": key.keytype, "scheme": key.scheme, "keyval": dict(key.keyval)}


def key_from_dict(data: Any, keyid: str | None = None) -> SSlibKey:
    """Parse a TUF public key dict; if ``keyid`` is given it must be the TUF-spec id."""
    if not isinstance(data, dict):
        raise WavesignError("a public key must be a JSON object")
    try:
        keytype, scheme, keyval = data["keytype"], data["scheme"], data["keyval"]
    except KeyError as exc:
        raise WavesignError(f"public key is missing field {exc.args[0]!r}") from None
    if not (isinstance(keytype, str) and isinstance(scheme, str) and isinstance(keyval, dict)):
        raise WavesignError("public key fields have the wrong types")
    if (keytype, scheme) not in _SCHEMES:
        raise UnsupportedKeyTypeError(f"unsupported key type/scheme {keytype}/{scheme}")
    if not isinstance(keyval.get("public"), str):
        raise WavesignError("public key has no keyval.public string")
    expected = tuf_keyid(keytype, scheme, keyval)
    if keyid is not None and keyid != expected:
        raise WavesignError(f"key id {keyid} is not the TUF key id of its key ({expected})")
    return SSlibKey(expected, keytype, scheme, dict(keyval))


def _public_der(key: Key) -> bytes:
    public = key.keyval.get("public", "")
    try:
        if key.keytype == "ed25519":
            raw = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public))
            return raw.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        loaded = serialization.load_pem_public_key(public.encode("ascii"))
        return loaded.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise WavesignError(f"key {key.keyid[:16]} has an unreadable public value: {exc}") from None


def public_identity(key: Key) -> str:
    """An identity shared by every key id that names the same public key.

    Thresholds count these, never key ids: two ids for one key count once.
    """
    return hashlib.sha256(_public_der(key)).hexdigest()


def foundries_keyid(key: Key) -> str:
    """The key id fioctl shows: sha256 of the DER SubjectPublicKeyInfo."""
    return public_identity(key)
