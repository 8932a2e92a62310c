"""Real GnuPG keys for tests: a throwaway home and a fresh ed25519 key in it."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GpgIdentity:
    home: Path
    fingerprint: str
    public_key: str  # ASCII-armoured public key


def make_gpg_identity(home: Path, name: str) -> GpgIdentity:
    """Create ``home`` and an ed25519 signing key without passphrase for ``name``."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = dict(os.environ, GNUPGHOME=str(home))
    uid = f"{name} <{name.lower().replace(' ', '.')}@example.test>"
    subprocess.run(
        ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
         "--quick-gen-key", uid, "ed25519", "sign", "1y"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    listing = subprocess.run(
        ["gpg", "--batch", "--with-colons", "--list-secret-keys"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")
    )
    public = subprocess.run(
        ["gpg", "--batch", "--armor", "--export", fingerprint],
        env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return GpgIdentity(home, fingerprint, public)
