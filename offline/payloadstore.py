"""Every payload the appliance signed, kept by sha256: the bases of delta requests.

A wave request usually carries only its change against the production targets, which
the appliance signed earlier (as a wave that was later completed). The store gives the
full base back, after checking that its bytes still hash to the name they are kept
under: a tampered base can never turn into a signature over something else.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from wavesign.shared.canonical import canonical_bytes, digest_bytes
from wavesign.shared.errors import WavesignError
from wavesign.shared.fileio import atomic_write
from wavesign.shared.strictjson import HEX64

__all__ = ["PayloadStore", "PayloadStoreError"]

MAX_PAYLOAD = 64 * 1024 * 1024


class PayloadStoreError(WavesignError):
    """A stored payload is damaged."""


class PayloadStore:
    """``HOME/payloads/<sha256>.json``: canonical bytes of signed ``signed`` objects."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_for(self, sha256: str) -> Path:
        if not HEX64.fullmatch(sha256):
            raise PayloadStoreError(f"{sha256[:20]!r} is not a sha256")
        return self.folder / f"{sha256}.json"

    def lookup(self, sha256: str) -> dict[str, Any] | None:
        """The payload with that digest, or None if this appliance never signed it."""
        path = self.path_for(sha256)
        if not path.is_file():
            return None
        data = path.read_bytes()
        if digest_bytes(data) != sha256:
            raise PayloadStoreError(f"stored payload {sha256[:16]} has been altered")
        # The digest check above already proves these are the bytes this appliance wrote.
        # strict=False: canonical JSON keeps control characters (PEM newlines) unescaped.
        try:
            value = json.loads(data.decode("utf-8"), strict=False)
        except ValueError:
            raise PayloadStoreError(f"stored payload {sha256[:16]} is not JSON") from None
        if not isinstance(value, dict):
            raise PayloadStoreError(f"stored payload {sha256[:16]} is not an object")
        return value

    def add(self, signed: dict[str, Any]) -> tuple[str, bool]:
        """Store ``signed``; returns its digest and whether the file is new."""
        data = canonical_bytes(signed)
        sha256 = digest_bytes(data)
        path = self.path_for(sha256)
        if path.exists():
            return sha256, False
        atomic_write(path, data, mode=0o600)
        return sha256, True

    def remove(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path_for(sha256).unlink()
