"""Small builders of TUF metadata for tests (python-tuf objects, no wavesign logic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from securesystemslib.signer import Key
from tuf.api.metadata import Metadata, Role, Root, TargetFile, Targets


def expiry(days: int = 30) -> datetime:
    return (datetime.now(UTC) + timedelta(days=days)).replace(microsecond=0)


def make_root(
    root_keys: list[Key],
    targets_keys: list[Key],
    *,
    root_threshold: int = 1,
    targets_threshold: int = 2,
    version: int = 1,
) -> Root:
    root = Root(version=version, expires=expiry(365), consistent_snapshot=True)
    root.roles["root"] = Role([], root_threshold)
    root.roles["targets"] = Role([], targets_threshold)
    for key in root_keys:
        root.add_key(key, "root")
    for key in targets_keys:
        root.add_key(key, "targets")
    return root


def make_targets(names: list[str], version: int = 1) -> Metadata[Targets]:
    targets = Targets(version=version, expires=expiry())
    for name in names:
        targets.targets[name] = TargetFile(
            length=10, hashes={"sha256": "ab" * 32}, path=name, unrecognized_fields={}
        )
    return Metadata(targets)
