"""Rollout device selection (pure): fioctl's ``wave rollout`` rules."""

from __future__ import annotations

import random
from typing import Any

import pytest
from wavesign.online.rollout import (
    DeviceRef,
    RolloutError,
    RolloutLimit,
    RolloutSelection,
    ensure_rollout_allowed,
    parse_limit,
    parse_uuids,
    parse_uuids_option,
    select_rollout,
)


def fleet() -> list[DeviceRef]:
    """3 canary, 5 us-east-1, 2 without group on "production"; 2 canary on "devel"."""
    devices = [
        DeviceRef("canary-1", "production", "canary", "2026-12-03T10:00:00Z"),
        DeviceRef("canary-2", "production", "canary", "2026-12-03T11:00:00Z"),
        DeviceRef("canary-3", "production", "canary", None),
        DeviceRef("devel-1", "devel", "canary", "2026-12-03T11:30:00Z"),
        DeviceRef("devel-2", "devel", "canary", None),
        DeviceRef("lone-1", "production", None, "2026-12-01T00:00:00Z"),
        DeviceRef("lone-2", "production", None, None),
    ]
    devices += [
        DeviceRef(f"east-{i}", "production", "us-east-1", f"2026-12-0{i}T00:00:00Z")
        for i in range(1, 6)
    ]
    return devices


def select(**kwargs: Any) -> RolloutSelection:
    args: dict[str, Any] = {"tag": "production", "already_in_wave": set()}
    args.update(kwargs)
    return select_rollout(fleet(), **args)


# ------------------------------------------------------------------ groups


def test_a_full_group_rollout_reaches_the_groups_devices_on_the_tag() -> None:
    selection = select(group="canary")
    assert selection.full_group is True
    assert selection.group == "canary"
    # Recently seen first, the never-seen device last; devel's canaries are not on the tag.
    assert selection.uuids == ("canary-2", "canary-1", "canary-3")
    assert selection.message == "A Wave is being rolled out to 3 devices in group canary."
    assert selection.note == "It will also be rolled out to all new devices in group canary."
    assert selection.device_count == 3


def test_devices_already_rolled_out_to_are_skipped() -> None:
    selection = select(group="canary", already_in_wave={"canary-2", "east-1"})
    assert selection.uuids == ("canary-1", "canary-3")
    assert selection.message == "A Wave is being rolled out to 2 devices in group canary."


def test_a_full_group_rollout_may_reach_nobody_yet() -> None:
    # An empty group, or one already covered: later joiners still get the wave.
    selection = select(group="canary", already_in_wave={"canary-1", "canary-2", "canary-3"})
    assert selection.uuids == ()
    assert selection.full_group is True
    assert selection.message == "A Wave is being rolled out to 0 devices in group canary."
    empty = select(group="eu-west")
    assert empty.uuids == () and empty.full_group is True


def test_one_of_group_limit_uuids_is_required() -> None:
    with pytest.raises(RolloutError) as caught:
        select()
    assert str(caught.value) == "One of the following flags must be set: group, limit, uuids"


# ------------------------------------------------------------------ limits


def test_limit_n_takes_the_most_recently_seen_devices() -> None:
    selection = select(group="us-east-1", limit="2")
    assert selection.full_group is False
    assert selection.note is None
    assert selection.uuids == ("east-5", "east-4")
    assert selection.message == "A Wave is being rolled out to 2 devices in group us-east-1."


def test_limit_without_group_draws_from_the_whole_tag() -> None:
    selection = select(limit="3")
    assert selection.group is None
    assert selection.uuids == ("east-5", "east-4", "canary-2")
    assert selection.message == "A Wave is being rolled out to 3 devices."


def test_limit_percent_counts_devices_already_rolled_out_to() -> None:
    # 40 % of 5 matching devices = 2, each call: the rollout advances by 2 devices.
    first = select(group="us-east-1", limit="40%")
    assert first.uuids == ("east-5", "east-4")
    second = select(group="us-east-1", limit="40%", already_in_wave=set(first.uuids))
    assert second.uuids == ("east-3", "east-2")
    third = select(group="us-east-1", limit="40%", already_in_wave=set(first.uuids + second.uuids))
    assert third.uuids == ("east-1",)


def test_limit_percent_rounds_down_and_refuses_an_empty_selection() -> None:
    assert select(group="canary", limit="66%").uuids == ("canary-2",)  # 1.98 -> 1
    with pytest.raises(RolloutError) as caught:
        select(group="canary", limit="10%")
    assert str(caught.value) == "--limit 10% of 3 matching devices selects no device"


def test_limit_accepts_a_parsed_limit() -> None:
    assert select(group="canary", limit=RolloutLimit(count=1)).uuids == ("canary-2",)


def test_more_than_the_maximum_is_refused_unless_the_whole_group() -> None:
    with pytest.raises(RolloutError) as caught:
        select(limit="100%", max_devices=4)
    assert str(caught.value) == (
        "This rollout would reach 10 devices, more than the 4 allowed per call: use --limit 4 "
        "(or a smaller percentage) and roll out in several steps"
    )
    assert len(select(group="us-east-1", max_devices=4).uuids) == 5


def test_the_10000_device_cap_at_full_scale() -> None:
    devices = [DeviceRef(f"d-{i:05d}", "production", "big") for i in range(10_001)]
    with pytest.raises(RolloutError, match="would reach 10001 devices, more than the 10000"):
        select_rollout(devices, tag="production", already_in_wave=set(), limit="100%")
    capped = select_rollout(devices, tag="production", already_in_wave=set(), limit="10000")
    assert len(capped.uuids) == 10_000
    assert capped.uuids[0] == "d-00000" and capped.uuids[-1] == "d-09999"
    whole = select_rollout(devices, tag="production", already_in_wave=set(), group="big")
    assert len(whole.uuids) == 10_001 and whole.full_group


def test_selection_does_not_depend_on_candidate_order() -> None:
    devices = fleet()
    expected = select_rollout(devices, tag="production", already_in_wave=set(), limit="6")
    for seed in range(5):
        shuffled = devices[:]
        random.Random(seed).shuffle(shuffled)
        again = select_rollout(shuffled, tag="production", already_in_wave=set(), limit="6")
        assert again == expected
    assert expected.uuids == ("east-5", "east-4", "canary-2", "canary-1", "east-3", "east-2")
    # Equal last_seen, and never seen (last): by uuid.
    every = select_rollout(devices, tag="production", already_in_wave=set(), limit="10")
    assert every.uuids[-4:] == ("east-1", "lone-1", "canary-3", "lone-2")


# ------------------------------------------------------------------ uuids


def test_uuids_are_checked_and_taken_in_the_given_group() -> None:
    selection = select(group="canary", uuids=["canary-3", "canary-1", "canary-3"])
    assert selection.uuids == ("canary-1", "canary-3")
    assert selection.full_group is False
    assert selection.message == "A Wave is being rolled out to 2 devices in group canary."


def test_uuids_with_a_limit() -> None:
    selection = select(uuids=["lone-2", "lone-1", "east-1"], limit="2")
    assert selection.uuids == ("east-1", "lone-1")
    assert selection.message == "A Wave is being rolled out to 2 devices."


@pytest.mark.parametrize(
    ("uuids", "group", "message"),
    [
        (["canary-1", "ghost"], None, "Device ghost not found"),
        (["devel-1"], None, "Device devel-1 is on tag devel, not on the wave's tag production"),
        (["east-1"], "canary", "Device east-1 is not in group canary"),
        ([], None, "The device uuids list is empty"),
    ],
)
def test_bad_uuids_are_refused(uuids: list[str], group: str | None, message: str) -> None:
    with pytest.raises(RolloutError) as caught:
        select(uuids=uuids, group=group)
    assert str(caught.value) == message


def test_uuids_all_rolled_out_already_is_refused() -> None:
    with pytest.raises(RolloutError) as caught:
        select(uuids=["lone-1", "lone-2"], already_in_wave={"lone-1", "lone-2"})
    assert str(caught.value) == "The wave was already rolled out to all 2 matching devices"


def test_a_limit_on_a_tag_without_devices_is_refused() -> None:
    with pytest.raises(RolloutError) as caught:
        select_rollout(fleet(), tag="staging", already_in_wave=set(), limit="5")
    assert str(caught.value) == "No devices on tag staging match this rollout"


def test_dry_run_messages() -> None:
    full = select(group="canary", dry_run=True)
    assert full.message == "A Wave would be rolled out to 3 devices in group canary."
    assert full.note == "It would also be rolled out to all new devices in group canary."
    assert select(limit="1", dry_run=True).message == "A Wave would be rolled out to 1 devices."


# ------------------------------------------------------------------ parsing


def test_parse_limit() -> None:
    assert parse_limit("10") == RolloutLimit(count=10)
    assert parse_limit(" 25% ") == RolloutLimit(percent=25)
    assert parse_limit("10000") == RolloutLimit(count=10_000)
    assert str(parse_limit("7%")) == "7%"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc", 'A "limit" must be either a number or a percentage: abc'),
        ("-1", 'A "limit" must be either a number or a percentage: -1'),
        ("1.5", 'A "limit" must be either a number or a percentage: 1.5'),
        ("0", "A limit must be at least 1 device: 0"),
        ("0%", "A percentage limit must be between 1% and 100%: 0%"),
        ("101%", "A percentage limit must be between 1% and 100%: 101%"),
        ("10001", "A limit cannot exceed 10000 devices per rollout: 10001"),
    ],
)
def test_parse_limit_refusals(text: str, message: str) -> None:
    with pytest.raises(RolloutError) as caught:
        parse_limit(text)
    assert str(caught.value) == message


def test_parse_uuids_uses_fioctls_separators() -> None:
    text = "a,b;c|d e\tf\ng\r\nh,,  ,a"
    assert parse_uuids(text) == ("a", "b", "c", "d", "e", "f", "g", "h")


def test_parse_uuids_refusals() -> None:
    with pytest.raises(RolloutError) as caught:
        parse_uuids("ok," + "x" * 61)
    assert str(caught.value) == "Device uuid value is too long, limit is 60: " + "x" * 61
    with pytest.raises(RolloutError) as caught:
        parse_uuids("y" * 120)
    assert str(caught.value) == (
        "Device uuid value is too long, limit is 60: " + "y" * 100 + "... (cropped)"
    )
    with pytest.raises(RolloutError) as caught:
        parse_uuids(",".join(f"u{i}" for i in range(10_001)))
    assert str(caught.value) == "Device uuids list contains 10001 items, limit is 10000"
    with pytest.raises(RolloutError, match="The device uuids list is empty"):
        parse_uuids(" , ;\n")


def test_parse_uuids_option_reads_at_files_through_the_caller() -> None:
    files = {"list.txt": "u1\nu2\n", "empty.txt": "\n"}
    assert parse_uuids_option("@list.txt", files.__getitem__) == ("u1", "u2")
    assert parse_uuids_option("u3,u4", files.__getitem__) == ("u3", "u4")
    with pytest.raises(RolloutError) as caught:
        parse_uuids_option("@empty.txt", files.__getitem__)
    assert str(caught.value) == "Devices UUIDs file cannot be empty"
    with pytest.raises(RolloutError, match="needs a file name"):
        parse_uuids_option("@", files.__getitem__)


# ------------------------------------------------------------------ status, round trips


def test_only_an_active_wave_can_be_rolled_out() -> None:
    ensure_rollout_allowed("v2.0-update", "active")
    with pytest.raises(RolloutError) as caught:
        ensure_rollout_allowed("v2.0-update", "awaiting-signatures")
    assert str(caught.value) == (
        "Wave v2.0-update is awaiting signatures: import the offline signatures "
        "(wavesign requests import) before rolling it out"
    )
    for status in ("canceled", "complete"):
        with pytest.raises(RolloutError) as caught:
            ensure_rollout_allowed("v2.0-update", status)
        assert str(caught.value) == (
            f"Wave v2.0-update is {status}: only an active wave can be rolled out"
        )


def test_round_trips() -> None:
    device = DeviceRef("u1", "production", "canary", "2026-12-03T10:00:00Z")
    assert DeviceRef.from_dict(device.to_dict()) == device
    selection = select(group="canary")
    data = selection.to_dict()
    assert data["device_count"] == 3
    assert RolloutSelection.from_dict(data) == selection
