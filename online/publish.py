"""Publishing a device view: ``V.snapshot.json`` and ``timestamp.json`` over fixed targets bytes.

Pure: no database, no HTTP. The broker hands in, per view, the targets metadata
**bytes** exactly as imported or promoted (they carry the online and offline
signatures, and a re-serialization might not be byte-identical), the published roots,
a version from its global counter and the online snapshot and timestamp signers. Out
comes a :class:`PublishedView`: the exact bytes and strong ETags of every file a device
of that view fetches, computed once and served many times.

The version invariant (``design/architecture.md``, "TUF views")
------------------------------------------------------------------
TUF clients refuse a timestamp or snapshot whose version is lower than the one they
trust, and silently keep their timestamp when a new one has the *same* version. Views
differ per device, and a device moves between views (rollout, cancel, completion), so:

1. Snapshot and timestamp versions come from **one global counter** of the broker; every
   ``version`` passed here is above every version passed before, for any view.
2. :func:`publish_view` gives the snapshot and the timestamp that fresh value;
   :func:`renew_timestamp` gives a new timestamp the next value and keeps the snapshot
   (same bytes, same version).
3. A device is only ever moved to a view published (by :func:`publish_view`) *after*
   the last version it could have seen was handed out. Then the new view's snapshot and
   timestamp versions are above everything the device trusts. The simplest way to keep
   this, and what :func:`publish_views` does, is to republish every view with one fresh
   counter value whenever any device's view changes.

``DeviceDirectory.replace`` in ``device_api`` checks 3 for every device whose view
changes, and refuses the whole swap if it would show some device a lower version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer
from wavesign.shared.errors import ThresholdError, WavesignError
from wavesign.shared.signing import sign_payload, verify_threshold

__all__ = [
    "DEFAULT_TIMESTAMP_LIFETIME",
    "MetadataFile",
    "PublishError",
    "PublishedView",
    "etag_for",
    "needs_refresh",
    "publish_view",
    "publish_views",
    "renew_timestamp",
    "root_files",
]

DEFAULT_TIMESTAMP_LIFETIME = timedelta(days=1)
TIMESTAMP_NAME = "timestamp.json"
_SERIALIZER = JSONSerializer(compact=True)

K = TypeVar("K", bound=Hashable)


class PublishError(WavesignError):
    """A view cannot be published: bad targets or roots, or a wrong online key."""


def etag_for(body: bytes) -> str:
    """A strong ETag: the quoted first 32 hex digits of the body's sha256."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


@dataclass(frozen=True)
class MetadataFile:
    """One file as served: its name in the repository, exact bytes, version and ETag."""

    name: str
    body: bytes
    version: int
    etag: str
    sha256: str

    @classmethod
    def of(cls, name: str, body: bytes, version: int) -> MetadataFile:
        digest = hashlib.sha256(body).hexdigest()
        return cls(name=name, body=body, version=version, etag=etag_for(body), sha256=digest)


@dataclass(frozen=True)
class PublishedView:
    """Everything a device of one view fetches, as exact bytes with their ETags.

    ``roots`` are the same objects in every view of a publication (all ``N.root.json``).
    """

    targets: MetadataFile
    snapshot: MetadataFile
    timestamp: MetadataFile
    roots: tuple[MetadataFile, ...]
    timestamp_expires: datetime
    snapshot_expires: datetime

    @property
    def files(self) -> dict[str, MetadataFile]:
        """Repository file name -> file, as devices ask for them."""
        files = {root.name: root for root in self.roots}
        files[self.targets.name] = self.targets
        files[self.snapshot.name] = self.snapshot
        files[TIMESTAMP_NAME] = self.timestamp
        return files

    def describe(self) -> str:
        return (
            f"targets v{self.targets.version}, snapshot v{self.snapshot.version}, "
            f"timestamp v{self.timestamp.version}"
        )


def _parse(body: bytes, what: str) -> Metadata[Any]:
    try:
        return Metadata.from_bytes(body)
    except (DeserializationError, ValueError, KeyError, TypeError) as exc:
        raise PublishError(f"{what} is not valid TUF metadata: {exc}") from None


def root_files(roots: Iterable[bytes]) -> tuple[MetadataFile, ...]:
    """The ``N.root.json`` files of the published roots (versions 1..N, any order given)."""
    files: dict[int, MetadataFile] = {}
    for body in roots:
        metadata = _parse(body, "a root")
        if not isinstance(metadata.signed, Root):
            raise PublishError(f"a root file holds {metadata.signed.type} metadata")
        version = metadata.signed.version
        if version in files:
            raise PublishError(f"root version {version} is given twice")
        files[version] = MetadataFile.of(f"{version}.root.json", body, version)
    if not files:
        raise PublishError("no root to publish")
    expected = list(range(1, len(files) + 1))
    if sorted(files) != expected:
        raise PublishError(
            f"root versions must be 1..{len(files)} without gaps, got {sorted(files)}"
        )
    return tuple(files[v] for v in expected)


def _newest_root(roots: Sequence[MetadataFile]) -> Root:
    if not roots:
        raise PublishError("no root to publish")
    signed = Metadata[Root].from_bytes(roots[-1].body).signed
    return signed


def _sign(role: Snapshot | Timestamp, signer: Signer, root: Root) -> bytes:
    metadata: Metadata[Any] = Metadata(role)
    signature = sign_payload(signer, role)
    metadata.signatures[signature.keyid] = signature
    try:
        # sign_payload checked the signature against the signer's own key; this checks
        # that the key is the one the root names, or every device would refuse the file.
        verify_threshold(root, role.type, metadata)
    except ThresholdError as exc:
        raise PublishError(f"the online {role.type} key is not the root's: {exc}") from None
    return metadata.to_bytes(_SERIALIZER)


def _timestamp(
    snapshot: MetadataFile, version: int, signer: Signer, root: Root, expires: datetime
) -> MetadataFile:
    meta = MetaFile(
        version=snapshot.version,
        length=len(snapshot.body),
        hashes={"sha256": snapshot.sha256},
    )
    timestamp = Timestamp(version=version, expires=expires, snapshot_meta=meta)
    return MetadataFile.of(TIMESTAMP_NAME, _sign(timestamp, signer, root), version)


def _utc(now: datetime | None) -> datetime:
    moment = datetime.now(UTC) if now is None else now.astimezone(UTC)
    return moment.replace(microsecond=0)


def publish_view(
    targets: bytes,
    *,
    roots: Sequence[MetadataFile],
    version: int,
    snapshot_signer: Signer,
    timestamp_signer: Signer,
    now: datetime | None = None,
    timestamp_lifetime: timedelta = DEFAULT_TIMESTAMP_LIFETIME,
    snapshot_expires: datetime | None = None,
) -> PublishedView:
    """Sign a snapshot and a timestamp at ``version`` over ``targets`` (kept byte for byte).

    ``version`` is a fresh value of the broker's global counter (module docstring).
    The snapshot expires with the targets unless ``snapshot_expires`` is given: it
    lists nothing else, and expired targets are refused by devices anyway. The targets
    must meet their threshold under the newest root: a view devices would refuse is
    never published.
    """
    if version < 1:
        raise PublishError(f"snapshot/timestamp version must be at least 1, got {version}")
    root = _newest_root(roots)
    metadata = _parse(targets, "the targets")
    if not isinstance(metadata.signed, Targets):
        raise PublishError(f"the targets file holds {metadata.signed.type} metadata")
    try:
        verify_threshold(root, "targets", metadata)
    except ThresholdError as exc:
        raise PublishError(
            f"targets version {metadata.signed.version} does not meet its threshold: {exc}"
        ) from None
    targets_file = MetadataFile.of(
        f"{metadata.signed.version}.targets.json", targets, metadata.signed.version
    )

    moment = _utc(now)
    expires = snapshot_expires or metadata.signed.expires
    snapshot = Snapshot(version=version, expires=expires)
    snapshot.meta["targets.json"] = MetaFile(
        version=targets_file.version,
        length=len(targets),
        hashes={"sha256": targets_file.sha256},
    )
    snapshot_file = MetadataFile.of(
        f"{version}.snapshot.json", _sign(snapshot, snapshot_signer, root), version
    )
    timestamp_expires = moment + timestamp_lifetime
    return PublishedView(
        targets=targets_file,
        snapshot=snapshot_file,
        timestamp=_timestamp(snapshot_file, version, timestamp_signer, root, timestamp_expires),
        roots=tuple(roots),
        timestamp_expires=timestamp_expires,
        snapshot_expires=expires,
    )


def publish_views(
    targets_by_view: Mapping[K, bytes],
    *,
    roots: Sequence[MetadataFile],
    version: int,
    snapshot_signer: Signer,
    timestamp_signer: Signer,
    now: datetime | None = None,
    timestamp_lifetime: timedelta = DEFAULT_TIMESTAMP_LIFETIME,
) -> dict[K, PublishedView]:
    """Publish every view with one fresh counter value (invariant 3 of the module doc).

    All views then share the snapshot and timestamp version ``version``: a device moved
    from any earlier view to any of these sees both versions go up.
    """
    moment = _utc(now)
    return {
        key: publish_view(
            targets,
            roots=roots,
            version=version,
            snapshot_signer=snapshot_signer,
            timestamp_signer=timestamp_signer,
            now=moment,
            timestamp_lifetime=timestamp_lifetime,
        )
        for key, targets in targets_by_view.items()
    }


def renew_timestamp(
    view: PublishedView,
    *,
    version: int,
    timestamp_signer: Signer,
    now: datetime | None = None,
    timestamp_lifetime: timedelta = DEFAULT_TIMESTAMP_LIFETIME,
) -> PublishedView:
    """A new timestamp at ``version`` (a fresh counter value) for the same snapshot bytes."""
    if version <= view.timestamp.version:
        raise PublishError(
            f"a renewed timestamp needs a version above {view.timestamp.version}, got {version}"
        )
    root = _newest_root(view.roots)
    expires = _utc(now) + timestamp_lifetime
    timestamp = _timestamp(view.snapshot, version, timestamp_signer, root, expires)
    return PublishedView(
        targets=view.targets,
        snapshot=view.snapshot,
        timestamp=timestamp,
        roots=view.roots,
        timestamp_expires=expires,
        snapshot_expires=view.snapshot_expires,
    )


def needs_refresh(view: PublishedView, now: datetime, margin: timedelta) -> bool:
    """Whether the timestamp expires within ``margin`` of ``now`` (re-sign it then)."""
    return view.timestamp_expires - margin <= now
