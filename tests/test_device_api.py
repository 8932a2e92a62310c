"""The device hot path under a real uvicorn server, verified by python-tuf's ngclient.

Devices are real ``ngclient.Updater`` instances with persistent metadata folders
(through the reference agent's ``BearerTokenFetcher``) and the ``wavesign-device poll``
command in a subprocess. Views are published with ``wavesign.online.publish``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from tuf.api import exceptions as tuf_errors
from tuf.ngclient import Updater
from wavesign.online.device_agent import BearerTokenFetcher
from wavesign.online.device_api import (
    MAX_EVENTS_BYTES,
    DeviceApp,
    DeviceDirectory,
    DeviceEvent,
    DirectoryError,
)
from wavesign.online.publish import (
    MetadataFile,
    PublishedView,
    publish_views,
    renew_timestamp,
    root_files,
)

from tests.test_publish import RepoKeys
from tests.tuf_repo_server import Release

HW = "rpi4"
OLD = Release("lmp-12", 12, (HW,))
NEW = Release("lmp-42", 42, (HW,))
BETA = Release("lmp-50", 50, (HW,), tags=("beta",))
TOKEN_A = "wsd_device-a-token-0123456789"
TOKEN_B = "wsd_device-b-token-9876543210"
REPO = "/device/v1/repo/"


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Broker:
    """What the broker would hold: the directory, the published views, the counter."""

    keys: RepoKeys
    directory: DeviceDirectory
    app: DeviceApp
    roots: tuple[MetadataFile, ...]
    targets: dict[str, bytes]
    assignment: dict[str, str | None]
    counter: int = 0
    views: dict[str, PublishedView] = field(default_factory=dict)
    batches: list[tuple[str, list[DeviceEvent]]] = field(default_factory=list)
    url: str = ""

    def publish(self) -> None:
        """Republish every view with one fresh counter value, then swap the directory."""
        self.counter += 1
        self.views = publish_views(
            self.targets,
            roots=self.roots,
            version=self.counter,
            snapshot_signer=self.keys.snapshot,
            timestamp_signer=self.keys.timestamp,
        )
        self.directory.replace(
            tokens={_sha(TOKEN_A): "device-a", _sha(TOKEN_B): "device-b"},
            views=self.views,
            view_of=self.assignment,
            roots=self.roots,
        )

    def renew(self, key: str) -> PublishedView:
        self.counter += 1
        renewed = renew_timestamp(
            self.views[key], version=self.counter, timestamp_signer=self.keys.timestamp
        )
        self.directory.renew(key, renewed)
        self.views[key] = renewed
        return renewed

    def get(self, name: str, headers: Mapping[str, str] | None = None) -> tuple[int, Any, bytes]:
        return self.request("GET", REPO + name, headers=headers)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any, bytes]:
        host, port = self.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request(method, path, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()


@contextmanager
def running(app: DeviceApp) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1, in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def broker() -> Iterator[Broker]:
    keys = RepoKeys.create()
    targets = {
        "production": keys.targets_bytes(1, [OLD]),
        "wave": keys.targets_bytes(2, [OLD, NEW]),
        "beta": keys.targets_bytes(7, [BETA]),
    }
    directory = DeviceDirectory()
    batches: list[tuple[str, list[DeviceEvent]]] = []

    async def sink(device: str, events: list[DeviceEvent]) -> None:
        batches.append((device, events))

    state = Broker(
        keys=keys,
        directory=directory,
        app=DeviceApp(directory, sink),
        roots=root_files([keys.root_bytes]),
        targets=targets,
        assignment={"device-a": "production", "device-b": "beta"},
        batches=batches,
    )
    state.publish()
    with running(state.app) as url:
        state.url = url
        yield state


def _updater(metadata_dir: Path, broker: Broker, token: str, root: bytes | None) -> Updater:
    metadata_dir.mkdir(exist_ok=True)
    fetcher = BearerTokenFetcher(token)
    updater = Updater(str(metadata_dir), broker.url + REPO, fetcher=fetcher, bootstrap=root)
    updater.refresh()
    return updater


def _trusted(updater: Updater) -> tuple[int, int, int, list[str]]:
    trusted = updater._trusted_set  # read-only look at what ngclient verified
    return (
        trusted.targets.version,
        trusted.snapshot.version,
        trusted.timestamp.version,
        sorted(trusted.targets.targets),
    )


# --- ngclient ---------------------------------------------------------------------------


def test_ngclient_follows_the_device_from_production_to_the_wave_view(
    broker: Broker, tmp_path: Path
) -> None:
    metadata = tmp_path / "a"
    updater = _updater(metadata, broker, TOKEN_A, broker.keys.root_bytes)
    assert _trusted(updater) == (1, 1, 1, ["lmp-12"])
    assert updater.get_targetinfo("lmp-42") is None

    broker.assignment["device-a"] = "wave"
    broker.publish()
    updater = _updater(metadata, broker, TOKEN_A, None)
    assert _trusted(updater) == (2, 2, 2, ["lmp-12", "lmp-42"])
    info = updater.get_targetinfo("lmp-42")
    assert info is not None and info.custom["version"] == "42"


def test_renewed_timestamp_is_accepted_by_a_device_holding_the_old_one(
    broker: Broker, tmp_path: Path
) -> None:
    metadata = tmp_path / "a"
    old_timestamp = broker.views["production"].timestamp
    updater = _updater(metadata, broker, TOKEN_A, broker.keys.root_bytes)
    assert _trusted(updater)[2] == old_timestamp.version
    assert (metadata / "timestamp.json").read_bytes() == old_timestamp.body

    renewed = broker.renew("production")
    updater = _updater(metadata, broker, TOKEN_A, None)
    assert _trusted(updater) == (1, 1, 2, ["lmp-12"])
    assert (metadata / "timestamp.json").read_bytes() == renewed.timestamp.body
    assert renewed.timestamp.body != old_timestamp.body


def test_ngclient_refuses_a_device_token_it_does_not_know(broker: Broker, tmp_path: Path) -> None:
    with pytest.raises(tuf_errors.DownloadHTTPError) as caught:
        _updater(tmp_path / "x", broker, "wsd_unknown-token", broker.keys.root_bytes)
    assert caught.value.status_code == 401


# --- the wavesign-device command ----------------------------------------------------------


def _poll(broker: Broker, state: Path, root: Path) -> dict[str, Any]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wavesign.online.device_agent",
            "poll",
            "--url",
            broker.url,
            "--token",
            TOKEN_A,
            "--state",
            str(state),
            "--hardware-id",
            HW,
            "--tag",
            "production",
            "--bootstrap-root",
            str(root),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert TOKEN_A not in result.stdout + result.stderr
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_device_agent_installs_production_then_the_wave(broker: Broker, tmp_path: Path) -> None:
    root = tmp_path / "1.root.json"
    root.write_bytes(broker.keys.root_bytes)
    state = tmp_path / "device"

    first = _poll(broker, state, root)
    assert (first["updated"], first["target"], first["targets_version"]) == (True, "lmp-12", 1)
    assert first["events_pending"] == 0
    again = _poll(broker, state, root)  # timestamp answered with a 304 this time
    assert (again["updated"], again["target"]) == (False, "lmp-12")

    broker.assignment["device-a"] = "wave"
    broker.publish()
    moved = _poll(broker, state, root)
    assert (moved["updated"], moved["target"], moved["previous"]) == (True, "lmp-42", "lmp-12")
    assert moved["targets_version"] == 2

    assert [device for device, _ in broker.batches] == ["device-a", "device-a"]
    installed = [e for _, batch in broker.batches for e in batch if e.type == "install-completed"]
    assert [(e.target, e.version) for e in installed] == [("lmp-12", 12), ("lmp-42", 42)]
    assert installed[1].correlation_id == moved["correlation_id"]


# --- HTTP: ETags, tokens, views -----------------------------------------------------------


def test_if_none_match_gives_304_without_a_body(broker: Broker) -> None:
    auth = {"Authorization": f"Bearer {TOKEN_A}"}
    status, headers, body = broker.get("timestamp.json", auth)
    timestamp = broker.views["production"].timestamp
    assert (status, body) == (200, timestamp.body)
    assert headers["ETag"] == '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    assert headers["Cache-Control"] == "no-cache"
    assert headers["Content-Type"] == "application/json"

    for condition in (timestamp.etag, f'"other", {timestamp.etag}', f"W/{timestamp.etag}", "*"):
        status, headers, body = broker.get("timestamp.json", {**auth, "If-None-Match": condition})
        assert (status, body, headers["ETag"]) == (304, b"", timestamp.etag), condition

    status, _, body = broker.get("timestamp.json", {**auth, "If-None-Match": '"stale"'})
    assert (status, body) == (200, timestamp.body)

    snapshot = broker.views["production"].snapshot
    status, headers, body = broker.get(snapshot.name, {**auth, "If-None-Match": snapshot.etag})
    assert (status, body) == (304, b"")
    assert "immutable" in headers["Cache-Control"]


def test_missing_or_bad_tokens_get_401(broker: Broker) -> None:
    for headers in (
        {},
        {"Authorization": "Bearer wsd_nobody"},
        {"Authorization": f"Basic {TOKEN_A}"},
        {"Authorization": TOKEN_A},
        {"Authorization": "Bearer "},
    ):
        status, response_headers, body = broker.get("timestamp.json", headers)
        assert status == 401, headers
        assert json.loads(body) == {"error": "missing or unknown device token"}
        assert response_headers["WWW-Authenticate"].startswith("Bearer")
    status, _, _ = broker.get("1.root.json", {})
    assert status == 401
    status, _, _ = broker.request("POST", "/device/v1/events", b"[]", {})
    assert status == 401


def test_a_device_reads_only_its_own_views_files(broker: Broker) -> None:
    auth_a = {"Authorization": f"Bearer {TOKEN_A}"}
    auth_b = {"Authorization": f"Bearer {TOKEN_B}"}
    production, beta = broker.views["production"], broker.views["beta"]
    assert broker.get("7.targets.json", auth_b)[2] == beta.targets.body
    assert broker.get("1.targets.json", auth_a)[2] == production.targets.body

    # A's token cannot read B's tag's targets, and never gets B's snapshot.
    assert broker.get("7.targets.json", auth_a)[0] == 404
    assert broker.get("1.targets.json", auth_b)[0] == 404
    assert broker.get("2.targets.json", auth_a)[0] == 404  # the wave A is not in
    status, _, body = broker.get(beta.snapshot.name, auth_a)
    assert (status, body) == (200, production.snapshot.body)
    assert body != beta.snapshot.body
    # Both read the shared root; unknown versions and names are 404.
    assert broker.get("1.root.json", auth_a)[2] == broker.keys.root_bytes
    for name in ("2.root.json", "root.json", "snapshot.json", "01.root.json", "9.targets.json"):
        assert broker.get(name, auth_a)[0] == 404, name


def test_other_paths_and_methods_get_404(broker: Broker) -> None:
    auth = {"Authorization": f"Bearer {TOKEN_A}"}
    assert broker.request("GET", "/", headers=auth)[0] == 404
    assert broker.request("GET", "/device/v1/repo", headers=auth)[0] == 404
    assert broker.request("GET", "/api/v1/status", headers=auth)[0] == 404
    assert broker.request("POST", REPO + "timestamp.json", b"{}", auth)[0] == 404
    assert broker.request("GET", "/device/v1/events", headers=auth)[0] == 404


def test_a_device_without_a_view_gets_the_roots_only(broker: Broker) -> None:
    broker.assignment["device-b"] = None
    broker.publish()
    auth = {"Authorization": f"Bearer {TOKEN_B}"}
    assert broker.get("1.root.json", auth)[:1] == (200,)
    status, _, body = broker.get("timestamp.json", auth)
    assert status == 404
    assert json.loads(body) == {"error": "nothing is published for this device yet"}


def test_last_seen_is_kept_in_memory_and_drained(broker: Broker) -> None:
    assert broker.app.drain_last_seen() == {}
    broker.get("timestamp.json", {"Authorization": f"Bearer {TOKEN_A}"})
    broker.get("timestamp.json", {"Authorization": f"Bearer {TOKEN_A}"})
    broker.get("timestamp.json", {"Authorization": "Bearer wsd_nobody"})
    before = time.time()
    seen = broker.app.drain_last_seen()
    assert set(seen) == {"device-a"}
    assert before - 5 <= seen["device-a"].timestamp() <= before + 1
    assert broker.app.drain_last_seen() == {}


# --- events -------------------------------------------------------------------------------


def _event(**changes: Any) -> dict[str, Any]:
    event = {
        "type": "install-completed",
        "target": "lmp-42",
        "version": 42,
        "correlation_id": "c0ffee00-0000-4000-8000-000000000001",
        "time": "2026-12-03T12:00:00Z",
    }
    event.update(changes)
    return event


def _post(broker: Broker, body: bytes, token: str = TOKEN_A) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    status, _, response = broker.request("POST", "/device/v1/events", body, headers)
    return status, response


def test_a_good_batch_reaches_the_sink(broker: Broker) -> None:
    batch = [_event(type="download-started"), _event(), _event(type="install-failed")]
    status, body = _post(broker, json.dumps(batch).encode())
    assert (status, body) == (204, b"")
    assert len(broker.batches) == 1
    device, events = broker.batches[0]
    assert device == "device-a"
    assert [e.to_dict() for e in events] == batch


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (json.dumps([_event(type="rebooted")]), "events[0].type: 'rebooted' is not one of"),
        (json.dumps([_event(), {"type": "install-started"}]), "events[1].target: missing"),
        (json.dumps(_event()), "expected a JSON list"),
        (json.dumps([]), "the list is empty"),
        ('[{"type": "install-started", "type": "install-completed"}]', "duplicate JSON key"),
        (json.dumps([_event(version="42")]), "events[0].version: expected an integer"),
        (json.dumps([_event(version=42.0)]).replace("42.0", "42.5"), "floats are not allowed"),
        (json.dumps([_event(extra=1)]), "unknown field 'extra'"),
        (json.dumps([_event(time="yesterday")]), "events[0].time"),
        (json.dumps([_event(target="")]), "events[0].target"),
        (json.dumps([_event(correlation_id="x" * 200)]), "events[0].correlation_id"),
        (json.dumps([_event()] * 201), "above the limit of 200"),
        (json.dumps([_event(target="x" * 400)] * 200), f"limit of {MAX_EVENTS_BYTES} bytes"),
        ("[{", "not valid JSON"),
        ('["\udcff"]', "not UTF-8"),
    ],
)
def test_a_bad_batch_is_refused_whole(broker: Broker, body: str, reason: str) -> None:
    data = body.encode("utf-8", "surrogatepass")
    status, response = _post(broker, data)
    assert status == 400
    assert response.count(b"\n") == 1 and response.endswith(b"\n")
    assert reason in json.loads(response)["error"]
    assert broker.batches == []


def test_an_oversized_body_without_content_length_is_refused(broker: Broker) -> None:
    host, port = broker.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    chunks = iter([b"[" + b" " * (MAX_EVENTS_BYTES + 10), b"]"])
    connection.request(
        "POST",
        "/device/v1/events",
        body=chunks,
        headers={"Authorization": f"Bearer {TOKEN_A}"},
        encode_chunked=True,
    )
    response = connection.getresponse()
    assert response.status == 400
    assert b"bytes" in response.read()
    connection.close()
    assert broker.batches == []


def test_a_failing_sync_sink_gives_503_and_a_working_one_204(tmp_path: Path) -> None:
    keys = RepoKeys.create()
    directory = DeviceDirectory()
    directory.replace(
        tokens={_sha(TOKEN_A): "device-a"},
        views={},
        view_of={},
        roots=root_files([keys.root_bytes]),
    )
    stored: list[tuple[str, list[DeviceEvent]]] = []
    failing = {"now": True}

    def sink(device: str, events: list[DeviceEvent]) -> None:
        if failing["now"]:
            raise RuntimeError("database is locked")
        stored.append((device, events))

    body = json.dumps([_event()]).encode()
    headers = {"Authorization": f"Bearer {TOKEN_A}"}
    with running(DeviceApp(directory, sink)) as url:
        host, port = url.removeprefix("http://").split(":")
        for expected in (503, 204):
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            connection.request("POST", "/device/v1/events", body=body, headers=headers)
            response = connection.getresponse()
            assert response.status == expected
            response.read()
            connection.close()
            failing["now"] = False
    assert [(d, [e.target for e in events]) for d, events in stored] == [("device-a", ["lmp-42"])]


# --- the directory (pure) -------------------------------------------------------------------


def test_directory_refuses_to_show_a_device_lower_versions() -> None:
    keys = RepoKeys.create()
    roots = root_files([keys.root_bytes])
    targets = {
        "production": keys.targets_bytes(1, [OLD]),
        "wave": keys.targets_bytes(2, [OLD, NEW]),
    }
    signers = {"snapshot_signer": keys.snapshot, "timestamp_signer": keys.timestamp}
    early = publish_views(targets, roots=roots, version=3, **signers)
    late = publish_views(targets, roots=roots, version=4, **signers)
    directory = DeviceDirectory()
    tokens = {_sha(TOKEN_A): "device-a"}
    directory.replace(tokens=tokens, views=late, view_of={"device-a": "production"}, roots=roots)

    # The wave view of an older publication has lower snapshot/timestamp versions.
    with pytest.raises(DirectoryError, match="timestamp version that does not go up"):
        directory.replace(tokens=tokens, views=early, view_of={"device-a": "wave"}, roots=roots)
    # A view of the same publication shares the version: also refused (clients would
    # keep their timestamp and never see the new view).
    with pytest.raises(DirectoryError, match="does not go up"):
        directory.replace(tokens=tokens, views=late, view_of={"device-a": "wave"}, roots=roots)
    with pytest.raises(DirectoryError, match="not published"):
        directory.replace(tokens=tokens, views=late, view_of={"device-a": "revert"}, roots=roots)
    assert directory.lookup(_sha(TOKEN_A)) == ("device-a", late["production"])

    newer = publish_views(
        {"wave": targets["wave"], "production": targets["production"]},
        roots=roots,
        version=5,
        **signers,
    )
    directory.replace(tokens=tokens, views=newer, view_of={"device-a": "wave"}, roots=roots)
    assert directory.lookup(_sha(TOKEN_A)) == ("device-a", newer["wave"])
    # A new token for the same device does not reset what it was shown.
    with pytest.raises(DirectoryError, match="device-a would move"):
        directory.replace(
            tokens={_sha(TOKEN_B): "device-a"},
            views=late,
            view_of={"device-a": "wave"},
            roots=roots,
        )
    # Back from the wave to production (targets 2 -> 1) is refused whatever the counter.
    newest = publish_views(targets, roots=roots, version=6, **signers)
    with pytest.raises(DirectoryError, match="targets version"):
        directory.replace(
            tokens=tokens, views=newest, view_of={"device-a": "production"}, roots=roots
        )
    assert directory.lookup(_sha(TOKEN_A)) == ("device-a", newer["wave"])


def test_directory_renew_needs_the_same_snapshot_and_a_higher_timestamp() -> None:
    keys = RepoKeys.create()
    roots = root_files([keys.root_bytes])
    views = publish_views(
        {"production": keys.targets_bytes(1, [OLD])},
        roots=roots,
        version=3,
        snapshot_signer=keys.snapshot,
        timestamp_signer=keys.timestamp,
    )
    directory = DeviceDirectory()
    directory.replace(
        tokens={_sha(TOKEN_A): "device-a"},
        views=views,
        view_of={"device-a": "production"},
        roots=roots,
    )
    other = publish_views(
        {"production": keys.targets_bytes(1, [OLD])},
        roots=roots,
        version=9,
        snapshot_signer=keys.snapshot,
        timestamp_signer=keys.timestamp,
    )
    with pytest.raises(DirectoryError, match="keep the snapshot"):
        directory.renew("production", other["production"])
    with pytest.raises(DirectoryError, match="not published"):
        directory.renew("wave", other["production"])
    renewed = renew_timestamp(views["production"], version=4, timestamp_signer=keys.timestamp)
    directory.renew("production", renewed)
    assert directory.view("production") is renewed
    with pytest.raises(DirectoryError, match="not above 4"):
        directory.renew("production", renewed)


# --- one process for devices and operators ------------------------------------------------


def test_a_fallback_app_gets_everything_outside_device(tmp_path: Path) -> None:
    from fastapi import FastAPI

    keys = RepoKeys.create()
    directory = DeviceDirectory()
    directory.replace(
        tokens={_sha(TOKEN_A): "device-a"},
        views={},
        view_of={},
        roots=root_files([keys.root_bytes]),
    )
    started: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started.append("operator api")
        yield

    operator_api = FastAPI(lifespan=lifespan)

    @operator_api.get("/api/v1/hello")
    def hello() -> dict[str, str]:
        return {"hello": "operator"}

    async def sink(device: str, events: list[DeviceEvent]) -> None:
        return None

    app = DeviceApp(directory, sink, fallback=operator_api)
    with running(app) as url:
        host, port = url.removeprefix("http://").split(":")

        def get(path: str) -> tuple[int, bytes]:
            connection = http.client.HTTPConnection(host, int(port), timeout=10)
            connection.request("GET", path, headers={"Authorization": f"Bearer {TOKEN_A}"})
            response = connection.getresponse()
            result = response.status, response.read()
            connection.close()
            return result

        assert get("/api/v1/hello") == (200, b'{"hello":"operator"}')
        assert get("/device/v1/repo/1.root.json") == (200, keys.root_bytes)
        # The device prefix stays the device app's, even for paths it does not know.
        assert get("/device/v2/other")[0] == 404
        assert get("/nothing")[0] == 404  # FastAPI's own 404
    assert started == ["operator api"]
