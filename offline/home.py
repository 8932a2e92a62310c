"""The appliance's home folder: where keys, journal, signed payloads and trust live.

Layout (everything 0700 folders and 0600 files, so another local user reads nothing)::

    HOME/config.json        settings: officer GnuPG key, unsigned-request policy, limits
    HOME/keys/              the keystore: one encrypted key file (or HSM reference) per key
    HOME/journal.jsonl      the hash-chained journal, one canonical JSON line per signing
    HOME/journal.head       index and hash of the last journal line (catches a cut tail)
    HOME/payloads/          every payload signed, by sha256: bases for delta requests
    HOME/operators.gnupg/   a GnuPG keyring holding only the trusted operators' public keys

The home is found from ``--home``, else ``WAVESIGN_OFFLINE_HOME``, else
``~/.wavesign-offline``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wavesign.shared.canonical import canonical_bytes
from wavesign.shared.errors import WavesignError
from wavesign.shared.fileio import atomic_write
from wavesign.shared.strictjson import FieldReader, JSONInputError, loads_strict

__all__ = [
    "DEFAULT_MAX_EXPIRY_DAYS",
    "HOME_ENV",
    "HomeConfig",
    "HomeError",
    "OfflineHome",
    "init_home",
    "open_home",
    "resolve_home_path",
]

HOME_ENV = "WAVESIGN_OFFLINE_HOME"
CONFIG_FORMAT = "wavesign-offline-home"
CONFIG_VERSION = 1
#: Policy default: no payload may stay valid longer than this many days after signing.
DEFAULT_MAX_EXPIRY_DAYS = 400
MAX_CONFIG_SIZE = 64 * 1024


class HomeError(WavesignError):
    """The appliance home is missing, damaged, or cannot be created."""


@dataclass(frozen=True)
class HomeConfig:
    """The settings in ``config.json``."""

    officer_gpg_key: str | None = None
    allow_unsigned_requests: bool = False
    max_expiry_days: int = DEFAULT_MAX_EXPIRY_DAYS

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CONFIG_FORMAT,
            "version": CONFIG_VERSION,
            "officer_gpg_key": self.officer_gpg_key,
            "allow_unsigned_requests": self.allow_unsigned_requests,
            "max_expiry_days": self.max_expiry_days,
        }

    @classmethod
    def from_dict(cls, data: Any, path: str = "config") -> HomeConfig:
        if not isinstance(data, dict):
            raise JSONInputError(f"{path}: expected an object")
        data = dict(data)
        allow = data.pop("allow_unsigned_requests", False)
        if not isinstance(allow, bool):
            raise JSONInputError(f"{path}.allow_unsigned_requests: expected true or false")
        reader = FieldReader(data, path)
        if reader.string("format") != CONFIG_FORMAT:
            raise JSONInputError(f"{path}.format: not a wavesign-offline home config")
        if reader.integer("version") != CONFIG_VERSION:
            raise JSONInputError(f"{path}.version: unknown config version")
        officer = reader.string("officer_gpg_key", optional=True)
        max_days = reader.integer("max_expiry_days", minimum=1)
        reader.done()
        return cls(officer, allow, max_days)


@dataclass(frozen=True)
class OfflineHome:
    """Paths inside one appliance home, and its configuration."""

    root: Path
    config: HomeConfig = field(default_factory=HomeConfig)

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def journal_path(self) -> Path:
        return self.root / "journal.jsonl"

    @property
    def journal_head_path(self) -> Path:
        return self.root / "journal.head"

    @property
    def payloads_dir(self) -> Path:
        return self.root / "payloads"

    @property
    def operators_gnupg(self) -> Path:
        return self.root / "operators.gnupg"


def resolve_home_path(flag: str | None) -> Path:
    """``--home``, else ``$WAVESIGN_OFFLINE_HOME``, else ``~/.wavesign-offline``."""
    if flag:
        return Path(flag)
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env)
    return Path.home() / ".wavesign-offline"


def _write_config(home: OfflineHome) -> None:
    atomic_write(home.config_path, canonical_bytes(home.config.to_dict()) + b"\n", mode=0o600)


def init_home(
    path: Path,
    *,
    officer_gpg_key: str | None = None,
    allow_unsigned_requests: bool = False,
    max_expiry_days: int = DEFAULT_MAX_EXPIRY_DAYS,
) -> OfflineHome:
    """Create a new home at ``path``; refuses a folder that already holds anything."""
    if path.is_symlink():
        raise HomeError(f"{path} is a symbolic link: give the real folder")
    if path.exists():
        if not path.is_dir():
            raise HomeError(f"{path} exists and is not a folder")
        if any(path.iterdir()):
            raise HomeError(f"{path} is not empty: refusing to initialise over an existing home")
    if officer_gpg_key is not None:
        officer_gpg_key = officer_gpg_key.replace(" ", "").upper()
        if not officer_gpg_key or any(c not in "0123456789ABCDEF" for c in officer_gpg_key):
            raise HomeError("--officer-gpg-key must be a hexadecimal GnuPG fingerprint")
    home = OfflineHome(
        path.resolve(),
        HomeConfig(officer_gpg_key, allow_unsigned_requests, max_expiry_days),
    )
    # Restrict the umask while creating so no folder exists, even briefly, wider than 0700.
    old_umask = os.umask(0o077)
    try:
        home.root.mkdir(parents=True, exist_ok=True)
        os.chmod(home.root, 0o700)
        for folder in (home.keys_dir, home.payloads_dir, home.operators_gnupg):
            folder.mkdir(mode=0o700)
        atomic_write(home.journal_path, b"", mode=0o600)
        # config.json last: its presence is what marks a complete home.
        _write_config(home)
    finally:
        os.umask(old_umask)
    return home


def open_home(path: Path) -> OfflineHome:
    """Open an existing home, checking that it is complete and private."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise HomeError(
            f"{path} is not a wavesign-offline home (no config.json): run `wavesign-offline init`"
        )
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise HomeError(f"{path} is readable by other users (mode {mode:o}): chmod 700 it")
    raw = config_path.read_bytes()
    data = loads_strict(raw, what=str(config_path), max_size=MAX_CONFIG_SIZE)
    config = HomeConfig.from_dict(data, "config.json")
    home = OfflineHome(path.resolve(), config)
    for folder in (home.keys_dir, home.payloads_dir, home.operators_gnupg):
        if not folder.is_dir():
            raise HomeError(f"home {path} is incomplete: {folder.name}/ is missing")
    return home
