"""The broker serving devices, end to end: real server, real store, real ngclient devices.

The broker is ``wavesign.online.app.build_app`` under a real uvicorn server (in a
thread, or ``uvicorn --factory`` subprocesses sharing one PostgreSQL); state is set up
through the store (``WaveStore``), as the operator API would; devices are the
reference agent (``wavesign.online.device_agent.poll_once``, python-tuf ngclient) with
persistent state folders. The seed's story: populate 12, wave 42 to canary, cancel,
wave 50 to us-east-1, complete.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import uvicorn
from securesystemslib.signer import CryptoSigner
from sqlalchemy import select
from wavesign.online import db
from wavesign.online.app import BrokerApp, build_app
from wavesign.online.datadir import init_data_dir
from wavesign.online.device_agent import PollResult, poll_once
from wavesign.online.onlinekeys import OnlineKeys
from wavesign.online.rollout import DeviceRef
from wavesign.online.serving import (
    DEVICE_EVENTS_KIND,
    PUBLICATION_KEY,
    DeviceRow,
    ServingConfig,
    assign_views,
    state_marker,
    write_last_seen,
)
from wavesign.online.status_queries import fleet_status, wave_status
from wavesign.online.store_waves import WaveStore
from wavesign.online.views import ViewState, WaveRecord, select_view

from tests.online_support import ci_entry, free_port, offline_response, signed_root_bytes
from tests.pg_harness import PgCluster, pg_cluster_fixture  # noqa: F401

HW = "intel-corei7-64"
FAST = ServingConfig(poll_interval=0.1, flush_interval=0.3)


def target(version: int) -> str:
    return f"{HW}-lmp-{version}"


class Fleet:
    """A broker's store and six devices: 2 canary, 2 us-east-1, 2 without a group."""

    GROUPS: ClassVar[dict[str, str]] = {
        "c1": "canary",
        "c2": "canary",
        "u1": "us-east-1",
        "u2": "us-east-1",
    }
    NAMES = ("c1", "c2", "u1", "u2", "n1", "n2")

    def __init__(self, data: Path, signers: list[CryptoSigner], db_url: str | None = None):
        result = init_data_dir(str(data), db_url, "acme")
        self.data = data
        self.store = WaveStore(result.db_url, keys=OnlineKeys(data))
        self.offline = signers[1]
        keys = OnlineKeys(data).public_keys()
        self.root = signed_root_bytes(
            signers[0],
            keys["targets"],
            self.offline.public_key,
            snapshot=keys["snapshot"],
            timestamp=keys["timestamp"],
        )
        self.store.add_root("admin", self.root)
        for group in ("canary", "us-east-1"):
            self.store.create_group("op", group)
        issued = self.store.register_devices(
            "op",
            [
                {"name": n, "hardware_id": HW, "tag": "production", "group": self.GROUPS.get(n)}
                for n in self.NAMES
            ],
        )
        self.tokens = {d["name"]: d["token"] for d in issued}
        self.uuids = {d["name"]: d["uuid"] for d in issued}
        self.state = data.parent / "devices"

    def wave(self, name: str, version: int, tag: str = "production") -> None:
        """CI registers build ``version``; wave ``name`` is planned and signed (active)."""
        self.store.add_targets("ci", {target(version): ci_entry(version, HW, f"{version:02x}")})
        self.store.init_wave("op", name=name, version=version, tag=tag)
        request_id = self.store.show_wave(name)["request_id"]
        response = offline_response(self.store.request_bytes(request_id), [self.offline])
        self.store.import_response("op", response)

    def populate(self, version: int = 12) -> None:
        """The first wave, completed at once: build ``version`` becomes production."""
        self.wave(f"populate-{version}", version)
        self.store.complete_wave("op", f"populate-{version}")

    def marker(self) -> int:
        with self.store.read() as conn:
            return state_marker(conn)

    def poll(
        self, url: str, name: str, install: bool = True, tag: str = "production"
    ) -> PollResult:
        return poll_once(
            url,
            self.tokens[name],
            self.state / name,
            hardware_id=HW,
            tag=tag,
            bootstrap_root=self.root,
            install=install,
        )

    def running(self, name: str) -> str | None:
        path = self.state / name / "device.json"
        return json.loads(path.read_bytes())["current_target"] if path.exists() else None


@contextmanager
def served(app: BrokerApp) -> Iterator[str]:
    """``app`` under a real uvicorn server in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        assert time.monotonic() < deadline, "the server did not start within 20 s"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_until(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def wait_served(app: BrokerApp, fleet: Fleet) -> None:
    marker = fleet.marker()
    wait_until(lambda: app.serving.served_marker == marker, f"the server to serve state {marker}")


def test_assign_views_agrees_with_select_view_for_every_device() -> None:
    state = ViewState(
        production={"production": 5, "beta": 2},
        waves=(
            WaveRecord("old", "production", "canceled", 6, 7, frozenset({"d1", "d4"}),
                       frozenset({"canary"})),
            WaveRecord("new", "production", "active", 8, 9, frozenset({"d4"}),
                       frozenset({"eu"})),
            WaveRecord("b", "beta", "active", 3, 4, frozenset({"d9"})),
        ),
    )  # fmt: skip
    devices = [
        DeviceRow(f"d{i}", f"sha{i}", tag, group)
        for i, (tag, group) in enumerate(
            [("production", None), ("production", "canary"), ("production", "eu"),
             ("production", "us"), ("production", "us"), ("production", "canary"),
             ("beta", None), ("beta", "eu"), ("alpha", None), ("beta", None)]
        )
    ]  # fmt: skip
    assigned = assign_views(devices, state)
    expected = {d.uuid: select_view(DeviceRef(d.uuid, d.tag, d.group), state) for d in devices}
    assert assigned == {u: (v if v.version is not None else None) for u, v in expected.items()}
    # Spot checks by hand: the views the docstring of views.py promises.
    assert (assigned["d1"].kind, assigned["d1"].version) == ("revert", 7)  # type: ignore[union-attr]
    assert (assigned["d4"].kind, assigned["d4"].wave) == ("wave", "new")  # type: ignore[union-attr]
    assert (assigned["d3"].kind, assigned["d3"].version) == ("production", 5)  # type: ignore[union-attr]
    assert assigned["d8"] is None  # tag alpha has no production


@pytest.fixture
def fleet(tmp_path: Path, ed25519_signers: list[CryptoSigner]) -> Fleet:
    return Fleet(tmp_path / "data", ed25519_signers)


def test_the_seed_story_with_real_devices(fleet: Fleet) -> None:
    app = build_app(fleet.data, FAST)
    with served(app) as url:
        # Nothing published yet: the device gets the root but no timestamp.
        answer = httpx.get(
            url + "/device/v1/repo/timestamp.json",
            headers={"Authorization": f"Bearer {fleet.tokens['c1']}"},
        )
        assert answer.status_code == 404
        assert "nothing is published" in answer.text

        # Populate: everybody installs 12.
        fleet.wave("populate-12", 12)
        fleet.store.complete_wave("op", "populate-12")
        wait_served(app, fleet)
        for name in Fleet.NAMES:
            result = fleet.poll(url, name)
            assert (result.updated, result.target) == (True, target(12)), name

        # Wave 42 to canary: only canary devices see it; c2 polls but does not install.
        fleet.wave("w42", 42)
        fleet.store.rollout("op", "w42", group="canary")
        wait_served(app, fleet)
        assert fleet.poll(url, "c1").target == target(42)
        peek = fleet.poll(url, "c2", install=False)
        assert (peek.available, peek.target) == (target(42), target(12))
        for name in ("u1", "u2", "n1", "n2"):
            result = fleet.poll(url, name)
            assert (result.updated, result.available, result.target) == (False, None, target(12))

        # The operator API is served by the same process.
        assert httpx.get(url + "/api/v1/openapi.json").status_code == 200

        # Cancel: c1 keeps 42 without any error, c2 stays on 12, nobody else moves.
        fleet.store.cancel_wave("op", "w42")
        wait_served(app, fleet)
        for name in Fleet.NAMES:
            result = fleet.poll(url, name)
            assert result.updated is False, name
            assert result.available is None, name
        assert fleet.running("c1") == target(42)
        assert all(fleet.running(n) == target(12) for n in Fleet.NAMES if n != "c1")

        # The broker learned what each device runs from its events; c1 is an orphan.
        wait_until(
            lambda: (
                {d["name"]: d["current_target"] for d in fleet.store.list_devices()}
                == {n: (target(42) if n == "c1" else target(12)) for n in Fleet.NAMES}
            ),
            "current_target of every device",
        )
        wait_until(
            lambda: all(d["last_seen"] for d in fleet.store.list_devices()),
            "last_seen of every device",
        )
        with fleet.store.read() as conn:
            report = fleet_status(conn, now=datetime.now(UTC))
        [production] = [t for t in report.to_dict()["tags"] if t["tag"] == "production"]
        assert production["devices"] == 6
        assert production["on_latest"] == 5
        assert production["on_orphan"] == 1
        assert production["online"] == 6
        with fleet.store.read() as conn:
            canceled = wave_status(conn, "w42", now=datetime.now(UTC)).to_dict()
        assert canceled["status"] == "canceled"
        rows = {g["group"]: g for g in canceled["groups"]}
        assert rows["canary"]["updated"] == 1
        assert rows["canary"]["total"] == 2
        assert rows["us-east-1"]["rollout_at"] == "Never (Wave Canceled)"

        # Wave 50 to us-east-1, then complete: everybody ends on 50.
        fleet.wave("w50", 50)
        fleet.store.rollout("op", "w50", group="us-east-1")
        wait_served(app, fleet)
        for name in ("u1", "u2"):
            assert fleet.poll(url, name).target == target(50)
        for name in ("c1", "c2", "n1", "n2"):
            assert fleet.poll(url, name).updated is False
        fleet.store.complete_wave("op", "w50")
        wait_served(app, fleet)
        for name in Fleet.NAMES:
            fleet.poll(url, name)
            assert fleet.running(name) == target(50), name

    # Shutdown flushed last_seen and every report was stored.
    with fleet.store.read() as conn:
        reports = conn.execute(
            select(db.events.c.subject).where(db.events.c.kind == DEVICE_EVENTS_KIND)
        ).scalars()
        assert set(reports) == set(fleet.uuids.values())


def test_a_device_token_reads_only_its_own_view(fleet: Fleet) -> None:
    issued = fleet.store.register_devices("op", [{"name": "b1", "hardware_id": HW, "tag": "beta"}])
    fleet.tokens["b1"] = issued[0]["token"]
    fleet.wave("populate-12", 12)
    fleet.store.complete_wave("op", "populate-12")
    fleet.store.add_targets("ci", {target(77): ci_entry(77, HW, "77")})
    fleet.store.init_wave("op", name="beta-77", version=77, tag="beta")
    request_id = fleet.store.show_wave("beta-77")["request_id"]
    fleet.store.import_response(
        "op", offline_response(fleet.store.request_bytes(request_id), [fleet.offline])
    )
    fleet.store.complete_wave("op", "beta-77")
    app = build_app(fleet.data, FAST)
    with served(app) as url:
        beta = fleet.poll(url, "b1", tag="beta")
        assert beta.target == target(77)
        beta_name = f"{beta.targets_version}.targets.json"

        def get(name: str, who: str) -> httpx.Response:
            return httpx.get(
                f"{url}/device/v1/repo/{name}",
                headers={"Authorization": f"Bearer {fleet.tokens[who]}"},
            )

        beta_body = get(beta_name, "b1")
        assert beta_body.status_code == 200
        assert target(77) in beta_body.text
        other = get(beta_name, "c1")
        # Tag versions are per tag: the same file name may be c1's own production file,
        # but never beta's bytes.
        assert other.content != beta_body.content
        assert target(77) not in other.text
        assert httpx.get(f"{url}/device/v1/repo/{beta_name}").status_code == 401
        bad = httpx.get(
            f"{url}/device/v1/repo/{beta_name}", headers={"Authorization": "Bearer wsd_nope"}
        )
        assert bad.status_code == 401


def test_events_are_all_or_nothing_and_set_current_target(fleet: Fleet) -> None:
    fleet.wave("populate-12", 12)
    fleet.store.complete_wave("op", "populate-12")
    app = build_app(fleet.data, FAST)
    with served(app) as url:
        headers = {"Authorization": f"Bearer {fleet.tokens['n1']}"}
        before = fleet.store.dump()
        bad = [
            {"type": "install-completed", "target": target(12), "version": 12,
             "correlation_id": "x", "time": "2026-01-01T00:00:00Z"},
            {"type": "exploded", "target": target(12), "version": 12,
             "correlation_id": "x", "time": "2026-01-01T00:00:00Z"},
        ]  # fmt: skip
        answer = httpx.post(url + "/device/v1/events", json=bad, headers=headers)
        assert answer.status_code == 400
        assert "events[1].type" in answer.text
        after = fleet.store.dump()
        after["devices"] = before["devices"]  # last_seen may have been flushed meanwhile
        assert after == before
        good = [bad[0]]
        assert httpx.post(url + "/device/v1/events", json=good, headers=headers).status_code == 204
        [device] = [d for d in fleet.store.list_devices() if d["name"] == "n1"]
        assert device["current_target"] == target(12)


def test_timestamps_are_resigned_before_they_expire(fleet: Fleet) -> None:
    fleet.wave("populate-12", 12)
    fleet.store.complete_wave("op", "populate-12")
    config = ServingConfig(
        poll_interval=0.1,
        flush_interval=0.3,
        timestamp_lifetime=timedelta(seconds=40),
        refresh_margin=timedelta(seconds=38),
    )
    app = build_app(fleet.data, config)
    with served(app) as url:
        first = fleet.poll(url, "n1")
        assert first.target == target(12)
        publication = app.serving.publication
        assert publication is not None
        wait_until(
            lambda: (
                (app.serving.publication or publication).timestamp_version
                > publication.timestamp_version
            ),
            "a renewed timestamp",
        )
        renewed = app.serving.publication
        assert renewed is not None
        assert renewed.version == publication.version
        answer = httpx.get(
            url + "/device/v1/repo/timestamp.json",
            headers={"Authorization": f"Bearer {fleet.tokens['n1']}"},
        )
        assert json.loads(answer.content)["signed"]["version"] >= renewed.timestamp_version
        # The device accepts the renewed timestamp (higher version, same snapshot).
        again = fleet.poll(url, "n1")
        assert (again.updated, again.target) == (False, target(12))
    with fleet.store.read() as conn:
        counter = conn.execute(
            select(db.settings.c.value).where(db.settings.c.key == "metadata_counter")
        ).scalar()
    assert int(str(counter)) >= renewed.timestamp_version


# --- two server processes sharing one PostgreSQL ---------------------------------------------


@contextmanager
def server_process(data: Path) -> Iterator[str]:
    port = free_port()
    env = dict(os.environ, WAVESIGN_DATA=str(data), WAVESIGN_SERVING_POLL="0.1")
    log = open(data.parent / f"uvicorn-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "wavesign.online.app:app_from_env",
         "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (data.parent / f"uvicorn-{port}.log").read_text()
            try:
                if httpx.get(url + "/api/v1/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def published_marker(fleet: Fleet) -> int | None:
    """The change marker of the newest publication any server claimed."""
    with fleet.store.read() as conn:
        text = conn.execute(
            select(db.settings.c.value).where(db.settings.c.key == PUBLICATION_KEY)
        ).scalar()
    return None if text is None else int(json.loads(text)["marker"])


def switched_marker(fleet: Fleet) -> int | None:
    """The change marker of the publication every server has switched to."""
    with fleet.store.read() as conn:
        text = conn.execute(
            select(db.settings.c.value).where(db.settings.c.key == PUBLICATION_KEY)
        ).scalar()
    if text is None:
        return None
    record = json.loads(text)
    due = record.get("serve_at_ms")
    return int(record["marker"]) if due is not None and due <= time.time() * 1000 else None


def timestamp_of(url: str, token: str) -> bytes:
    answer = httpx.get(
        url + "/device/v1/repo/timestamp.json", headers={"Authorization": f"Bearer {token}"}
    )
    return answer.content if answer.status_code == 200 else b""


def trusted_versions(fleet: Fleet, name: str) -> tuple[int, int, int]:
    """The (timestamp, snapshot, targets) versions the device's ngclient trusts now."""
    folder = fleet.state / name / "metadata"
    return tuple(  # type: ignore[return-value]
        json.loads((folder / f"{role}.json").read_bytes())["signed"]["version"]
        for role in ("timestamp", "snapshot", "targets")
    )


class Alternating:
    """Devices that poll the servers in turn, never waiting for them to agree, and check
    that the versions each device trusts never go down."""

    def __init__(self, fleet: Fleet, urls: tuple[str, ...]) -> None:
        self.fleet = fleet
        self.urls = urls
        self.polls = 0
        self.seen: dict[str, tuple[int, int, int]] = {}

    def poll(self, name: str, install: bool = True) -> PollResult:
        url = self.urls[self.polls % len(self.urls)]
        self.polls += 1
        # Any TUF error (a rollback included) raises here and fails the test.
        result = self.fleet.poll(url, name, install=install)
        versions = trusted_versions(self.fleet, name)
        before = self.seen.get(name, (0, 0, 0))
        assert all(now >= then for now, then in zip(versions, before, strict=True)), (
            f"{name} went from {before} to {versions} polling {url}"
        )
        self.seen[name] = versions
        return result

    def until(self, name: str, target_name: str, install: bool = True) -> PollResult:
        """Poll (alternating) until ``name`` is offered ``target_name``."""
        deadline = time.monotonic() + 20
        while True:
            result = self.poll(name, install=install)
            if target_name in (result.target, result.available):
                return result
            assert time.monotonic() < deadline, f"{name} never got {target_name}: {result}"
            time.sleep(0.05)


def test_the_story_on_postgresql_with_devices_alternating_between_two_servers(
    tmp_path: Path, ed25519_signers: list[CryptoSigner], pg_cluster: PgCluster
) -> None:
    fleet = Fleet(tmp_path / "data", ed25519_signers, pg_cluster.new_database())
    with server_process(fleet.data) as first, server_process(fleet.data) as second:
        devices = Alternating(fleet, (first, second))
        token = fleet.tokens["c1"]

        # 1. populate: all install 12.
        fleet.wave("populate-12", 12)
        fleet.store.complete_wave("op", "populate-12")
        # Before the first publication devices get 404s, not metadata: wait for it.
        wait_until(lambda: switched_marker(fleet) == fleet.marker(), "the first publication")
        for name in Fleet.NAMES:
            assert devices.until(name, target(12)).target == target(12)

        # 2. rollout to canary: only canary install 42; c2 polls but does not install.
        fleet.wave("w42", 42)
        fleet.store.rollout("op", "w42", group="canary")
        devices.until("c1", target(42))
        assert fleet.running("c1") == target(42)
        assert devices.until("c2", target(42), install=False).target == target(12)
        for name in ("u1", "u2", "n1", "n2"):
            for _ in range(4):  # both servers, twice
                assert devices.poll(name).available is None
            assert fleet.running(name) == target(12)

        # 3. cancel: c1 keeps 42 with no error, c2 stays on 12, nobody else moves.
        marker_before = published_marker(fleet)
        fleet.store.cancel_wave("op", "w42")
        marker = fleet.marker()
        wait_until(lambda: published_marker(fleet) == marker != marker_before, "the cancel")
        deadline = time.monotonic() + 20
        while devices.poll("c2", install=False).available is not None:
            assert time.monotonic() < deadline, "c2 was still offered 42 after the cancel"
        for name in Fleet.NAMES:
            for _ in range(2):
                result = devices.poll(name)
                assert (result.updated, result.available) == (False, None), name
        assert fleet.running("c1") == target(42)
        assert all(fleet.running(n) == target(12) for n in Fleet.NAMES if n != "c1")

        # 4. new wave + rollout us-east-1 + complete: everybody ends on 50.
        fleet.wave("w50", 50)
        fleet.store.rollout("op", "w50", group="us-east-1")
        for name in ("u1", "u2"):
            devices.until(name, target(50))
        fleet.store.complete_wave("op", "w50")
        for name in Fleet.NAMES:
            devices.until(name, target(50))
            assert fleet.running(name) == target(50), name

        # Both processes serve byte-identical files once they agree.
        def agree() -> bool:
            one = timestamp_of(first, token)
            return one != b"" and one == timestamp_of(second, token)

        wait_until(agree, "both servers to serve one timestamp")
        assert devices.polls > 6 * 4


def test_last_seen_is_written_in_one_batch_and_never_goes_back(fleet: Fleet) -> None:
    later = datetime(2026, 12, 3, 12, 0, 5, tzinfo=UTC)
    earlier = later - timedelta(seconds=30)
    uuids = fleet.uuids
    assert write_last_seen(fleet.store.engine, {uuids["c1"]: later, uuids["u1"]: earlier}) == 2
    write_last_seen(fleet.store.engine, {uuids["c1"]: earlier, uuids["u1"]: later})
    seen = {d["name"]: d["last_seen"] for d in fleet.store.list_devices()}
    assert seen["c1"] == "2026-12-03T12:00:05Z"
    assert seen["u1"] == "2026-12-03T12:00:05Z"
    assert seen["n1"] is None
