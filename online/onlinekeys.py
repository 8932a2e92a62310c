"""The broker's online keys: targets, snapshot and timestamp, as 0600 files in the data folder.

The online targets key is one of the two keys production targets need; snapshot and
timestamp are signed online only. Each key is a ``wavesign.shared.keyfile`` file
``DIR/keys/<role>.key``, encrypted when ``WAVESIGN_ONLINE_KEY_PASSPHRASE`` is set (the
server then needs the same variable to start).
"""

from __future__ import annotations

import os
from pathlib import Path

from securesystemslib.signer import CryptoSigner, SSlibKey
from wavesign.shared.errors import WavesignError
from wavesign.shared.keyfile import load_signer, read_public_key, save_signer
from wavesign.shared.keys import generate_signer

__all__ = ["ONLINE_ROLES", "OnlineKeys", "create_online_keys"]

ONLINE_ROLES = ("targets", "snapshot", "timestamp")
PASSPHRASE_ENV = "WAVESIGN_ONLINE_KEY_PASSPHRASE"


class OnlineKeyError(WavesignError):
    """An online key is missing or cannot be opened."""


def _keys_dir(data_dir: Path) -> Path:
    return data_dir / "keys"


def create_online_keys(
    data_dir: str | os.PathLike[str],
    *,
    key_type: str = "ed25519",
    passphrase: str | None = None,
    scrypt_n: int = 2**15,
) -> dict[str, SSlibKey]:
    """Generate the three online keys; refuses to overwrite existing ones."""
    folder = _keys_dir(Path(data_dir))
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for role in ONLINE_ROLES:
        if (folder / f"{role}.key").exists():
            raise OnlineKeyError(f"online {role} key {folder / f'{role}.key'} already exists")
    public: dict[str, SSlibKey] = {}
    for role in ONLINE_ROLES:
        signer = generate_signer(key_type)
        save_signer(folder / f"{role}.key", signer, passphrase, scrypt_n=scrypt_n)
        public[role] = signer.public_key
    return public


class OnlineKeys:
    """Opens the online keys of a data folder on demand (and keeps them open)."""

    def __init__(self, data_dir: str | os.PathLike[str], passphrase: str | None = None) -> None:
        self.folder = _keys_dir(Path(data_dir))
        self._passphrase = passphrase if passphrase is not None else os.environ.get(PASSPHRASE_ENV)
        self._signers: dict[str, CryptoSigner] = {}

    def path(self, role: str) -> Path:
        if role not in ONLINE_ROLES:
            raise OnlineKeyError(f"{role!r} is not an online role")
        return self.folder / f"{role}.key"

    def public_key(self, role: str) -> SSlibKey:
        path = self.path(role)
        if not path.exists():
            raise OnlineKeyError(f"the online {role} key {path} is missing")
        return read_public_key(path)

    def public_keys(self) -> dict[str, SSlibKey]:
        return {role: self.public_key(role) for role in ONLINE_ROLES}

    def signer(self, role: str) -> CryptoSigner:
        if role not in self._signers:
            path = self.path(role)
            if not path.exists():
                raise OnlineKeyError(f"the online {role} key {path} is missing")
            self._signers[role] = load_signer(path, self._passphrase)
        return self._signers[role]
