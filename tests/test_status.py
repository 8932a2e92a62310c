"""``status`` and ``wave status``: the pure reports, the SQL behind them, the API and CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from securesystemslib.signer import CryptoSigner
from wavesign.online.app import build_app
from wavesign.online.cli_status import (
    SimulateError,
    fleet,
    parse_group_shares,
    split_counts,
    status,
    wave_status,
)
from wavesign.online.device_api import DeviceEvent
from wavesign.online.serving import store_device_events, write_last_seen
from wavesign.online.status import (
    Bucket,
    LiveWave,
    RolledBucket,
    TagFacts,
    WaveFacts,
    expiry_warnings,
    fleet_report,
    wave_report,
)
from wavesign.online.status_api import status_router
from wavesign.online.status_queries import StatusError, fleet_status
from wavesign.online.status_queries import wave_status as query_wave

from tests.test_serving import FAST, HW, Fleet, served, target

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
T12, T42, T50 = "hw-lmp-12", "hw-lmp-42", "hw-lmp-50"
VERSIONS = {T12: 12, T42: 42, T50: 50}


# --- pure: wave status --------------------------------------------------------------------
def canceled_wave_buckets() -> list[Bucket]:
    return [
        Bucket("production", "canary", T42, 1, 1),
        Bucket("production", "canary", T12, 1, 0),
        Bucket("production", "us-east-1", T12, 2, 2),
        Bucket("production", None, T12, 2, 1),
    ]


def test_wave_report_counts_per_group_and_labels_groups_not_rolled_out() -> None:
    wave = WaveFacts(
        "w42", "production", 42, "canceled", "2026-12-01T10:00:00Z", "2026-12-02T10:00:00Z"
    )
    rolled = [
        RolledBucket("canary", T42, 1, "2026-12-01T11:00:00Z"),
        RolledBucket("canary", T12, 1, "2026-12-01T11:00:00Z"),
    ]
    report = wave_report(wave, canceled_wave_buckets(), rolled, VERSIONS)
    data = report.to_dict()
    assert data["groups"] == [
        {"group": "canary", "total": 2, "updated": 1, "need_update": 1, "scheduled": 1,
         "online": 1, "rollout_at": "2026-12-01T11:00:00Z"},
        {"group": "us-east-1", "total": 2, "updated": 0, "need_update": 2, "scheduled": 0,
         "online": 2, "rollout_at": "Never (Wave Canceled)"},
        {"group": "(No Group)", "total": 2, "updated": 0, "need_update": 2, "scheduled": 0,
         "online": 1, "rollout_at": "Never (Wave Canceled)"},
    ]  # fmt: skip
    assert (data["device_groups_on_tag"], data["device_groups_rollout"]) == (2, 1)
    assert (data["devices_on_tag"], data["devices_updated"]) == (6, 1)
    assert (data["devices_scheduled"], data["devices_not_scheduled"]) == (1, 4)
    text = report.render().splitlines()
    assert text[0] == "Wave 'w42' for tag 'production' version 42 is canceled"
    assert "Finished At: 2026-12-02T10:00:00Z" in text
    assert "Devices Scheduled for Update: 1" in text
    assert text[-4] == ("GROUP       TOTAL  UPDATED  NEED UPDATE  SCHEDULED  ONLINE  ROLLOUT AT")
    assert (
        text[-1]
        == "(No Group)  2      0        2            0          1       Never (Wave Canceled)"
    )


@pytest.mark.parametrize(
    ("status_", "label"), [("active", "At Wave Completion"), ("complete", "(Done)")]
)
def test_wave_report_labels_by_status(status_: str, label: str) -> None:
    wave = WaveFacts("w50", "production", 50, status_, "2026-12-01T10:00:00Z")
    buckets = [Bucket("production", "eu", T12, 3, 0), Bucket("production", "eu", T50, 1, 1)]
    [row] = wave_report(wave, buckets, [], VERSIONS).groups
    assert (row.total, row.updated, row.need_update, row.scheduled, row.rollout_at) == (
        4, 1, 3, 0, label,
    )  # fmt: skip


def test_updated_means_the_wave_version_or_newer_and_unknown_targets_are_not() -> None:
    wave = WaveFacts("w42", "production", 42, "active", "2026-12-01T10:00:00Z")
    buckets = [
        Bucket("production", "g", T50, 1, 0),
        Bucket("production", "g", T42, 2, 0),
        Bucket("production", "g", T12, 4, 0),
        Bucket("production", "g", None, 8, 0),
        Bucket("production", "g", "not-registered", 16, 0),
    ]
    rolled = [RolledBucket("g", T12, 4, "2026-12-01T11:00:00Z"),
              RolledBucket("g", T42, 2, "2026-12-01T10:30:00Z")]  # fmt: skip
    [row] = wave_report(wave, buckets, rolled, VERSIONS).groups
    assert (row.total, row.updated, row.scheduled, row.rollout_at) == (
        31, 3, 4, "2026-12-01T10:30:00Z",
    )  # fmt: skip


# --- pure: fleet status -------------------------------------------------------------------
def test_fleet_report_counts_orphans_of_a_canceled_wave() -> None:
    tags = [TagFacts("production", 12, frozenset({T12}), "2027-12-01T00:00:00Z", 1)]
    waves = [LiveWave("w42", "production", "canceled", 42, frozenset({T12}),
                      "2027-12-01T00:00:00Z", 3)]  # fmt: skip
    buckets = [
        Bucket("production", "us-east-1", T12, 2, 2),
        Bucket("production", None, T12, 2, 1),
        Bucket("production", "canary", T42, 1, 1, view="w42"),
        Bucket("production", "canary", T12, 1, 0, view="w42"),
    ]
    report = fleet_report(tags, waves, buckets, VERSIONS, NOW)
    data = report.to_dict()
    assert data["total_devices"] == 6
    [row] = data["tags"]
    assert (row["tag"], row["wave"], row["latest_target"]) == ("production", None, 12)
    assert (row["devices"], row["on_latest"], row["on_orphan"], row["online"]) == (6, 5, 1, 4)
    assert row["targets"] == [{"name": T42, "devices": 1}, {"name": T12, "devices": 5}]
    assert row["groups"] == [
        {"group": "canary", "devices": 2, "on_latest": 1, "online": 1},
        {"group": "us-east-1", "devices": 2, "on_latest": 2, "online": 2},
        {"group": "(No Group)", "devices": 2, "on_latest": 2, "online": 1},
    ]
    assert data["warnings"] == []
    text = report.render().splitlines()
    assert text[0] == "Total number of devices: 6"
    assert text[2] == "TAG         LATEST TARGET  DEVICES  ON LATEST  ON ORPHAN  ONLINE"
    assert text[3] == "production  12             6        5          1          4"


def test_fleet_report_gives_an_active_wave_its_own_row() -> None:
    tags = [TagFacts("production", 12, frozenset({T12}), "2027-12-01T00:00:00Z", 1)]
    waves = [LiveWave("w50", "production", "active", 50, frozenset({T12, T50}),
                      "2027-12-01T00:00:00Z", 4)]  # fmt: skip
    buckets = [
        Bucket("production", "eu", T12, 3, 3),
        Bucket("production", "us", T50, 1, 1, view="w50"),
        Bucket("production", "us", T12, 1, 0, view="w50"),
    ]
    rows = {r.label: r for r in fleet_report(tags, waves, buckets, VERSIONS, NOW).rows}
    assert sorted(rows) == ["production", "production (wave)"]
    wave = rows["production (wave)"]
    assert (wave.latest, wave.devices, wave.on_latest, wave.on_orphan) == (50, 2, 1, 0)
    plain = rows["production"]
    assert (plain.latest, plain.devices, plain.on_latest, plain.on_orphan) == (12, 3, 3, 0)


def test_expiry_warnings_within_30_days() -> None:
    soon = TagFacts("production", 12, frozenset({T12}), "2026-12-20T00:00:00Z", 7)
    later = TagFacts("beta", 3, frozenset(), "2027-06-01T00:00:00Z", 2)
    gone = LiveWave("w9", "beta", "active", 9, frozenset(), "2026-11-30T00:00:00Z", 5)
    assert expiry_warnings([later, soon], [gone], NOW) == [
        "production targets of tag production (version 7) expires at 2026-12-20T00:00:00Z: "
        "run `wavesign production renew production`",
        "targets of wave w9 (version 5) expired at 2026-11-30T00:00:00Z: "
        "complete it or init a new wave",
    ]


# --- the SQL over a real store ----------------------------------------------------------------
def report_installed(fleet_: Fleet, name: str, version: int) -> None:
    event = DeviceEvent("install-completed", target(version), version, "c-" + name,
                        "2026-12-03T10:00:00Z")  # fmt: skip
    store_device_events(fleet_.store.engine, fleet_.uuids[name], [event])


@pytest.fixture
def fleet_(tmp_path: Path, ed25519_signers: list[CryptoSigner]) -> Fleet:
    fleet_ = Fleet(tmp_path / "data", ed25519_signers)
    fleet_.wave("populate-12", 12)
    fleet_.store.complete_wave("op", "populate-12")
    for name in Fleet.NAMES:
        report_installed(fleet_, name, 12)
    return fleet_


def test_queries_over_a_store_after_a_canceled_wave(fleet_: Fleet) -> None:
    fleet_.wave("w42", 42)
    fleet_.store.rollout("op", "w42", group="canary")
    report_installed(fleet_, "c1", 42)
    now = datetime.now(UTC)
    write_last_seen(
        fleet_.store.engine,
        {fleet_.uuids["c1"]: now, fleet_.uuids["u1"]: now - timedelta(hours=5)},
    )
    with fleet_.store.read() as conn:
        active = fleet_status(conn, now=now).to_dict()["tags"]
    assert [
        (r["tag"], r["wave"], r["devices"], r["on_latest"], r["on_orphan"]) for r in active
    ] == [
        ("production", None, 4, 4, 0),
        ("production", "w42", 2, 1, 0),
    ]
    fleet_.store.cancel_wave("op", "w42")
    with fleet_.store.read() as conn:
        report = fleet_status(conn, now=now).to_dict()
        by_threshold = fleet_status(conn, now=now, offline_threshold_hours=6).to_dict()
        waves = query_wave(conn, "w42", now=now).to_dict()
        default = query_wave(conn, None, now=now).to_dict()
    [row] = report["tags"]
    assert (row["devices"], row["on_latest"], row["on_orphan"], row["online"]) == (6, 5, 1, 1)
    assert by_threshold["tags"][0]["online"] == 2
    assert waves["status"] == "canceled"
    rows = {g["group"]: g for g in waves["groups"]}
    assert (rows["canary"]["updated"], rows["canary"]["scheduled"]) == (1, 1)
    assert rows["(No Group)"]["rollout_at"] == "Never (Wave Canceled)"
    assert default["name"] == "w42"  # no active wave: the newest one
    with fleet_.store.read() as conn, pytest.raises(StatusError, match="no wave named nope"):
        query_wave(conn, "nope", now=now)


def test_a_device_in_two_live_waves_counts_once_in_the_newest(fleet_: Fleet) -> None:
    fleet_.wave("w42", 42)
    fleet_.store.rollout("op", "w42", group="canary")
    fleet_.store.cancel_wave("op", "w42")
    fleet_.wave("w50", 50)
    fleet_.store.rollout("op", "w50", uuids=[fleet_.uuids["c1"], fleet_.uuids["u1"]])
    with fleet_.store.read() as conn:
        report = fleet_status(conn).to_dict()
        waves = query_wave(conn, None).to_dict()
    counts = {(r["tag"], r["wave"]): r["devices"] for r in report["tags"]}
    assert counts == {("production", None): 4, ("production", "w50"): 2}
    assert report["total_devices"] == 6
    assert waves["name"] == "w50"
    assert waves["devices_scheduled"] == 2


# --- API and CLI ------------------------------------------------------------------------------
@click.group()
@click.option("--url", envvar="WAVESIGN_URL", default=None)
@click.option("--token", envvar="WAVESIGN_TOKEN", default=None)
@click.pass_context
def root(ctx: click.Context, url: str | None, token: str | None) -> None:
    ctx.obj = {"url": url, "token": token}


@root.group()
def wave() -> None:
    pass


root.add_command(status)
root.add_command(fleet)
wave.add_command(wave_status)


def test_status_commands_over_the_api(fleet_: Fleet) -> None:
    fleet_.wave("w42", 42)
    fleet_.store.rollout("op", "w42", group="canary")
    report_installed(fleet_, "c1", 42)
    fleet_.store.cancel_wave("op", "w42")
    admin = (fleet_.data / "admin.token").read_text().strip()
    app = build_app(fleet_.data, FAST)
    app.api.include_router(status_router)
    runner = CliRunner()
    with served(app) as url:
        env = {"WAVESIGN_URL": url, "WAVESIGN_TOKEN": admin}
        text = runner.invoke(root, ["status"], env=env)
        assert text.exit_code == 0, text.output
        assert "production  12             6        5          1          0" in text.output
        as_json = runner.invoke(root, ["status", "--json"], env=env)
        assert json.loads(as_json.output)["tags"][0]["on_orphan"] == 1
        one = runner.invoke(root, ["wave", "status", "w42", "--json"], env=env)
        assert json.loads(one.output)["devices_updated"] == 1
        plain = runner.invoke(root, ["wave", "status"], env=env)
        assert plain.output.startswith("Wave 'w42' for tag 'production' version 42 is canceled")
        missing = runner.invoke(root, ["wave", "status", "nope"], env=env)
        assert missing.exit_code == 1
        assert str(missing.exception) == "no wave named nope"
        device = runner.invoke(root, ["status"], env={**env, "WAVESIGN_TOKEN": fleet_.tokens["c1"]})
        assert str(device.exception) == "a device token cannot use the operator API"
        simulated = runner.invoke(
            root,
            ["fleet", "simulate", "--devices", "20", "--groups", "canary:5%,eu:50%",
             "--tag", "beta", "--hardware-id", "hw", "--tokens-out", str(fleet_.data / "t.csv"),
             "--polls", "0"],
            env=env,
        )  # fmt: skip
        assert simulated.exit_code == 0, simulated.output
        assert "registered 20 devices on tag beta (canary: 1, eu: 10, (no group): 9)" in (
            simulated.output
        )
        assert (fleet_.data / "t.csv").stat().st_mode & 0o777 == 0o600
        after = runner.invoke(root, ["status", "--json"], env=env)
        beta = [r for r in json.loads(after.output)["tags"] if r["tag"] == "beta"]
        assert [(r["devices"], r["latest_target"]) for r in beta] == [(20, None)]

        # Polling: ngclient devices (full), then the lightweight poller, on production.
        root_file = fleet_.data / "pinned-root.json"
        root_file.write_bytes(fleet_.root)
        for verify, prefix in (("full", "ng"), ("light", "lw")):
            polled = runner.invoke(
                root,
                ["fleet", "simulate", "--devices", "4", "--groups", "eu:50%", "--tag",
                 "production", "--hardware-id", HW, "--prefix", prefix, "--verify", verify,
                 "--polls", "2", "--interval", "0", "--trusted-root", str(root_file)],
                env=env,
            )  # fmt: skip
            assert polled.exit_code == 0, polled.output
            lines = [line for line in polled.output.splitlines() if line.startswith("round")]
            assert lines == [
                f"round 1: polled 4 devices: 4 updated; running: 4 on {target(12)}",
                f"round 2: polled 4 devices: 0 updated; running: 4 on {target(12)}",
            ], polled.output
        reported = {d["name"]: d["current_target"] for d in fleet_.store.list_devices()}
        simulated_names = [n for n in reported if n.startswith(("ng-", "lw-"))]
        assert len(simulated_names) == 8
        assert all(reported[n] == target(12) for n in simulated_names)


def test_group_shares_parse_and_split() -> None:
    assert parse_group_shares("canary:5%,us-east-1:45%,eu:50%") == [
        ("canary", 5.0), ("us-east-1", 45.0), ("eu", 50.0),
    ]  # fmt: skip
    assert split_counts(7, [("a", 50.0), ("b", 50.0)]) == [("a", 4), ("b", 3)]
    assert split_counts(10, [("a", 30.0)]) == [("a", 3), (None, 7)]
    for bad, message in [
        ("canary", "is not GROUP:PERCENT%"),
        ("a:60%,b:50%", "more than 100%"),
        ("a:1%,a:2%", "given twice"),
    ]:
        with pytest.raises(SimulateError, match=message):
            parse_group_shares(bad)


def test_a_device_moved_out_of_a_rolled_out_group_stays_counted_in_the_wave(
    fleet_: Fleet,
) -> None:
    fleet_.wave("w42", 42)
    fleet_.store.rollout("op", "w42", group="canary")
    fleet_.store.move_device("op", fleet_.uuids["c2"], "us-east-1")
    fleet_.store.register_devices(
        "op", [{"name": "c3", "hardware_id": "hw", "tag": "production", "group": "canary"}]
    )
    with fleet_.store.read() as conn:
        report = fleet_status(conn).to_dict()
        waves = query_wave(conn, "w42").to_dict()
    counts = {(r["tag"], r["wave"]): r["devices"] for r in report["tags"]}
    # c1 and c3 (a later joiner of canary) by the group, c2 moved but kept.
    assert counts == {("production", None): 4, ("production", "w42"): 3}
    rows = {g["group"]: g for g in waves["groups"]}
    assert (rows["canary"]["total"], rows["canary"]["scheduled"]) == (2, 2)
    assert (rows["us-east-1"]["total"], rows["us-east-1"]["scheduled"]) == (3, 1)
    assert rows["us-east-1"]["rollout_at"] == rows["canary"]["rollout_at"]
    assert rows["(No Group)"]["rollout_at"] == "At Wave Completion"
    assert waves["devices_scheduled"] == 3
