"""The broker's store on SQLite, called directly: state, waves, refusals leave no trace."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from securesystemslib.signer import CryptoSigner
from wavesign.online import db
from wavesign.online.datadir import init_data_dir
from wavesign.online.onlinekeys import OnlineKeys
from wavesign.online.store import hash_token
from wavesign.online.store_waves import WaveStore
from wavesign.shared.bundles import SigningRequest
from wavesign.shared.canonical import digest
from wavesign.shared.errors import WavesignError

from tests.online_support import ci_entry, offline_response, root_by_ceremony

HW = "intel-corei7-64"


class Broker:
    """A store over a fresh data folder, with a root whose targets need online + offline."""

    def __init__(self, data: Path, signers: list[CryptoSigner]) -> None:
        result = init_data_dir(str(data), None, "acme")
        self.data = data
        self.admin_token = result.admin_token
        self.store = WaveStore(result.db_url, keys=OnlineKeys(data))
        self.root_signer, self.offline = signers[0], signers[1]
        root_by_ceremony(self.store, self.root_signer, self.offline.public_key)

    def activate(self, wave: str) -> None:
        request_id = self.store.show_wave(wave)["request_id"]
        response = offline_response(self.store.request_bytes(request_id), [self.offline])
        self.store.import_response("op", response)

    def released(self, version: int, hardware_id: str = HW) -> None:
        """CI build ``version`` registered, a wave of it planned, signed and completed."""
        name = f"{hardware_id}-lmp-{version}"
        self.store.add_targets("ci", {name: ci_entry(version, hardware_id, f"{version:02x}")})
        self.store.init_wave("op", name=f"w{version}", version=version, tag="production")
        self.activate(f"w{version}")
        self.store.complete_wave("op", f"w{version}")


@pytest.fixture
def broker(tmp_path: Path, ed25519_signers: list[CryptoSigner]) -> Broker:
    return Broker(tmp_path / "data", ed25519_signers)


def assert_refused_unchanged(
    broker: Broker, action: Callable[[], Any], message: str
) -> WavesignError:
    before = broker.store.dump()
    with pytest.raises(WavesignError) as info:
        action()
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert broker.store.dump() == before
    return info.value


# -- setup ------------------------------------------------------------------------------------
def test_migrations_create_exactly_the_declared_schema(broker: Broker) -> None:
    with broker.store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
    assert diff == []


def test_init_writes_keys_and_token_0600_and_stores_only_the_hash(broker: Broker) -> None:
    data = broker.data
    for path in [data / "admin.token", data / "config.json", *(data / "keys").glob("*.key")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert sorted(p.name for p in (data / "keys").iterdir()) == [
        "snapshot.key",
        "targets.key",
        "timestamp.key",
    ]
    token = (data / "admin.token").read_text().strip()
    assert token == broker.admin_token
    assert broker.store.authenticate(token).role == "admin"
    raw = b"".join(p.read_bytes() for p in data.glob("wavesign.db*"))
    assert token.encode() not in raw
    assert hash_token(token).encode() in raw
    with broker.store.engine.connect() as conn:
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    assert mode == "wal"


def test_init_refuses_an_initialized_folder_and_leaves_it(broker: Broker) -> None:
    before = {
        p: p.read_bytes() for p in broker.data.rglob("*") if p.is_file() and "db" not in p.name
    }
    with pytest.raises(WavesignError, match="initialized already"):
        init_data_dir(str(broker.data), None, "acme")
    assert {p: p.read_bytes() for p in before} == before


def test_tokens_roles_and_revocation(broker: Broker) -> None:
    store = broker.store
    name, token = store.create_token("admin", "auditor", "audit-1")
    assert name == "audit-1"
    assert store.authenticate(token).role == "auditor"
    assert [t["name"] for t in store.list_tokens()] == ["admin", "audit-1"]
    store.revoke_token("admin", "audit-1")
    with pytest.raises(WavesignError, match="revoked"):
        store.authenticate(token)
    assert_refused_unchanged(
        broker, lambda: store.create_token("admin", "root", None), "is not one of"
    )
    assert_refused_unchanged(
        broker, lambda: store.create_token("admin", "operator", "audit-1"), "exists already"
    )


def test_device_token_is_refused_as_an_api_token(broker: Broker) -> None:
    issued = broker.store.register_devices(
        "op", [{"name": "gw1", "hardware_id": HW, "tag": "production"}]
    )
    with pytest.raises(WavesignError, match="device token cannot use the operator API"):
        broker.store.authenticate(issued[0]["token"])


# -- targets ----------------------------------------------------------------------------------
def test_targets_are_all_or_nothing(broker: Broker) -> None:
    good = ci_entry(12, HW)
    bad = ci_entry(12, "other")
    bad["hashes"]["sha256"] = "xyz"
    assert_refused_unchanged(
        broker,
        lambda: broker.store.add_targets("ci", {"a-12": good, "b-12": bad}),
        "target b-12: hashes.sha256 must be 64 lower-case hex digits",
    )
    assert broker.store.list_targets() == {}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: e["custom"].pop("version"), "custom.version must be a build number"),
        (lambda e: e["custom"].update(hardwareIds=[]), "custom.hardwareIds must be a non-empty"),
        (lambda e: e.update(length=-1), "length must be an integer >= 0"),
        (lambda e: e.update(length=1.5), "length must be an integer >= 0"),
        (lambda e: e["custom"].update(version="4x2"), "custom.version must be a build number"),
    ],
)
def test_each_malformed_entry_is_named(
    broker: Broker, mutate: Callable[[dict[str, Any]], Any], message: str
) -> None:
    entry = ci_entry(12, HW)
    mutate(entry)
    assert_refused_unchanged(
        broker, lambda: broker.store.add_targets("ci", {"lmp-12": entry}), message
    )


def test_identical_reupload_is_a_no_op_and_changed_content_is_refused(broker: Broker) -> None:
    store = broker.store
    assert store.add_targets("ci", {"lmp-12": ci_entry(12, HW)}) == {
        "added": ["lmp-12"],
        "unchanged": [],
    }
    assert store.add_targets("ci", {"lmp-12": ci_entry(12, HW)}) == {
        "added": [],
        "unchanged": ["lmp-12"],
    }
    assert_refused_unchanged(
        broker,
        lambda: store.add_targets("ci", {"lmp-12": ci_entry(12, HW, "cd")}),
        "registered already with other content",
    )
    listed = store.list_targets(version=12)
    assert listed["lmp-12"]["custom"]["version"] == "12"
    assert store.list_targets(version=13) == {}


# -- devices ----------------------------------------------------------------------------------
def test_devices_register_import_show_move(broker: Broker) -> None:
    store = broker.store
    store.create_group("op", "canary")
    store.create_group("op", "us-east-1")
    one = store.register_devices(
        "op", [{"name": "gw1", "hardware_id": HW, "tag": "production", "group": "canary"}]
    )[0]
    assert set(one) == {"uuid", "name", "token"}
    shown = store.show_device(one["uuid"])
    assert {k: shown[k] for k in ("name", "hardware_id", "tag", "group")} == {
        "name": "gw1",
        "hardware_id": HW,
        "tag": "production",
        "group": "canary",
    }
    rows = [
        {"name": f"gw{i}", "hardware_id": HW, "tag": "production", "group": "us-east-1"}
        for i in range(2, 52)
    ]
    issued = store.register_devices("op", rows)
    assert len(issued) == 50 and len({d["token"] for d in issued}) == 50
    assert len(store.list_devices(group="us-east-1")) == 50
    assert_refused_unchanged(
        broker,
        lambda: store.register_devices(
            "op", [*rows[:1], {"name": "new", "hardware_id": HW, "tag": "production"}]
        ),
        "device gw2 is registered already",
    )
    assert_refused_unchanged(
        broker,
        lambda: store.register_devices(
            "op", [{"name": "x", "hardware_id": HW, "tag": "production", "group": "nope"}]
        ),
        "no group named nope",
    )
    store.move_device("op", one["uuid"], "us-east-1")
    assert store.show_device(one["uuid"])["group"] == "us-east-1"
    assert_refused_unchanged(
        broker, lambda: store.move_device("op", one["uuid"], "nope"), "no group named nope"
    )


# -- waves ------------------------------------------------------------------------------------
def test_first_wave_signed_activated_and_completed_becomes_production(broker: Broker) -> None:
    store = broker.store
    store.add_targets("ci", {"lmp-12": ci_entry(12, HW)})
    plan = store.init_wave("op", name="populate-targets", version=12, tag="production")
    assert plan["status"] == "awaiting-signatures"
    assert (plan["wave_version"], plan["revert_version"]) == (1, 2)
    request = SigningRequest.from_bytes(store.request_bytes(plan["request_id"]))
    assert request.purpose.wave == "populate-targets"
    assert [p.name for p in request.payloads] == ["wave", "revert"]
    assert request.payload("wave").sha256 == digest(request.payload("wave").full())
    assert [r["status"] for r in store.list_requests() if r["purpose"] == "wave"] == ["pending"]

    broker.activate("populate-targets")
    assert store.show_wave("populate-targets")["status"] == "active"
    assert [r["status"] for r in store.list_requests() if r["purpose"] == "wave"] == ["signed"]
    store.complete_wave("op", "populate-targets")
    with store.read() as conn:
        wave_signed = conn.execute(db.waves.select()).first().wave_signed  # type: ignore[union-attr]
        production = conn.execute(db.tag_state.select()).first()
    assert production.production_json == wave_signed  # byte for byte
    document = json.loads(wave_signed)
    assert len(document["signatures"]) == 2
    assert store.list_targets(production="production") == document["signed"]["targets"]
    assert document["signed"]["targets"]["lmp-12"]["custom"]["tags"] == ["production"]


def test_rejected_signatures_leave_the_wave_awaiting(broker: Broker, ed25519_signers: Any) -> None:
    store = broker.store
    store.add_targets("ci", {"lmp-12": ci_entry(12, HW)})
    plan = store.init_wave("op", name="w", version=12, tag="production")
    data = store.request_bytes(plan["request_id"])
    stranger = ed25519_signers[2]
    assert_refused_unchanged(
        broker,
        lambda: store.import_response("op", offline_response(data, [stranger])),
        "does not verify against the root's targets keys",
    )
    only_wave = offline_response(data, [broker.offline], payloads=("wave",))
    assert_refused_unchanged(
        broker, lambda: store.import_response("op", only_wave), "payload revert"
    )
    assert_refused_unchanged(
        broker, lambda: store.import_response("op", b'{"format": 1}'), "response.format"
    )


def test_wave_refusals_change_nothing(broker: Broker) -> None:
    store = broker.store
    broker.released(12)
    store.add_targets("ci", {"lmp-42": ci_entry(42, HW, "42")})
    assert_refused_unchanged(
        broker,
        lambda: store.init_wave("op", name="w", version=43, tag="production"),
        "No targets found for version 43",
    )
    assert_refused_unchanged(
        broker,
        lambda: store.init_wave("op", name="w", version=42, tag="production", prune=[42]),
        "Cannot prune current version",
    )
    store.add_targets("ci", {"lmp-11": ci_entry(11, HW, "11")})
    assert_refused_unchanged(
        broker,
        lambda: store.init_wave("op", name="w", version=11, tag="production"),
        "Cannot create a Wave for a version lower than or equal to production Targets",
    )
    store.init_wave("op", name="v2.0-update", version=42, tag="production")
    assert_refused_unchanged(
        broker,
        lambda: store.init_wave("op", name="other", version=42, tag="production"),
        "wave v2.0-update is still open",
    )
    assert_refused_unchanged(
        broker,
        lambda: store.rollout("op", "v2.0-update", group=None, limit="5"),
        "awaiting signatures",
    )
    assert_refused_unchanged(
        broker,
        lambda: store.cancel_wave("op", "w12"),
        "a completed wave cannot be canceled",
    )
    assert_refused_unchanged(
        broker, lambda: store.complete_wave("op", "v2.0-update"), "only an active wave"
    )


def test_dry_run_plans_without_writing(broker: Broker) -> None:
    broker.store.add_targets("ci", {"lmp-12": ci_entry(12, HW)})
    before = broker.store.dump()
    plan = broker.store.init_wave("op", name="w", version=12, tag="production", dry_run=True)
    assert plan["dry_run"] is True and "lmp-12" in plan["wave"]["targets"]
    assert broker.store.dump() == before


def _fleet(broker: Broker, groups: dict[str, int]) -> dict[str, list[str]]:
    uuids: dict[str, list[str]] = {}
    for group, count in groups.items():
        broker.store.create_group("op", group)
        rows = [
            {"name": f"{group}-{i}", "hardware_id": HW, "tag": "production", "group": group}
            for i in range(count)
        ]
        uuids[group] = [d["uuid"] for d in broker.store.register_devices("op", rows)]
    return uuids


def _wave_device_uuids(broker: Broker, wave: str) -> set[str]:
    with broker.store.read() as conn:
        rows = conn.execute(
            db.devices.select()
            .join(db.wave_devices, db.wave_devices.c.device_id == db.devices.c.id)
            .join(db.waves, db.waves.c.id == db.wave_devices.c.wave_id)
            .where(db.waves.c.name == wave)
        )
        return {r.uuid for r in rows}


def test_rollouts_full_group_limits_uuids_and_later_joiners(broker: Broker) -> None:
    store = broker.store
    fleet = _fleet(broker, {"canary": 3, "us-east-1": 20})
    broker.released(12)
    store.add_targets("ci", {"lmp-42": ci_entry(42, HW, "42")})
    store.init_wave("op", name="v2.0-update", version=42, tag="production")
    broker.activate("v2.0-update")

    result = store.rollout("op", "v2.0-update", group="canary")
    assert result["message"] == "A Wave is being rolled out to 3 devices in group canary."
    assert result["full_group"] is True
    assert _wave_device_uuids(broker, "v2.0-update") == set(fleet["canary"])

    late = store.register_devices(
        "op", [{"name": "late", "hardware_id": HW, "tag": "production", "group": "canary"}]
    )[0]["uuid"]
    assert late in _wave_device_uuids(broker, "v2.0-update")
    store.move_device("op", late, "us-east-1")
    assert late in _wave_device_uuids(broker, "v2.0-update")  # never leaves while active

    result = store.rollout("op", "v2.0-update", group="us-east-1", limit="5")
    assert result["devices"] == 5 and result["full_group"] is False
    reached = _wave_device_uuids(broker, "v2.0-update") - set(fleet["canary"]) - {late}
    assert len(reached) == 5 and reached <= set(fleet["us-east-1"])

    outside = sorted(set(fleet["us-east-1"]) - _wave_device_uuids(broker, "v2.0-update"))[0]
    result = store.rollout("op", "v2.0-update", uuids=[outside], return_uuids=True)
    assert result["uuids"] == [outside]
    assert_refused_unchanged(
        broker,
        lambda: store.rollout("op", "v2.0-update", uuids=[outside]),
        "already rolled out to all 1 matching devices",
    )
    assert_refused_unchanged(
        broker,
        lambda: store.rollout("op", "v2.0-update", uuids=["no-such-device"]),
        "Device no-such-device not found",
    )
    history = store.show_wave("v2.0-update")["rollouts"]
    assert [(r["group"], r["devices"], r["full_group"]) for r in history] == [
        ("canary", 3, True),
        ("us-east-1", 5, False),
        (None, 1, False),
    ]
    dry = store.rollout("op", "v2.0-update", group="us-east-1", dry_run=True)
    # us-east-1: 20 devices + the late one moved in; 5 + 1 + late are in the wave already
    assert dry["devices"] == 21 - 7
    assert dry["message"].startswith("A Wave would be rolled out to")

    store.cancel_wave("op", "v2.0-update")
    assert store.show_wave("v2.0-update")["status"] == "canceled"
    assert_refused_unchanged(
        broker,
        lambda: store.rollout("op", "v2.0-update", group="canary"),
        "only an active wave can be rolled out",
    )
    newcomer = store.register_devices(
        "op", [{"name": "after", "hardware_id": HW, "tag": "production", "group": "canary"}]
    )[0]["uuid"]
    assert newcomer not in _wave_device_uuids(broker, "v2.0-update")


def test_a_second_wave_versions_above_the_canceled_revert(broker: Broker) -> None:
    store = broker.store
    broker.released(12)
    store.add_targets("ci", {"lmp-42": ci_entry(42, HW, "42")})
    first = store.init_wave("op", name="a", version=42, tag="production")
    store.cancel_wave("op", "a")
    statuses = {(r["purpose"], r["wave"]): r["status"] for r in store.list_requests()}
    assert statuses == {
        ("root", None): "signed",
        ("wave", "w12"): "signed",
        ("wave", "a"): "canceled",
    }
    second = store.init_wave("op", name="b", version=42, tag="production")
    assert second["wave_version"] > first["revert_version"]


def test_every_change_appends_exactly_one_event(broker: Broker) -> None:
    store = broker.store
    before = len(store.events())
    store.create_group("op", "g")
    store.add_targets("ci", {"lmp-12": ci_entry(12, HW)})
    with pytest.raises(WavesignError):
        store.create_group("op", "g")
    events = store.events()[before:]
    assert [(e["kind"], e["actor"]) for e in events] == [
        ("group-created", "op"),
        ("targets-added", "ci"),
    ]
    assert events[1]["detail"]["added"] == {"lmp-12": "ab" * 32}


def test_online_key_files_are_not_world_readable(broker: Broker) -> None:
    keys = broker.data / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert all(os.stat(p).st_mode & 0o077 == 0 for p in keys.iterdir())


def test_online_keys_are_encrypted_when_a_passphrase_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAVESIGN_ONLINE_KEY_PASSPHRASE", "correct horse")
    init_data_dir(str(tmp_path / "data"), None, "acme")
    document = json.loads((tmp_path / "data" / "keys" / "targets.key").read_text())
    assert document["cipher"] == "aes-256-gcm"
    assert OnlineKeys(tmp_path / "data").signer("targets").public_key.keytype == "ed25519"
    monkeypatch.delenv("WAVESIGN_ONLINE_KEY_PASSPHRASE")
    with pytest.raises(WavesignError, match="is encrypted: a passphrase is needed"):
        OnlineKeys(tmp_path / "data").signer("snapshot")
