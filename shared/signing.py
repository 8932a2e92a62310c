"""Signing and verifying TUF payloads, and counting thresholds by distinct keys."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError
from securesystemslib.signer import Key, Signature, Signer
from tuf.api.metadata import Metadata, Root, Signed

from .canonical import canonical_bytes
from .errors import (
    DuplicateSignatureError,
    SignatureMismatchError,
    SigningError,
    ThresholdError,
)
from .keys import public_identity

__all__ = [
    "ThresholdResult",
    "check_threshold",
    "merge_signatures",
    "payload_bytes",
    "sign_payload",
    "verify_signature",
    "verify_threshold",
]


def payload_bytes(signed: Signed | Mapping[str, Any] | bytes) -> bytes:
    """The bytes a signature covers: the canonical JSON of the ``signed`` object."""
    if isinstance(signed, bytes):
        return signed
    if isinstance(signed, Signed):
        return canonical_bytes(signed.to_dict())
    return canonical_bytes(signed)


def verify_signature(key: Key, signature: Signature, data: bytes) -> None:
    """Raise :class:`SignatureMismatchError` unless ``signature`` is ``key``'s over ``data``."""
    if signature.keyid != key.keyid:
        raise SignatureMismatchError(
            f"signature is by key {signature.keyid[:16]}, not {key.keyid[:16]}"
        )
    try:
        key.verify_signature(signature, data)
    except (UnverifiedSignatureError, VerificationError):
        raise SignatureMismatchError(
            f"signature by key {key.keyid[:16]} does not verify over these bytes"
        ) from None


def sign_payload(signer: Signer, signed: Signed | Mapping[str, Any] | bytes) -> Signature:
    """Sign the canonical bytes of ``signed`` and verify the result before returning it.

    A signature that fails its own verification (a faulty token, a key/public-key
    mismatch) raises :class:`SigningError` and is never returned.
    """
    data = payload_bytes(signed)
    signature = signer.sign(data)
    try:
        verify_signature(signer.public_key, signature, data)
    except SignatureMismatchError as exc:
        raise SigningError(f"a signature just made did not verify: {exc}") from None
    return signature


def merge_signatures(metadata: Metadata[Any], signatures: Iterable[Signature]) -> Metadata[Any]:
    """Add ``signatures`` to ``metadata`` without dropping the ones it has.

    Unlike ``Metadata.sign(signer)`` this never clears existing signatures. The same
    signature twice is harmless; two different signatures for one key id are refused.
    """
    for signature in signatures:
        existing = metadata.signatures.get(signature.keyid)
        if existing is not None and existing.signature != signature.signature:
            raise DuplicateSignatureError(
                f"key {signature.keyid[:16]} already has a different signature on this metadata"
            )
        metadata.signatures[signature.keyid] = signature
    return metadata


@dataclass(frozen=True)
class ThresholdResult:
    """Which of a role's keys signed, counted as distinct public keys."""

    role: str
    threshold: int
    verified: dict[str, Key] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    @property
    def distinct(self) -> int:
        return len({public_identity(key) for key in self.verified.values()})

    @property
    def ok(self) -> bool:
        return self.distinct >= self.threshold

    def describe(self) -> str:
        parts = [f"{self.role}: {self.distinct}/{self.threshold} distinct keys"]
        if self.failed:
            parts.append(f"invalid signatures from {', '.join(k[:16] for k in self.failed)}")
        if self.unknown:
            parts.append(f"signatures from unlisted keys {', '.join(k[:16] for k in self.unknown)}")
        return "; ".join(parts)


def check_threshold(
    root: Root,
    role: str,
    signed: Signed | Mapping[str, Any] | bytes,
    signatures: Mapping[str, Signature],
) -> ThresholdResult:
    """Count the valid signatures of ``role``'s keys in ``root`` over ``signed``."""
    role_obj = root.get_delegated_role(role)
    data = payload_bytes(signed)
    verified: dict[str, Key] = {}
    failed: list[str] = []
    unknown: list[str] = []
    for keyid, signature in signatures.items():
        if keyid not in role_obj.keyids:
            unknown.append(keyid)
            continue
        key = root.get_key(keyid)
        try:
            verify_signature(key, signature, data)
        except SignatureMismatchError:
            failed.append(keyid)
            continue
        verified[keyid] = key
    return ThresholdResult(role, role_obj.threshold, verified, failed, unknown)


def verify_threshold(root: Root, role: str, metadata: Metadata[Any]) -> ThresholdResult:
    """Raise :class:`ThresholdError` unless ``metadata`` meets ``role``'s threshold in ``root``."""
    result = check_threshold(root, role, metadata.signed, metadata.signatures)
    if not result.ok:
        raise ThresholdError(role, result.distinct, result.threshold, result.describe())
    return result
