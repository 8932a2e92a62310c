"""The GnuPG keys the broker trusts: operators' (requests) and officers' (responses).

The broker learns them from an admin (``wavesign evidence add-gpg-key``): the
officer's public key comes with the appliance's journal export
(``FILE.officer.asc``) or from the officer directly, the operator's from
``gpg --export``. Once a key of a role is known, the broker verifies every new
signature of that role against the registered keys of that role only, and the
evidence export hands them to auditors as ``keys/operators.asc`` and
``keys/officers.asc``.

Each verification imports the keys into a throwaway GnuPG home (keys are few and
small; imports happen once per signature checked, never on a hot path).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from wavesign.shared.errors import WavesignError
from wavesign.shared.gpg import GnuPG

__all__ = ["GPG_ROLES", "GpgTrustError", "fingerprints_of", "verify_by_role"]

#: ``operator`` keys sign requests; ``officer`` keys attest responses.
GPG_ROLES = ("operator", "officer")
MAX_ARMORED = 64 * 1024


class GpgTrustError(WavesignError):
    """A GnuPG key cannot be registered, or a signature does not verify with one."""


@contextmanager
def _scratch_home() -> Iterator[GnuPG]:
    with tempfile.TemporaryDirectory(prefix="wsgpg-") as folder:
        home = Path(folder) / "home"
        try:
            yield GnuPG(home)
        finally:
            if shutil.which("gpgconf"):
                subprocess.run(
                    ["gpgconf", "--homedir", str(home), "--kill", "all"],
                    capture_output=True,
                    check=False,
                )


def fingerprints_of(armored: str) -> list[str]:
    """The fingerprints of the public keys in ``armored`` (refuses secret keys)."""
    if not armored.strip() or len(armored) > MAX_ARMORED:
        raise GpgTrustError(
            f"expected one ASCII-armoured GnuPG public key (at most {MAX_ARMORED} bytes)"
        )
    if "-----BEGIN PGP PUBLIC KEY BLOCK-----" not in armored:
        raise GpgTrustError("not an ASCII-armoured GnuPG public key (gpg --armor --export FPR)")
    with _scratch_home() as home:
        try:
            return sorted({fpr.upper() for fpr in home.import_public_key(armored)})
        except WavesignError as exc:
            raise GpgTrustError(str(exc)) from None


def verify_by_role(role: str, armored_keys: Sequence[str], data: bytes, signature: str) -> str:
    """The fingerprint of the registered ``role`` key that signed ``data``; raises if none."""
    with _scratch_home() as home:
        trusted: set[str] = set()
        for armored in armored_keys:
            trusted.update(fpr.upper() for fpr in home.import_public_key(armored))
        try:
            verified = home.verify_detached(data, signature)
        except WavesignError as exc:
            raise GpgTrustError(
                f"the {role} signature does not verify with a registered {role} key: {exc}"
            ) from None
        if verified.fingerprint not in trusted:
            raise GpgTrustError(
                f"the {role} signature is by {verified.fingerprint}, not a registered {role} key"
            )
        return verified.fingerprint
