"""What the broker must never enable, each checked with real ngclient devices.

The broker is a real uvicorn server (``build_app``), devices are the reference agent
(python-tuf ngclient) with persistent state. Token isolation and timestamp renewal
have their own tests in ``test_serving.py``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from securesystemslib.signer import CryptoSigner
from sqlalchemy import update
from tuf.api.metadata import Metadata, Root, Targets, Timestamp
from wavesign.online import db
from wavesign.online.app import BrokerApp, build_app

from tests.online_support import offline_response
from tests.test_serving import (
    FAST,
    Alternating,
    Fleet,
    served,
    target,
    trusted_versions,
    wait_served,
)


def fetch(url: str, token: str, name: str) -> httpx.Response:
    return httpx.get(f"{url}/device/v1/repo/{name}", headers={"Authorization": f"Bearer {token}"})


def served_targets_files(url: str, fleet: Fleet) -> list[tuple[str, bytes]]:
    """Every ``V.targets.json`` any device token can fetch: the current one of each
    device and every other version number up to the highest, as an attacker would try."""
    found = []
    for name, token in fleet.tokens.items():
        timestamp = Metadata[Timestamp].from_bytes(fetch(url, token, "timestamp.json").content)
        snapshot_version = timestamp.signed.snapshot_meta.version
        snapshot = json.loads(fetch(url, token, f"{snapshot_version}.snapshot.json").content)
        highest = snapshot["signed"]["meta"]["targets.json"]["version"]
        for version in range(1, highest + 3):
            answer = fetch(url, token, f"{version}.targets.json")
            assert answer.status_code in (200, 404), answer.text
            if answer.status_code == 200:
                found.append((f"{name}:{version}", answer.content))
    return found


def assert_all_doubly_signed(url: str, fleet: Fleet) -> int:
    """Each served targets file meets the root's threshold of 2 with 2 distinct keys."""
    root = Metadata[Root].from_bytes(fleet.root).signed
    assert root.roles["targets"].threshold == 2
    files = served_targets_files(url, fleet)
    for where, body in files:
        metadata = Metadata[Targets].from_bytes(body)
        signed_bytes = metadata.signed_bytes
        # python-tuf's own check (what ngclient runs): raises below the threshold.
        root.verify_delegate("targets", signed_bytes, metadata.signatures)
        valid = root.get_verification_result("targets", signed_bytes, metadata.signatures)
        assert len(valid.signed) == 2, f"{where}: {len(valid.signed)} valid signatures"
    return len(files)


def test_every_served_targets_file_carries_both_signatures_at_every_step(
    tmp_path: Path, ed25519_signers: list[CryptoSigner]
) -> None:
    fleet = Fleet(tmp_path / "data", ed25519_signers)
    app = build(fleet)
    with served(app) as url:
        devices = Alternating(fleet, (url,))
        checked = 0
        steps = [
            lambda: (fleet.wave("populate-12", 12), fleet.store.complete_wave("op", "populate-12")),
            lambda: (fleet.wave("w42", 42), fleet.store.rollout("op", "w42", group="canary")),
            lambda: fleet.store.cancel_wave("op", "w42"),
            lambda: (fleet.wave("w50", 50), fleet.store.rollout("op", "w50", group="us-east-1")),
            lambda: fleet.store.complete_wave("op", "w50"),
            lambda: renew(fleet),
        ]
        for step in steps:
            step()
            wait_served(app, fleet)
            for name in Fleet.NAMES:
                devices.poll(name)
            checked += assert_all_doubly_signed(url, fleet)
        # Each device can fetch exactly one targets file: its view's current one.
        assert checked == len(Fleet.NAMES) * len(steps)


def test_a_targets_file_short_of_its_offline_signature_is_never_served(
    tmp_path: Path, ed25519_signers: list[CryptoSigner]
) -> None:
    fleet = Fleet(tmp_path / "data", ed25519_signers)
    fleet.populate()
    app = build(fleet)
    with served(app) as url:
        devices = Alternating(fleet, (url,))
        for name in Fleet.NAMES:
            assert devices.poll(name).target == target(12)
        good = app.serving.publication
        # Someone with write access to the database strips the offline signature off
        # production (a compromised broker host, or a bug).
        with fleet.store.engine.begin() as conn:
            production = json.loads(
                conn.execute(db.tag_state.select().where(db.tag_state.c.tag == "production"))
                .one()
                .production_json
            )
            offline_keyid = fleet.offline.public_key.keyid
            production["signatures"] = [
                s for s in production["signatures"] if s["keyid"] != offline_keyid
            ]
            assert len(production["signatures"]) == 1
            conn.execute(
                update(db.tag_state)
                .where(db.tag_state.c.tag == "production")
                .values(production_json=json.dumps(production))
            )
        fleet.store.create_group("op", "eu")  # any change makes the servers republish
        marker = fleet.marker()
        time.sleep(20 * FAST.poll_interval)  # twenty attempts to publish it
        # The server refused to publish it: it keeps serving the last good publication.
        assert app.serving.publication == good
        assert app.serving.served_marker != marker
        for name in Fleet.NAMES:
            result = devices.poll(name)
            assert (result.updated, result.target) == (False, target(12))
        assert_all_doubly_signed(url, fleet)
    # A fresh server process over the tampered database serves no targets at all.
    app = build(fleet)
    with served(app) as url:
        for name, token in fleet.tokens.items():
            answer = fetch(url, token, "timestamp.json")
            assert answer.status_code != 200, (name, answer.status_code)


def test_versions_never_go_down_across_rollout_cancel_complete_and_renew(
    tmp_path: Path, ed25519_signers: list[CryptoSigner]
) -> None:
    fleet = Fleet(tmp_path / "data", ed25519_signers)
    app = build(fleet)
    with served(app) as url:
        devices = Alternating(fleet, (url,))  # asserts after every poll: nothing went down
        history: dict[str, list[tuple[int, int, int]]] = {n: [] for n in Fleet.NAMES}

        def everybody_polls(peeking: str | None = None) -> None:
            wait_served(app, fleet)
            for name in Fleet.NAMES:
                devices.poll(name, install=(name != peeking))
                history[name].append(trusted_versions(fleet, name))

        fleet.wave("populate-12", 12)
        fleet.store.complete_wave("op", "populate-12")
        everybody_polls()
        fleet.wave("w42", 42)
        fleet.store.rollout("op", "w42", group="canary")
        everybody_polls(peeking="c2")  # c2 sees the wave but does not install it
        fleet.store.cancel_wave("op", "w42")
        everybody_polls()
        fleet.wave("w50", 50)
        fleet.store.rollout("op", "w50", group="us-east-1")
        everybody_polls()
        fleet.store.complete_wave("op", "w50")
        everybody_polls()
        renew(fleet)
        everybody_polls()

        for name, seen in history.items():
            timestamps = [t for t, _, _ in seen]
            snapshots = [s for _, s, _ in seen]
            targets_versions = [v for _, _, v in seen]
            # Every step republished every view: timestamp and snapshot strictly rise.
            assert timestamps == sorted(set(timestamps)), (name, seen)
            assert snapshots == sorted(set(snapshots)), (name, seen)
            assert targets_versions == sorted(targets_versions), (name, seen)
            # The renewal re-versions production: everybody's targets version rose.
            assert targets_versions[-1] > targets_versions[-2], (name, seen)
        # Completion moved everybody on to 50, c1 from the canceled wave's 42 included.
        assert all(fleet.running(n) == target(50) for n in Fleet.NAMES)


def build(fleet: Fleet) -> BrokerApp:
    return build_app(fleet.data, FAST)


def renew(fleet: Fleet) -> None:
    """``production renew``: the same targets at a higher version, signed offline."""
    request_id = fleet.store.renew_production("op", "production")["request_id"]
    response = offline_response(fleet.store.request_bytes(request_id), [fleet.offline])
    fleet.store.import_response("op", response)
