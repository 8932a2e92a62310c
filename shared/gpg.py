"""GnuPG signatures on bundles, through python-gnupg and the real ``gpg`` binary.

Operators sign the requests they export; officers attest to the responses they
return; auditors verify both. Signatures are detached, binary, and carried in the
bundles base64-encoded: ASCII armour would cost a QR frame's worth of headers.
"""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gnupg

from .errors import WavesignError

__all__ = ["GnuPG", "GpgError", "VerifiedSignature"]


class GpgError(WavesignError):
    """A GnuPG operation failed or a GnuPG signature did not verify."""


@dataclass(frozen=True)
class VerifiedSignature:
    """Who made a valid signature: the primary key's fingerprint and user id."""

    fingerprint: str
    username: str
    timestamp: str


class GnuPG:
    """One GnuPG home: a keyring to sign with, or a keyring of trusted signers."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = Path(home) if home is not None else None
        if self.home is not None:
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self._gpg = gnupg.GPG(gnupghome=str(self.home) if self.home else None)
        except (OSError, ValueError) as exc:
            raise GpgError(f"cannot run gpg: {exc}") from None

    def fingerprints(self, secret: bool = False) -> list[str]:
        return [key["fingerprint"] for key in self._gpg.list_keys(secret=secret)]

    def user_id(self, fingerprint: str) -> str:
        for key in self._gpg.list_keys(keys=[fingerprint]):
            return key["uids"][0] if key["uids"] else fingerprint
        raise GpgError(f"no GnuPG key {fingerprint} in {self.home or 'the default home'}")

    def sign_detached(self, fingerprint: str, data: bytes, passphrase: str | None = None) -> str:
        """Sign ``data``; returns the base64 detached signature, verified before return."""
        if fingerprint not in self.fingerprints(secret=True):
            raise GpgError(f"no secret GnuPG key {fingerprint} in {self.home or 'GNUPGHOME'}")
        result = self._gpg.sign(
            data, keyid=fingerprint, detach=True, binary=True, passphrase=passphrase
        )
        if not result.data:
            raise GpgError(f"GnuPG could not sign with {fingerprint}: {result.status}")
        signature = base64.b64encode(result.data).decode("ascii")
        verified = self.verify_detached(data, signature)
        if verified.fingerprint != fingerprint.upper():
            raise GpgError(f"the GnuPG signature just made is by {verified.fingerprint}")
        return signature

    def verify_detached(self, data: bytes, signature: str) -> VerifiedSignature:
        """Verify a base64 detached signature over ``data`` against this keyring."""
        try:
            raw = base64.b64decode(signature.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise GpgError("the GnuPG signature is not valid base64") from None
        with tempfile.NamedTemporaryFile(suffix=".sig") as sig_file:
            sig_file.write(raw)
            sig_file.flush()
            result = self._gpg.verify_data(sig_file.name, data)
        if not result.valid:
            if result.key_id and result.status == "no public key":
                raise GpgError(f"signed by unknown GnuPG key {result.key_id}")
            raise GpgError(f"GnuPG signature does not verify ({result.status or 'bad data'})")
        primary = (result.pubkey_fingerprint or result.fingerprint or "").upper()
        return VerifiedSignature(primary, result.username or "", str(result.timestamp or ""))

    def import_public_key(self, armored: str | bytes) -> list[str]:
        """Import public keys; returns their fingerprints. Secret keys are refused."""
        text = armored.decode("utf-8", "replace") if isinstance(armored, bytes) else armored
        if "PRIVATE KEY BLOCK" in text:
            raise GpgError("this is a secret key: import only the public key")
        result = self._gpg.import_keys(text)
        fingerprints = [fpr for fpr in result.fingerprints if fpr]
        if not fingerprints:
            raise GpgError("no OpenPGP public key found in that file")
        return fingerprints

    def export_public_key(self, fingerprint: str) -> str:
        armored = self._gpg.export_keys(fingerprint)
        if not armored:
            raise GpgError(f"no GnuPG key {fingerprint} to export")
        return str(armored)
