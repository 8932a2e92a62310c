"""The signing policy as pure functions over data: no files, no clock, no GnuPG."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from wavesign.offline.policy import (
    check_already_signed,
    check_expiry,
    check_renew,
    check_revert,
    check_target_entries,
    check_unchanged_fields,
    check_versions,
    warn_missing_production,
)
from wavesign.shared.bundles import Context, Payload

from tests.bundle_builders import ci_target, wave_request

NOW = datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)


def _target(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "length": 10,
        "hashes": {"sha256": "ab" * 32},
        "custom": {"hardwareIds": ["rpi4"], "version": "42"},
    }
    for key, value in changes.items():
        if key in ("hardwareIds", "version"):
            entry["custom"][key] = value
        elif key == "sha256":
            entry["hashes"]["sha256"] = value
        else:
            entry[key] = value
    return entry


def _targets(version: int, targets: dict[str, Any]) -> dict[str, Any]:
    return {
        "_type": "targets",
        "spec_version": "1.0.31",
        "version": version,
        "expires": "2026-12-01T00:00:00Z",
        "targets": targets,
    }


@pytest.mark.parametrize(
    ("expires", "reason"),
    [
        ("2026-06-01T11:59:59Z", "is in the past"),
        ("2027-07-07T12:00:01Z", "beyond the policy maximum of 400 days"),
        ("2026-06-01", "is not YYYY-MM-DDTHH:MM:SSZ"),
    ],
)
def test_expiry_refusals(expires: str, reason: str) -> None:
    (message,) = check_expiry("wave", {"expires": expires}, NOW, 400)
    assert reason in message


def test_expiry_inside_the_window_passes() -> None:
    assert check_expiry("wave", {"expires": "2027-07-06T12:00:00Z"}, NOW, 400) == []


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"sha256": "AB" * 32}, "has no valid sha256"),
        ({"sha256": "ab" * 31}, "has no valid sha256"),
        ({"length": -1}, "missing or negative length"),
        ({"length": True}, "missing or negative length"),
        ({"hardwareIds": []}, "has no hardwareIds"),
        ({"version": ""}, "has no custom.version"),
    ],
)
def test_malformed_targets_each_have_a_reason(changes: dict[str, Any], reason: str) -> None:
    (message,) = check_target_entries("wave", _targets(2, {"t-42": _target(**changes)}))
    assert "target 't-42'" in message and reason in message


def test_versions_must_rise_above_everything_signed_for_the_tag() -> None:
    payload = Payload.create("wave", "targets", _targets(7, {}), ["cd" * 32])
    assert check_versions([payload], [3, 7, 5], "production") == [
        "payload wave: version 7 is not above version 7, which this appliance already "
        "signed for tag production (rollback)"
    ]
    assert check_versions([payload], [3, 6], "production") == []


def test_revert_must_equal_production_at_a_higher_version() -> None:
    production = _targets(1, {"t-12": _target(version="12")})
    wave = _targets(2, {"t-12": _target(version="12"), "t-42": _target()})
    assert check_revert(wave, _targets(3, {"t-12": _target(version="12")}), production) == []
    assert check_revert(wave, _targets(3, {}), production) == [
        "revert payload drops production target 't-12'"
    ]
    changed = _targets(3, {"t-12": _target(version="13")})
    assert check_revert(wave, changed, production) == [
        "revert payload changes production target 't-12'"
    ]
    low = _targets(2, {"t-12": _target(version="12")})
    assert check_revert(wave, low, production) == [
        "revert payload version 2 is not above the wave's 2"
    ]


def test_renewal_keeps_content_and_raises_version() -> None:
    production = _targets(4, {"t-12": _target(version="12")})
    assert check_renew(_targets(5, {"t-12": _target(version="12")}), production) == []
    assert "does not carry exactly" in check_renew(_targets(5, {}), production)[0]
    assert (
        "not above production version 4"
        in check_renew(_targets(4, {"t-12": _target(version="12")}), production)[0]
    )


def test_only_version_expiry_and_targets_may_change() -> None:
    production = _targets(1, {})
    wave = dict(_targets(2, {"x": _target()}), spec_version="1.0.0")
    assert check_unchanged_fields("wave", wave, production) == [
        "payload wave changes 'spec_version', which only a new root may change"
    ]


def test_already_signed_needs_again() -> None:
    assert check_already_signed(True, False)
    assert check_already_signed(True, True) == []
    assert check_already_signed(False, False) == []


def test_a_first_wave_after_signed_ones_is_signable_but_warned() -> None:
    with_production, _base = wave_request(
        {"t-12": ci_target("t-12", 12, "rpi4")}, {"t-42": ci_target("t-42", 42, "rpi4")},
        version=5,
    )  # fmt: skip
    claims_none = dataclasses.replace(
        with_production, context=Context(root_version=1, production_version=None,
                                         production_sha256=None)
    )  # fmt: skip
    assert warn_missing_production(with_production, [1, 2, 3]) == []
    assert warn_missing_production(claims_none, []) == []  # a real first wave
    [warning] = warn_missing_production(claims_none, [3, 1, 2, 3])
    assert warning == (
        "the request says tag production has no production targets, but this appliance "
        "signed targets for it before (versions 1, 2, 3): unless every earlier wave of the "
        "tag was canceled, the broker is hiding the production it replaces"
    )
