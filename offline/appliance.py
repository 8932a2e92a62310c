"""One opened appliance: its home, keystore, journal, payload store and trusted operators.

This is the library face of ``wavesign-offline``: the CLI only parses flags, asks for
secrets and prints; everything it does goes through an :class:`Appliance`.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wavesign.shared.gpg import GnuPG, GpgError, VerifiedSignature

from .home import OfflineHome, open_home
from .journal import Journal
from .keystore import Keystore
from .payloadstore import PayloadStore

__all__ = ["Appliance", "Operator"]


@dataclass(frozen=True)
class Operator:
    """A trusted operator: a GnuPG public key in the home's operators keyring."""

    fingerprint: str
    user_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "user_id": self.user_id}


class Appliance:
    """Everything one home holds, opened."""

    def __init__(self, home: OfflineHome) -> None:
        self.home = home
        self.keystore = Keystore(home.keys_dir)
        self.journal = Journal(home.journal_path, home.journal_head_path)
        self.payloads = PayloadStore(home.payloads_dir)

    @classmethod
    def open(cls, path: Path) -> Appliance:
        return cls(open_home(path))

    # -- trusted operators ---------------------------------------------------------------

    @contextlib.contextmanager
    def _operators_copy(self) -> Iterator[GnuPG]:
        """A throwaway copy of the operators keyring.

        gpg writes trust databases, lock files and random seeds into its home even when
        it only verifies; working on a copy keeps ``review`` strictly read-only.
        """
        with tempfile.TemporaryDirectory(prefix="wavesign-operators-") as tmp:
            copy = Path(tmp) / "gnupg"
            shutil.copytree(
                self.home.operators_gnupg,
                copy,
                ignore=shutil.ignore_patterns("S.*", "*.lock", ".#*"),
            )
            copy.chmod(0o700)
            yield GnuPG(copy)

    def add_operators(self, armored: bytes) -> list[Operator]:
        gpg = GnuPG(self.home.operators_gnupg)
        fingerprints = gpg.import_public_key(armored)
        return [Operator(fpr, gpg.user_id(fpr)) for fpr in fingerprints]

    def operators(self) -> list[Operator]:
        with self._operators_copy() as gpg:
            return [Operator(fpr, gpg.user_id(fpr)) for fpr in gpg.fingerprints()]

    def verify_operator_signature(self, data: bytes, signature: str) -> VerifiedSignature:
        """Verify against the trusted operators only; raises :class:`GpgError`."""
        with self._operators_copy() as gpg:
            if not gpg.fingerprints():
                raise GpgError("no trusted operator keys: add one with `operators add`")
            return gpg.verify_detached(data, signature)

    # -- what the appliance has signed ----------------------------------------------------

    def lookup_base(self, sha256: str) -> dict[str, Any] | None:
        """A payload this appliance signed before, by digest (delta bases)."""
        return self.payloads.lookup(sha256)

    def held_keyids(self) -> dict[str, frozenset[str]]:
        result: dict[str, set[str]] = {"root": set(), "targets": set()}
        for stored in self.keystore.all_keys():
            if not stored.retired:
                result[stored.role].add(stored.keyid)
        return {role: frozenset(ids) for role, ids in result.items()}

    def signed_root(self, version: int) -> dict[str, Any] | None:
        """The root ``signed`` object of ``version`` this appliance signed, if any."""
        for entry in reversed(self.journal.entries()):
            for record in entry.payloads:
                if record.role == "root" and record.version == version:
                    return self.payloads.lookup(record.sha256)
        return None

    def snapshot(self) -> dict[str, bytes]:
        """Every file under the home, by relative path (for tests and sanity checks)."""
        found: dict[str, bytes] = {}
        for path in sorted(self.home.root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                found[str(path.relative_to(self.home.root))] = path.read_bytes()
        return found
