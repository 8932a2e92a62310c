"""The reference device agent: pure choice/event logic, then polls against a real server.

The server (tests/tuf_repo_server.py) is a real ThreadingHTTPServer serving a real
python-tuf repository; the agent verifies it with ngclient.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from wavesign.online.device_agent import (
    EVENT_TYPES,
    DeviceState,
    StateFolder,
    choose_target,
    install_events,
    main,
    target_version,
)
from wavesign.shared.strictjson import JSONInputError

from tests.tuf_repo_server import Release, TufRepo, serve

HW = "raspberrypi4-64"
OTHER_HW = "intel-corei7-64"
TOKEN = "device-token-0123456789"


# --- pure: choosing a target ----------------------------------------------------------


def custom(version: Any, hw: list[str] | None = None, tags: list[str] | None = None, **extra: Any):
    return {
        "version": version,
        "hardwareIds": [HW] if hw is None else hw,
        "tags": ["production"] if tags is None else tags,
        **extra,
    }


def test_choose_picks_the_highest_integer_version_for_hardware_and_tag() -> None:
    targets = {
        "lmp-9": custom("9"),
        "lmp-12": custom("12"),  # "12" > "9" only as integers
        "lmp-100-other-hw": custom("100", hw=[OTHER_HW]),
        "lmp-99-other-tag": custom("99", tags=["devel"]),
        "lmp-98-docker": custom("98", targetFormat="BINARY"),
        "lmp-97-bad-version": custom("97a"),
        "lmp-96-float": custom(96.0),
        "lmp-95-no-hw": {"version": "95", "tags": ["production"]},
    }
    assert choose_target(targets, HW, "production", None) == ("lmp-12", 12)
    assert choose_target(targets, OTHER_HW, "production", None) == ("lmp-100-other-hw", 100)
    assert choose_target(targets, HW, "devel", None) == ("lmp-99-other-tag", 99)


def test_choose_accepts_integer_versions_and_explicit_ostree() -> None:
    targets = {"a": custom(7, targetFormat="OSTREE"), "b": custom("6")}
    assert choose_target(targets, HW, "production", 3) == ("a", 7)


def test_choose_never_goes_down_or_reinstalls() -> None:
    targets = {"lmp-12": custom("12"), "lmp-9": custom("9")}
    assert choose_target(targets, HW, "production", 12) is None
    assert choose_target(targets, HW, "production", 42) is None
    assert choose_target(targets, HW, "production", 11) == ("lmp-12", 12)


def test_choose_with_nothing_for_the_device() -> None:
    assert choose_target({}, HW, "production", None) is None
    assert choose_target({"x": custom("5", hw=[OTHER_HW])}, HW, "production", None) is None


def test_choose_breaks_version_ties_by_name() -> None:
    targets = {"lmp-b-12": custom("12"), "lmp-a-12": custom("12")}
    assert choose_target(targets, HW, "production", None) == ("lmp-a-12", 12)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("42", 42),
        (42, 42),
        ("0", 0),
        ("4 2", None),
        ("-1", None),
        (True, None),
        (None, None),
        ("\u0664\u0662", None),
    ],
)
def test_target_version(value: Any, expected: int | None) -> None:
    assert target_version({"version": value}) == expected


def test_install_events_in_order_with_one_correlation_id() -> None:
    times = ["2026-12-03T16:00:00Z", "2026-12-03T16:00:01Z", "2026-12-03T16:00:02Z",
             "2026-12-03T16:00:03Z"]  # fmt: skip
    events = install_events("lmp-42", 42, "cid-1", times)
    assert events == [
        {"type": t, "target": "lmp-42", "version": 42, "correlation_id": "cid-1", "time": at}
        for t, at in zip(
            ["download-started", "download-completed", "install-started", "install-completed"],
            times,
            strict=True,
        )
    ]
    with pytest.raises(ValueError, match="need 4 event times"):
        install_events("lmp-42", 42, "cid-1", times[:2])


def test_device_state_round_trip_and_strictness() -> None:
    state = DeviceState(HW, "production")
    events = install_events("lmp-42", 42, "cid", ["t"] * 4)
    installed = state.installed("lmp-42", 42, events, 3)
    assert installed.current_target == "lmp-42"
    assert installed.history[-1]["previous"] is None
    assert installed.pending_events == events
    assert state.current_target is None  # the old state is untouched
    again = DeviceState.from_dict(json.loads(installed.to_bytes()))
    assert again == installed
    with pytest.raises(JSONInputError, match="unknown field 'surprise'"):
        DeviceState.from_dict({**installed.to_dict(), "surprise": 1})
    with pytest.raises(JSONInputError, match="current_target and current_version go together"):
        DeviceState.from_dict({**installed.to_dict(), "current_version": None})


# --- against a real server --------------------------------------------------------------


@pytest.fixture()
def repo() -> TufRepo:
    repo = TufRepo.create()
    repo.publish(
        [
            Release(f"{HW}-lmp-12", 12, (HW,)),
            Release(f"{HW}-lmp-9", 9, (HW,)),
            Release(f"{OTHER_HW}-lmp-50", 50, (OTHER_HW,)),
        ],
        version=1,
    )
    return repo


def poll(
    capsys: pytest.CaptureFixture[str], url: str, state: Path, *extra: str, token: str = TOKEN
) -> tuple[int, Any, str]:
    """Run `wavesign-device poll --json` in-process; return (exit code, JSON, stderr)."""
    argv = ["poll", "--url", url, "--token", token, "--state", str(state), "--json", *extra]
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 and out.strip() else out), err


def first_poll_args(repo: TufRepo, tmp_path: Path) -> list[str]:
    root = tmp_path / "1.root.json"
    root.write_bytes(repo.root_bytes)
    return ["--hardware-id", HW, "--tag", "production", "--bootstrap-root", str(root)]


def device_json(state: Path) -> dict[str, Any]:
    return json.loads((state / "device.json").read_bytes())


def snapshot_tree(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_first_poll_installs_the_highest_version_and_reports_events(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    with serve(repo, TOKEN) as server:
        code, result, err = poll(capsys, server.url, state, *first_poll_args(repo, tmp_path))
    assert code == 0, err
    assert err == ""
    assert result["updated"] is True
    assert result["target"] == f"{HW}-lmp-12"
    assert result["version"] == 12
    assert result["previous"] is None
    assert result["targets_version"] == 1
    assert result["events_pending"] == 0

    stored = device_json(state)
    assert stored["hardware_id"] == HW
    assert stored["tag"] == "production"
    assert stored["current_target"] == f"{HW}-lmp-12"
    assert stored["current_version"] == 12
    assert stored["pending_events"] == []
    assert [h["target"] for h in stored["history"]] == [f"{HW}-lmp-12"]

    assert len(server.events) == 1
    batch = server.events[0]
    assert [e["type"] for e in batch] == list(EVENT_TYPES)
    assert {e["correlation_id"] for e in batch} == {result["correlation_id"]}
    assert all(e["target"] == f"{HW}-lmp-12" and e["version"] == 12 for e in batch)
    for event in batch:
        datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%SZ")
    # Every request carried the token (no 401 anywhere) and the metadata was TUF's.
    assert all(status != 401 for _, _, status in server.requests)
    paths = [path for method, path, _ in server.requests if method == "GET"]
    assert "/device/v1/repo/timestamp.json" in paths
    assert "/device/v1/repo/1.snapshot.json" in paths
    assert "/device/v1/repo/1.targets.json" in paths
    assert (state / "metadata" / "root.json").exists()


def test_second_poll_with_nothing_new_does_not_reinstall(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    with serve(repo, TOKEN) as server:
        assert poll(capsys, server.url, state, *first_poll_args(repo, tmp_path))[0] == 0
        before = (state / "device.json").read_bytes()
        code, result, err = poll(capsys, server.url, state)
    assert code == 0, err
    assert result["updated"] is False
    assert result["target"] == f"{HW}-lmp-12"
    assert result["version"] == 12
    assert (state / "device.json").read_bytes() == before
    assert len(server.events) == 1


def test_a_new_targets_version_with_a_higher_target_is_installed(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    with serve(repo, TOKEN) as server:
        poll(capsys, server.url, state, *first_poll_args(repo, tmp_path))
        repo.publish(
            [Release(f"{HW}-lmp-12", 12, (HW,)), Release(f"{HW}-lmp-42", 42, (HW,))], version=2
        )
        code, result, err = poll(capsys, server.url, state)
    assert code == 0, err
    assert result["updated"] is True
    assert (result["target"], result["version"]) == (f"{HW}-lmp-42", 42)
    assert result["previous"] == f"{HW}-lmp-12"
    assert result["targets_version"] == 2
    stored = device_json(state)
    assert stored["current_version"] == 42
    assert [h["version"] for h in stored["history"]] == [12, 42]
    assert server.event_types() == list(EVENT_TYPES) * 2
    first_ids = {e["correlation_id"] for e in server.events[0]}
    second_ids = {e["correlation_id"] for e in server.events[1]}
    assert len(first_ids) == 1 and len(second_ids) == 1 and first_ids != second_ids


def test_an_unchanged_timestamp_is_answered_with_304_and_verified_again(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    timestamp = "/device/v1/repo/timestamp.json"

    def timestamp_statuses() -> list[int]:
        return [status for _, path, status in server.requests if path == timestamp]

    with serve(repo, TOKEN) as server:
        poll(capsys, server.url, state, *first_poll_args(repo, tmp_path))
        code, result, err = poll(capsys, server.url, state)
        assert code == 0, err
        assert result["updated"] is False and result["targets_version"] == 1
        assert timestamp_statuses() == [200, 304]

        repo.publish([Release(f"{HW}-lmp-42", 42, (HW,))], version=2)
        code, result, err = poll(capsys, server.url, state)
        assert code == 0, err
        assert result["version"] == 42
        assert timestamp_statuses() == [200, 304, 200]

        # A damaged local copy is never served to ngclient on a 304: fetch in full.
        (state / "metadata" / "timestamp.json").write_bytes(b"{}")
        code, result, err = poll(capsys, server.url, state)
        assert code == 0, err
        assert timestamp_statuses() == [200, 304, 200, 200]
        code, result, err = poll(capsys, server.url, state)
        assert code == 0, err
        assert timestamp_statuses() == [200, 304, 200, 200, 304]

        # A timestamp that expires while the server still calls it current: the 304
        # hands ngclient the kept copy, and the freeze check refuses it.
        soon = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
        repo.publish([Release(f"{HW}-lmp-42", 42, (HW,))], version=3, timestamp_expires=soon)
        assert poll(capsys, server.url, state)[0] == 0
        while datetime.now(UTC) <= soon:
            time.sleep(0.2)
        code, _, err = poll(capsys, server.url, state)
    assert code == 1
    assert err.startswith("error: TUF metadata expired: timestamp.json is expired")
    assert timestamp_statuses()[-2:] == [200, 304]


def test_targets_for_another_hardware_id_or_tag_are_ignored(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    with serve(repo, TOKEN) as server:
        poll(capsys, server.url, state, *first_poll_args(repo, tmp_path))
        repo.publish(
            [
                Release(f"{HW}-lmp-12", 12, (HW,)),
                Release(f"{OTHER_HW}-lmp-70", 70, (OTHER_HW,)),
                Release(f"{HW}-lmp-80-devel", 80, (HW,), tags=("devel",)),
                Release(f"{HW}-lmp-90-docker", 90, (HW,), target_format="BINARY"),
            ],
            version=2,
        )
        code, result, err = poll(capsys, server.url, state)
    assert code == 0, err
    assert result["updated"] is False
    assert result["targets_version"] == 2
    assert device_json(state)["current_target"] == f"{HW}-lmp-12"
    assert len(server.events) == 1


def test_never_downgrades_when_a_higher_targets_version_lists_lower_builds(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    with serve(repo, TOKEN) as server:
        poll(capsys, server.url, state, *first_poll_args(repo, tmp_path))
        # A canceled wave's revert payload: higher targets version, only older builds.
        repo.publish([Release(f"{HW}-lmp-9", 9, (HW,))], version=3)
        before = (state / "device.json").read_bytes()
        code, result, err = poll(capsys, server.url, state)
    assert code == 0, err
    assert result["updated"] is False
    assert result["targets_version"] == 3
    assert (result["target"], result["version"]) == (f"{HW}-lmp-12", 12)
    assert (state / "device.json").read_bytes() == before


def test_targets_with_one_of_two_signatures_is_refused(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    with serve(repo, TOKEN) as server:
        poll(capsys, server.url, state, *first_poll_args(repo, tmp_path))
        repo.publish(
            [Release(f"{HW}-lmp-42", 42, (HW,))], version=2, signers=repo.targets_signers[:1]
        )
        before = (state / "device.json").read_bytes()
        code, out, err = poll(capsys, server.url, state)
    assert code == 1
    assert out == ""
    assert err.startswith("error: TUF signature check failed: ")
    assert "targets was signed by 1/2 keys" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert (state / "device.json").read_bytes() == before
    assert len(server.events) == 1


def test_a_rollback_of_the_targets_version_is_refused(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    with serve(repo, TOKEN) as server:
        repo.publish([Release(f"{HW}-lmp-12", 12, (HW,))], version=5)
        poll(capsys, server.url, state, *first_poll_args(repo, tmp_path))
        repo.publish([Release(f"{HW}-lmp-42", 42, (HW,))], version=4)
        before = (state / "device.json").read_bytes()
        code, _, err = poll(capsys, server.url, state)
    assert code == 1
    assert err.startswith(
        "error: TUF rollback refused: the broker served older metadata than this device "
        "already trusts (Expected targets.json version 4, got 5)"
    )
    assert err.count("\n") == 1
    assert (state / "device.json").read_bytes() == before
    assert device_json(state)["current_version"] == 12


def test_expired_timestamp_is_refused(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    with serve(repo, TOKEN) as server:
        poll(capsys, server.url, state, *first_poll_args(repo, tmp_path))
        past = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
        repo.publish([Release(f"{HW}-lmp-42", 42, (HW,))], version=2, timestamp_expires=past)
        before = (state / "device.json").read_bytes()
        code, _, err = poll(capsys, server.url, state)
    assert code == 1
    assert err.startswith("error: TUF metadata expired: ")
    assert (state / "device.json").read_bytes() == before


def test_wrong_token_is_refused_and_leaves_nothing_behind(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    with serve(repo, TOKEN) as server:
        code, _, err = poll(
            capsys, server.url, state, *first_poll_args(repo, tmp_path), token="not-the-token"
        )
        assert code == 1
        assert err.startswith("error: the broker refused the device token (HTTP 401)")
        assert snapshot_tree(state) == {}  # no trust anchor, no device.json

        assert poll(capsys, server.url, state, *first_poll_args(repo, tmp_path))[0] == 0
        before = snapshot_tree(state)
        code, _, err = poll(capsys, server.url, state, token="stolen")
    assert code == 1
    assert "HTTP 401" in err
    assert snapshot_tree(state) == before
    assert len(server.events) == 1


def test_a_pinned_root_that_does_not_match_the_server_is_refused(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = TufRepo.create()
    pinned = tmp_path / "other-root.json"
    pinned.write_bytes(other.root_bytes)
    state = tmp_path / "state"
    with serve(repo, TOKEN) as server:
        code, _, err = poll(
            capsys, server.url, state, "--hardware-id", HW, "--tag", "production",
            "--bootstrap-root", str(pinned),
        )  # fmt: skip
    assert code == 1
    assert err.startswith("error: TUF signature check failed: ")
    assert "timestamp" in err
    assert snapshot_tree(state) == {}
    assert server.events == []


def test_first_poll_needs_an_identity_and_later_flags_must_match(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    with serve(repo, TOKEN) as server:
        code, _, err = poll(capsys, server.url, state)
        assert code == 1
        assert "the first poll needs --hardware-id and --tag" in err
        poll(capsys, server.url, state, *first_poll_args(repo, tmp_path))
        before = snapshot_tree(state)
        code, _, err = poll(capsys, server.url, state, "--hardware-id", OTHER_HW)
        assert code == 1
        assert f"is for hardware id {HW!r}, not {OTHER_HW!r}" in err
        code, _, err = poll(capsys, server.url, state, "--tag", "devel")
        assert code == 1
        assert "is for tag 'production', not 'devel'" in err
    assert snapshot_tree(state) == before


def test_no_install_reports_the_update_and_changes_nothing(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    with serve(repo, TOKEN) as server:
        poll(capsys, server.url, state, *first_poll_args(repo, tmp_path))
        repo.publish([Release(f"{HW}-lmp-42", 42, (HW,))], version=2)
        before = (state / "device.json").read_bytes()
        code, result, err = poll(capsys, server.url, state, "--no-install")
    assert code == 0, err
    assert result["updated"] is False
    assert result["available"] == f"{HW}-lmp-42"
    assert result["target"] == f"{HW}-lmp-12"
    assert (state / "device.json").read_bytes() == before
    assert len(server.events) == 1


def test_no_install_on_the_first_poll_keeps_no_trust_anchor(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    with serve(repo, TOKEN) as server:
        code, result, err = poll(
            capsys, server.url, state, *first_poll_args(repo, tmp_path), "--no-install"
        )
    assert code == 0, err
    assert result["available"] == f"{HW}-lmp-12"
    assert result["target"] is None
    assert snapshot_tree(state) == {}
    assert server.events == []


def test_a_corrupt_device_json_is_refused_and_left_alone(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    with serve(repo, TOKEN) as server:
        poll(capsys, server.url, state, *first_poll_args(repo, tmp_path))
        (state / "device.json").write_bytes(b'{"hardware_id": "x", "hardware_id": "y"}')
        before = snapshot_tree(state)
        code, _, err = poll(capsys, server.url, state)
    assert code == 1
    assert err == f"error: {state / 'device.json'}: duplicate JSON key 'hardware_id'\n"
    assert snapshot_tree(state) == before


def test_two_polls_on_one_state_folder_do_not_run_at_once(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    with serve(repo, TOKEN) as server:
        poll(capsys, server.url, state, *first_poll_args(repo, tmp_path))
        before = snapshot_tree(state)
        with StateFolder(state).locked():
            code, _, err = poll(capsys, server.url, state)
    assert code == 1
    assert err == f"error: another poll is running on {state}\n"
    assert snapshot_tree(state) == before


def test_events_that_cannot_be_delivered_stay_queued(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    with serve(repo, TOKEN) as server:
        poll(capsys, server.url, state, *first_poll_args(repo, tmp_path))
        repo.publish([Release(f"{HW}-lmp-42", 42, (HW,))], version=2)
        server.refuse_events = True
        code, result, err = poll(capsys, server.url, state)
        assert code == 0, err
        assert result["updated"] is True and result["events_pending"] == 4
        assert err.startswith("warning: 4 events not reported yet (")
        assert "HTTP 503" in err
        queued = device_json(state)["pending_events"]
        assert [e["type"] for e in queued] == list(EVENT_TYPES)
        assert device_json(state)["current_version"] == 42

        server.refuse_events = False
        code, result, err = poll(capsys, server.url, state)
    assert code == 0, err
    assert result["updated"] is False and result["events_pending"] == 0
    assert server.events[-1] == queued
    assert device_json(state)["pending_events"] == []


def test_the_cli_runs_as_a_subprocess_with_trust_on_first_use(
    repo: TufRepo, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    env = {**os.environ, "WAVESIGN_DEVICE_TOKEN": TOKEN}
    with serve(repo, TOKEN) as server:
        command = [
            sys.executable, "-m", "wavesign.online.device_agent", "poll",
            "--url", server.url, "--state", str(state), "--hardware-id", HW,
            "--tag", "production",
        ]  # fmt: skip
        first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        assert first.returncode == 0, first.stderr
        assert first.stdout == (f"installed {HW}-lmp-12 (version 12, was nothing); targets v1\n")
        assert first.stderr.startswith("warning: trusting ")
        assert "1.root.json on first use" in first.stderr
        assert (state / "metadata" / "root_history" / "1.root.json").read_bytes() == (
            repo.root_bytes
        )

        repo.publish([Release(f"{HW}-lmp-12", 12, (HW,))], version=2, signers=[])
        refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr.startswith("error: TUF signature check failed: ")
    assert refused.stderr.count("\n") == 1
    assert server.event_types() == list(EVENT_TYPES)


def test_loop_polls_count_times_and_goes_on_after_an_error(
    repo: TufRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    with serve(repo, TOKEN) as server:
        poll(capsys, server.url, state, *first_poll_args(repo, tmp_path))
        repo.publish([Release(f"{HW}-lmp-42", 42, (HW,))], version=2, signers=[])
        code, _out, err = poll(
            capsys, server.url, state, "--loop", "--interval", "0", "--count", "2"
        )
    assert code == 0
    assert err.count("error: TUF signature check failed: ") == 2
    assert device_json(state)["current_version"] == 12
