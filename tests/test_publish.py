"""Publishing views: snapshot and timestamp over exact targets bytes (pure, no server).

The last tests run python-tuf's real ``ngclient.Updater`` over the published bytes
through an in-memory fetcher, so what devices accept is checked without HTTP here
(``test_device_api`` does the same over a real server).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer
from tuf.ngclient import FetcherInterface, Updater
from wavesign.online.publish import (
    PublishedView,
    PublishError,
    needs_refresh,
    publish_view,
    publish_views,
    renew_timestamp,
    root_files,
)
from wavesign.shared.keys import generate_signer
from wavesign.shared.signing import sign_payload, verify_threshold

from tests.tuf_builders import expiry, make_root
from tests.tuf_repo_server import Release

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


@dataclass
class RepoKeys:
    """The keys of one repository: root, two targets keys (threshold 2), snapshot, timestamp."""

    root: CryptoSigner
    targets: list[CryptoSigner]
    snapshot: CryptoSigner
    timestamp: CryptoSigner
    root_bytes: bytes

    @classmethod
    def create(cls) -> RepoKeys:
        root_signer = generate_signer("ed25519")
        targets = [generate_signer("ed25519"), generate_signer("ed25519")]
        snapshot, timestamp = generate_signer("ed25519"), generate_signer("ed25519")
        root = make_root([root_signer.public_key], [s.public_key for s in targets])
        root.add_key(snapshot.public_key, "snapshot")
        root.add_key(timestamp.public_key, "timestamp")
        metadata = Metadata(root)
        signature = sign_payload(root_signer, root)
        metadata.signatures[signature.keyid] = signature
        return cls(root_signer, targets, snapshot, timestamp, metadata.to_bytes())

    @property
    def root_signed(self) -> Root:
        return Metadata[Root].from_bytes(self.root_bytes).signed

    def targets_bytes(
        self,
        version: int,
        releases: Sequence[Release],
        *,
        signers: Sequence[CryptoSigner] | None = None,
        compact: bool = True,
    ) -> bytes:
        """Targets signed by both targets keys (or ``signers``), as a file would hold them."""
        targets = Targets(version=version, expires=expiry(365))
        for release in releases:
            targets.targets[release.name] = release.target_file()
        metadata = Metadata(targets)
        for signer in self.targets if signers is None else signers:
            signature = sign_payload(signer, targets)
            metadata.signatures[signature.keyid] = signature
        return metadata.to_bytes(JSONSerializer(compact=compact))

    def publish(self, targets: bytes, version: int, **kwargs: Any) -> PublishedView:
        return publish_view(
            targets,
            roots=root_files([self.root_bytes]),
            version=version,
            snapshot_signer=self.snapshot,
            timestamp_signer=self.timestamp,
            **kwargs,
        )


OLD = Release("lmp-12", 12, ("rpi4",))
NEW = Release("lmp-42", 42, ("rpi4",))


@pytest.fixture(scope="module")
def keys() -> RepoKeys:
    return RepoKeys.create()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_snapshot_lists_the_exact_targets_bytes(keys: RepoKeys) -> None:
    # Indented JSON: a re-serialization (compact) would give other bytes and hashes.
    targets = keys.targets_bytes(3, [OLD, NEW], compact=False)
    assert b"\n  " in targets
    view = keys.publish(targets, 9, now=NOW)

    assert view.targets.body == targets
    assert view.targets.name == "3.targets.json"
    snapshot = Metadata[Snapshot].from_bytes(view.snapshot.body)
    assert view.snapshot.name == "9.snapshot.json"
    assert snapshot.signed.version == 9
    assert set(snapshot.signed.meta) == {"targets.json"}
    meta = snapshot.signed.meta["targets.json"]
    assert meta.version == 3
    assert meta.length == len(targets)
    assert meta.hashes == {"sha256": _sha256(targets)}
    # Expires with the targets (365 days from when the test signed them).
    assert snapshot.signed.expires == Metadata[Targets].from_bytes(targets).signed.expires


def test_timestamp_lists_the_snapshot_bytes_and_expires_in_a_day(keys: RepoKeys) -> None:
    view = keys.publish(keys.targets_bytes(1, [OLD]), 4, now=NOW)
    timestamp = Metadata[Timestamp].from_bytes(view.timestamp.body).signed
    assert timestamp.version == 4
    assert timestamp.expires == datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
    assert view.timestamp_expires == datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)
    meta = timestamp.snapshot_meta
    assert meta.version == 4
    assert meta.length == len(view.snapshot.body)
    assert meta.hashes == {"sha256": _sha256(view.snapshot.body)}


def test_timestamp_lifetime_is_configurable(keys: RepoKeys) -> None:
    view = keys.publish(
        keys.targets_bytes(1, [OLD]), 4, now=NOW, timestamp_lifetime=timedelta(hours=2)
    )
    timestamp = Metadata[Timestamp].from_bytes(view.timestamp.body).signed
    assert timestamp.expires == datetime(2026, 12, 3, 14, 0, 0, tzinfo=UTC)


def test_files_names_and_strong_etags(keys: RepoKeys) -> None:
    view = keys.publish(keys.targets_bytes(2, [OLD]), 5, now=NOW)
    files = view.files
    assert set(files) == {"1.root.json", "2.targets.json", "5.snapshot.json", "timestamp.json"}
    assert files["1.root.json"].body == keys.root_bytes
    for file in files.values():
        assert file.etag == '"' + _sha256(file.body)[:32] + '"'


def test_every_file_parses_and_signatures_verify_against_the_root(keys: RepoKeys) -> None:
    view = keys.publish(keys.targets_bytes(2, [OLD, NEW]), 5, now=NOW)
    root = keys.root_signed
    for role, file in (
        ("root", view.roots[0]),
        ("targets", view.targets),
        ("snapshot", view.snapshot),
        ("timestamp", view.timestamp),
    ):
        metadata = Metadata.from_bytes(file.body)
        assert metadata.signed.type == role
        result = verify_threshold(root, role, metadata)
        assert result.ok
    assert verify_threshold(root, "targets", Metadata.from_bytes(view.targets.body)).distinct == 2


def test_renewed_timestamp_has_the_next_version_and_the_same_snapshot(keys: RepoKeys) -> None:
    view = keys.publish(keys.targets_bytes(1, [OLD]), 4, now=NOW)
    later = NOW + timedelta(hours=20)
    renewed = renew_timestamp(view, version=7, timestamp_signer=keys.timestamp, now=later)
    assert renewed.snapshot.body == view.snapshot.body
    assert renewed.targets.body == view.targets.body
    timestamp = Metadata[Timestamp].from_bytes(renewed.timestamp.body).signed
    assert timestamp.version == 7
    assert timestamp.snapshot_meta.version == 4
    assert timestamp.snapshot_meta.hashes == {"sha256": _sha256(view.snapshot.body)}
    assert timestamp.expires == datetime(2026, 12, 5, 8, 0, 0, tzinfo=UTC)
    assert renewed.timestamp.etag != view.timestamp.etag
    with pytest.raises(PublishError, match="above 7"):
        renew_timestamp(renewed, version=7, timestamp_signer=keys.timestamp, now=later)
    with pytest.raises(PublishError, match="above 7"):
        renew_timestamp(renewed, version=3, timestamp_signer=keys.timestamp, now=later)


def test_needs_refresh_before_expiry(keys: RepoKeys) -> None:
    view = keys.publish(keys.targets_bytes(1, [OLD]), 4, now=NOW)
    margin = timedelta(hours=6)
    assert not needs_refresh(view, NOW, margin)
    assert not needs_refresh(view, NOW + timedelta(hours=17, minutes=59), margin)
    assert needs_refresh(view, NOW + timedelta(hours=18), margin)
    assert needs_refresh(view, NOW + timedelta(days=2), margin)


def test_publish_views_gives_every_view_the_same_fresh_version(keys: RepoKeys) -> None:
    roots = root_files([keys.root_bytes])
    views = publish_views(
        {"production": keys.targets_bytes(1, [OLD]), "wave": keys.targets_bytes(2, [OLD, NEW])},
        roots=roots,
        version=11,
        snapshot_signer=keys.snapshot,
        timestamp_signer=keys.timestamp,
        now=NOW,
    )
    assert {
        k: (v.targets.version, v.snapshot.version, v.timestamp.version) for k, v in views.items()
    } == {
        "production": (1, 11, 11),
        "wave": (2, 11, 11),
    }
    # The roots are shared, not copied per view.
    assert views["production"].roots[0] is views["wave"].roots[0]


def test_refuses_targets_below_threshold(keys: RepoKeys) -> None:
    one_key = keys.targets_bytes(1, [OLD], signers=keys.targets[:1])
    with pytest.raises(PublishError, match="threshold"):
        keys.publish(one_key, 4, now=NOW)


def test_refuses_online_keys_the_root_does_not_name(keys: RepoKeys) -> None:
    stranger = generate_signer("ed25519")
    targets = keys.targets_bytes(1, [OLD])
    roots = root_files([keys.root_bytes])
    with pytest.raises(PublishError, match="online snapshot key is not the root's"):
        publish_view(
            targets,
            roots=roots,
            version=4,
            snapshot_signer=stranger,
            timestamp_signer=keys.timestamp,
        )
    with pytest.raises(PublishError, match="online timestamp key is not the root's"):
        publish_view(
            targets,
            roots=roots,
            version=4,
            snapshot_signer=keys.snapshot,
            timestamp_signer=stranger,
        )


def test_refuses_bad_inputs(keys: RepoKeys) -> None:
    with pytest.raises(PublishError, match="not valid TUF metadata"):
        keys.publish(b'{"signed": {}}', 4)
    with pytest.raises(PublishError, match="holds root metadata"):
        keys.publish(keys.root_bytes, 4)
    with pytest.raises(PublishError, match="at least 1"):
        keys.publish(keys.targets_bytes(1, [OLD]), 0)
    with pytest.raises(PublishError, match="no root"):
        root_files([])
    with pytest.raises(PublishError, match="without gaps"):
        root_files([_root_version(keys, 2)])
    with pytest.raises(PublishError, match="given twice"):
        root_files([keys.root_bytes, keys.root_bytes])


def _root_version(keys: RepoKeys, version: int) -> bytes:
    root = keys.root_signed
    root.version = version
    metadata = Metadata(root)
    signature = sign_payload(keys.root, root)
    metadata.signatures[signature.keyid] = signature
    return metadata.to_bytes()


# --- ngclient over the published bytes ------------------------------------------------------


class ViewFetcher(FetcherInterface):
    """Serves the files of whichever view ``current`` is: an in-memory repository."""

    def __init__(self, current: PublishedView) -> None:
        self.current = current

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = url.rsplit("/", 1)[-1]
        file = self.current.files.get(name)
        if file is None:
            raise tuf_errors.DownloadHTTPError(f"{name} not found", 404)
        return iter([file.body])


def _refresh(metadata_dir: Path, fetcher: ViewFetcher, root: bytes | None) -> Mapping[str, Any]:
    updater = Updater(str(metadata_dir), "http://repo/", fetcher=fetcher, bootstrap=root)
    updater.refresh()
    trusted = updater._trusted_set  # read-only look at what was verified
    return {
        "targets": trusted.targets.version,
        "snapshot": trusted.snapshot.version,
        "timestamp": trusted.timestamp.version,
        "names": sorted(trusted.targets.targets),
    }


def test_ngclient_follows_views_published_with_the_global_counter(
    keys: RepoKeys, tmp_path: Path
) -> None:
    production = keys.publish(keys.targets_bytes(1, [OLD]), 1)
    fetcher = ViewFetcher(production)
    seen = _refresh(tmp_path, fetcher, keys.root_bytes)
    assert seen == {"targets": 1, "snapshot": 1, "timestamp": 1, "names": ["lmp-12"]}

    # Production's timestamp is renewed (counter 2), then a wave is published with
    # every view at counter 3; the device moves to the wave view.
    fetcher.current = renew_timestamp(production, version=2, timestamp_signer=keys.timestamp)
    assert _refresh(tmp_path, fetcher, None)["timestamp"] == 2
    views = publish_views(
        {"production": keys.targets_bytes(1, [OLD]), "wave": keys.targets_bytes(2, [OLD, NEW])},
        roots=production.roots,
        version=3,
        snapshot_signer=keys.snapshot,
        timestamp_signer=keys.timestamp,
    )
    fetcher.current = views["wave"]
    seen = _refresh(tmp_path, fetcher, None)
    assert seen == {"targets": 2, "snapshot": 3, "timestamp": 3, "names": ["lmp-12", "lmp-42"]}


def test_ngclient_refuses_a_view_with_a_lower_counter(keys: RepoKeys, tmp_path: Path) -> None:
    # Why the counter is global: the wave view published before production was
    # renewed has lower snapshot/timestamp versions than what the device trusts.
    wave = keys.publish(keys.targets_bytes(2, [OLD, NEW]), 5)
    production = keys.publish(keys.targets_bytes(1, [OLD]), 6)
    fetcher = ViewFetcher(production)
    _refresh(tmp_path, fetcher, keys.root_bytes)
    fetcher.current = wave
    with pytest.raises(tuf_errors.BadVersionNumberError):
        _refresh(tmp_path, fetcher, None)
