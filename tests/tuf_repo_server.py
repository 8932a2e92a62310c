"""A real TUF repository on a real HTTP server, for device-agent tests.

``TufRepo`` builds a consistent-snapshot repository with python-tuf's Metadata API:
root (targets threshold 2, two targets keys), targets, snapshot and timestamp, every
signature made with ``wavesign.shared.signing.sign_payload``. ``serve(repo, token)``
serves it from a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 at ``/device/v1/repo/``,
requires ``Authorization: Bearer <token>`` (401 otherwise), answers ``If-None-Match``
with 304 when the ETag matches, and records the JSON that
devices POST to ``/device/v1/events``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from wavesign.shared.keys import generate_signer
from wavesign.shared.signing import sign_payload

from tests.tuf_builders import expiry, make_root

REPO_PREFIX = "/device/v1/repo/"
EVENTS_PATH = "/device/v1/events"


@dataclass(frozen=True)
class Release:
    """One OSTree target as fioctl writes it (custom.version is a string there)."""

    name: str
    version: int
    hardware_ids: tuple[str, ...]
    tags: tuple[str, ...] = ("production",)
    target_format: str = "OSTREE"

    def target_file(self) -> TargetFile:
        commit = hashlib.sha256(self.name.encode()).hexdigest()
        custom = {
            "name": self.name.rsplit("-", 1)[0],
            "version": str(self.version),
            "hardwareIds": list(self.hardware_ids),
            "tags": list(self.tags),
            "targetFormat": self.target_format,
        }
        return TargetFile(
            length=0,
            hashes={"sha256": commit},
            path=self.name,
            unrecognized_fields={"custom": custom},
        )


def _sign(signed: Root | Targets | Snapshot | Timestamp, signers: Sequence[CryptoSigner]) -> bytes:
    # Metadata's type variable is constrained, so a union of roles needs a cast.
    metadata: Metadata[Any] = Metadata(cast(Any, signed))
    for signer in signers:
        signature = sign_payload(signer, signed)
        metadata.signatures[signature.keyid] = signature
    return metadata.to_bytes()


@dataclass
class TufRepo:
    """The files of one repository view, re-signed as the test changes it."""

    root_signer: CryptoSigner
    targets_signers: list[CryptoSigner]
    snapshot_signer: CryptoSigner
    timestamp_signer: CryptoSigner
    files: dict[str, bytes] = field(default_factory=dict)
    # Snapshot and timestamp versions come from one counter that only goes up.
    counter: int = 0

    @classmethod
    def create(cls) -> TufRepo:
        repo = cls(
            root_signer=generate_signer("ed25519"),
            targets_signers=[generate_signer("ed25519"), generate_signer("ed25519")],
            snapshot_signer=generate_signer("ed25519"),
            timestamp_signer=generate_signer("ed25519"),
        )
        root = make_root(
            [repo.root_signer.public_key],
            [s.public_key for s in repo.targets_signers],
            targets_threshold=2,
        )
        root.add_key(repo.snapshot_signer.public_key, "snapshot")
        root.add_key(repo.timestamp_signer.public_key, "timestamp")
        repo.files["1.root.json"] = _sign(root, [repo.root_signer])
        return repo

    @property
    def root_bytes(self) -> bytes:
        return self.files["1.root.json"]

    def publish(
        self,
        releases: Sequence[Release],
        version: int,
        *,
        signers: Sequence[CryptoSigner] | None = None,
        timestamp_expires: datetime | None = None,
    ) -> None:
        """Publish a targets file at ``version``, then a new snapshot and timestamp."""
        targets = Targets(version=version, expires=expiry(365))
        for release in releases:
            targets.targets[release.name] = release.target_file()
        targets_bytes = _sign(targets, self.targets_signers if signers is None else list(signers))
        self.files[f"{version}.targets.json"] = targets_bytes

        self.counter += 1
        snapshot = Snapshot(version=self.counter, expires=expiry(7))
        snapshot.meta["targets.json"] = MetaFile(
            version=version,
            length=len(targets_bytes),
            hashes={"sha256": hashlib.sha256(targets_bytes).hexdigest()},
        )
        snapshot_bytes = _sign(snapshot, [self.snapshot_signer])
        self.files[f"{self.counter}.snapshot.json"] = snapshot_bytes

        timestamp = Timestamp(
            version=self.counter,
            expires=timestamp_expires or expiry(1),
            snapshot_meta=MetaFile(version=self.counter),
        )
        self.files["timestamp.json"] = _sign(timestamp, [self.timestamp_signer])


@dataclass
class RepoServer:
    """A running server: its base URL and what devices sent it."""

    url: str
    repo: TufRepo
    token: str
    events: list[Any] = field(default_factory=list)
    # Set to answer event POSTs with 503, as a broker under maintenance would.
    refuse_events: bool = False
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def event_types(self) -> list[str]:
        with self.lock:
            return [event["type"] for batch in self.events for event in batch]


def _handler_for(server: RepoServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

        def _authorized(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {server.token}"

        def _answer(self, status: int, body: bytes = b"", etag: str | None = None) -> None:
            with server.lock:
                server.requests.append((self.command, self.path, status))
            self.send_response(status)
            if etag is not None:
                self.send_header("ETag", etag)
            if status != 304:
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if not self._authorized():
                self._answer(401, b'{"detail": "bad device token"}')
                return
            if not self.path.startswith(REPO_PREFIX):
                self._answer(404)
                return
            body = server.repo.files.get(self.path[len(REPO_PREFIX) :])
            if body is None:
                self._answer(404)
                return
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            if self.headers.get("If-None-Match") == etag:
                self._answer(304, etag=etag)
                return
            self._answer(200, body, etag=etag)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length)
            if not self._authorized():
                self._answer(401)
                return
            if self.path != EVENTS_PATH:
                self._answer(404)
                return
            if server.refuse_events:
                self._answer(503)
                return
            try:
                events = json.loads(data)
            except ValueError:
                self._answer(400)
                return
            if not isinstance(events, list):
                self._answer(422)
                return
            with server.lock:
                server.events.append(events)
            self._answer(204)

    return Handler


@contextmanager
def serve(repo: TufRepo, token: str) -> Iterator[RepoServer]:
    """Serve ``repo`` on a free port of 127.0.0.1 for the duration of the block."""
    state = RepoServer(url="", repo=repo, token=token)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(state))
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, name="tuf-repo-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
