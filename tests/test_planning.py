"""Wave planning (pure): fioctl's ``wave init`` rules, the revert payload, the counter."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tuf.api.metadata import Metadata, Targets
from wavesign.online.planning import (
    CITarget,
    PlanningError,
    ProductionState,
    RenewalPlan,
    RevertPayload,
    WavePlan,
    compute_expiry,
    parse_expires_at,
    plan_renewal,
    plan_wave,
    production_ci_version,
)
from wavesign.shared.errors import WavesignError

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
SHA_A = "a" * 64
SHA_B = "b" * 64


def ci(name: str, version: str, hardware: str = "intel-corei7-64", **custom: Any) -> CITarget:
    fields: dict[str, Any] = {
        "version": version,
        "hardwareIds": [hardware],
        "tags": ["main"],
        "targetFormat": "OSTREE",
        "name": name.rsplit("-", 1)[0],
        "delta-stats": {"sha256": SHA_B, "size": 1234},
    }
    fields.update(custom)
    return CITarget(name=name, sha256=SHA_A, length=4096, custom=fields)


def production_with(entries: dict[str, str], version: int, highest: int) -> ProductionState:
    """A production state whose targets are {name: custom.version}."""
    targets = {
        name: {
            "length": 10,
            "hashes": {"sha256": SHA_B},
            "custom": {"version": v, "hardwareIds": ["intel-corei7-64"], "tags": ["production"]},
        }
        for name, v in entries.items()
    }
    signed = {
        "_type": "targets",
        "spec_version": "1.0.31",
        "version": version,
        "expires": "2027-06-01T00:00:00Z",
        "targets": targets,
    }
    return ProductionState(tag="production", signed=signed, highest_planned=highest)


def assert_valid_tuf_targets(signed: dict[str, Any]) -> Targets:
    parsed = Targets.from_dict(copy.deepcopy(signed))
    Metadata(parsed).to_bytes()  # serializable as a whole metadata file
    return parsed


# ------------------------------------------------------------------ the seed's story


def test_seed_first_wave_populate_targets_has_an_empty_revert() -> None:
    """`wave init populate-targets 12 production`: no production yet, R is empty."""
    ci_targets = [ci("intel-corei7-64-lmp-12", "12"), ci("intel-corei7-64-lmp-11", "11")]
    plan = plan_wave(
        "populate-targets", 12, "production", ci_targets, ProductionState("production"), now=NOW
    )
    assert plan.version == 1
    assert plan.revert.version == 2
    assert plan.highest_planned == 2
    assert plan.new_targets == ("intel-corei7-64-lmp-12",)
    assert plan.expires == "2027-12-03T12:00:00Z"
    assert plan.wave == {
        "_type": "targets",
        "spec_version": "1.0.31",
        "version": 1,
        "expires": "2027-12-03T12:00:00Z",
        "targets": {
            "intel-corei7-64-lmp-12": {
                "length": 4096,
                "hashes": {"sha256": SHA_A},
                "custom": {
                    "version": "12",
                    "hardwareIds": ["intel-corei7-64"],
                    "tags": ["production"],
                    "targetFormat": "OSTREE",
                    "name": "intel-corei7-64-lmp",
                    "delta-stats": {"sha256": SHA_B, "size": 1234},
                },
            }
        },
    }
    assert plan.revert.signed == {
        "_type": "targets",
        "spec_version": "1.0.31",
        "version": 2,
        "expires": "2027-12-03T12:00:00Z",
        "targets": {},
    }
    assert_valid_tuf_targets(plan.wave)
    assert_valid_tuf_targets(plan.revert.signed)
    assert plan.warnings == ()


def test_seed_second_wave_builds_on_completed_production() -> None:
    """populate-targets 12 -> complete; then `wave init v2.0-update 42 production`."""
    ci_targets = [ci("intel-corei7-64-lmp-12", "12"), ci("intel-corei7-64-lmp-42", "42")]
    first = plan_wave(
        "populate-targets", 12, "production", ci_targets, ProductionState("production"), now=NOW
    )
    # wave complete: W1 becomes the production targets; the counter stays at R1's version.
    production = ProductionState("production", first.wave, first.highest_planned)
    later = NOW + timedelta(days=10)
    second = plan_wave("v2.0-update", 42, "production", ci_targets, production, now=later)

    assert second.version == 3
    assert second.revert.version == 4
    assert second.highest_planned == 4
    assert sorted(second.wave["targets"]) == ["intel-corei7-64-lmp-12", "intel-corei7-64-lmp-42"]
    assert (
        second.wave["targets"]["intel-corei7-64-lmp-12"]
        == first.wave["targets"]["intel-corei7-64-lmp-12"]
    )
    assert second.wave["targets"]["intel-corei7-64-lmp-42"]["custom"]["tags"] == ["production"]
    # R is exactly the production targets at init, re-versioned, with W's expiry.
    assert second.revert.signed["targets"] == first.wave["targets"]
    assert second.revert.signed["expires"] == second.wave["expires"] == "2027-12-13T12:00:00Z"
    assert_valid_tuf_targets(second.wave)
    assert_valid_tuf_targets(second.revert.signed)


# ------------------------------------------------------------------ selecting new targets


def test_custom_fields_are_kept_and_tags_replaced_without_touching_the_input() -> None:
    target = ci(
        "intel-corei7-64-lmp-42",
        "42",
        tags=["main", "devel"],
        uri="https://ci.example/42",
        docker_compose_apps={"shellhttpd": {"uri": "hub.example/app@sha256:" + SHA_B}},
    )
    before = target.to_dict()
    plan = plan_wave("w", 42, "production", [target], ProductionState("production"), now=NOW)
    custom = plan.wave["targets"]["intel-corei7-64-lmp-42"]["custom"]
    assert custom["tags"] == ["production"]
    assert custom["uri"] == "https://ci.example/42"
    assert custom["docker_compose_apps"] == {
        "shellhttpd": {"uri": "hub.example/app@sha256:" + SHA_B}
    }
    assert target.to_dict() == before


def test_only_targets_of_the_exact_ci_version_are_taken() -> None:
    targets = [
        ci("a-lmp-42", "42", "hw-a"),
        ci("a-lmp-420", "420", "hw-a"),
        ci("a-lmp-4", "4", "hw-a"),
        ci("b-lmp-42", "42", "hw-b"),
    ]
    plan = plan_wave("w", 42, "production", targets, ProductionState("production"), now=NOW)
    assert plan.new_targets == ("a-lmp-42", "b-lmp-42")
    assert sorted(plan.wave["targets"]) == ["a-lmp-42", "b-lmp-42"]


def test_no_targets_for_the_version() -> None:
    with pytest.raises(PlanningError) as caught:
        plan_wave("w", 43, "production", [ci("a-42", "42")], ProductionState("production"), now=NOW)
    assert str(caught.value) == "No targets found for version 43"
    assert isinstance(caught.value, WavesignError)


def test_source_tag_filters_ci_targets() -> None:
    main = ci("a-lmp-42", "42", tags=["main"])
    devel = ci("a-lmp-42-devel", "42", tags=["devel", "qa"])
    empty = ProductionState("production")
    with pytest.raises(PlanningError) as caught:
        plan_wave("w", 42, "production", [main, devel], empty, now=NOW)
    assert str(caught.value) == (
        "Targets a-lmp-42 and a-lmp-42-devel of version 42 are both for hardware id "
        "intel-corei7-64: a wave takes one target per hardware id (use --source-tag to choose)"
    )
    plan = plan_wave("w", 42, "production", [main, devel], empty, now=NOW, source_tag="devel")
    assert plan.new_targets == ("a-lmp-42-devel",)
    assert plan.wave["targets"]["a-lmp-42-devel"]["custom"]["tags"] == ["production"]
    with pytest.raises(PlanningError) as caught:
        plan_wave("w", 42, "production", [main, devel], empty, now=NOW, source_tag="nightly")
    assert str(caught.value) == "No targets found for version 42 with source tag nightly"


def test_a_target_without_hardware_ids_is_refused() -> None:
    target = ci("a-lmp-42", "42", hardwareIds=[])
    with pytest.raises(PlanningError, match=r"CI target a-lmp-42 has no custom\.hardwareIds"):
        plan_wave("w", 42, "production", [target], ProductionState("production"), now=NOW)


# ------------------------------------------------------------------ fioctl's refusals


@pytest.mark.parametrize("ci_version", [41, 42])
def test_version_must_be_above_production(ci_version: int) -> None:
    production = production_with({"hw-lmp-12": "12", "hw-lmp-42": "42"}, version=3, highest=4)
    targets = [ci(f"x-lmp-{ci_version}", str(ci_version))]
    with pytest.raises(PlanningError) as caught:
        plan_wave("w", ci_version, "production", targets, production, now=NOW)
    assert str(caught.value) == (
        "Cannot create a Wave for a version lower than or equal to production Targets "
        "for the same tag"
    )


def test_a_name_already_in_production_is_refused() -> None:
    production = production_with({"hw-lmp-12": "12", "shared-name": "12"}, version=1, highest=2)
    with pytest.raises(PlanningError) as caught:
        plan_wave("w", 42, "production", [ci("shared-name", "42")], production, now=NOW)
    assert str(caught.value) == (
        "Target shared-name already exists in production Targets for tag production"
    )


def test_prune_removes_every_target_of_the_listed_versions() -> None:
    production = production_with(
        {"a-10": "10", "b-10": "10", "a-11": "11", "a-12": "12"}, version=5, highest=6
    )
    plan = plan_wave(
        "w", 42, "production", [ci("a-42", "42")], production, now=NOW, prune=["10", 11]
    )
    assert sorted(plan.wave["targets"]) == ["a-12", "a-42"]
    assert plan.pruned == ("a-10", "a-11", "b-10")
    # R is production as it is, unpruned: a cancel puts back exactly what was there.
    assert sorted(plan.revert.signed["targets"]) == ["a-10", "a-11", "a-12", "b-10"]
    assert plan.version == 7
    assert plan.revert.version == 8


def test_prune_refuses_the_current_version() -> None:
    production = production_with({"a-12": "12"}, version=1, highest=2)
    with pytest.raises(PlanningError) as caught:
        plan_wave("w", 42, "production", [ci("a-42", "42")], production, now=NOW, prune=["42"])
    assert str(caught.value) == "Cannot prune current version"


def test_prune_refuses_versions_that_are_not_there() -> None:
    production = production_with({"a-11": "11", "a-12": "12"}, version=1, highest=2)
    with pytest.raises(PlanningError) as caught:
        plan_wave(
            "w", 42, "production", [ci("a-42", "42")], production, now=NOW, prune=["9", "11", "7"]
        )
    assert str(caught.value) == "Unable to prune the following versions: 9,7"


def test_a_second_open_wave_for_the_tag_is_refused() -> None:
    with pytest.raises(PlanningError) as caught:
        plan_wave(
            "v3",
            42,
            "production",
            [ci("a-42", "42")],
            ProductionState("production"),
            now=NOW,
            open_wave="v2.0-update",
        )
    assert str(caught.value) == (
        "Cannot create wave v3 for tag production: wave v2.0-update is still open "
        "(awaiting signatures or active); complete or cancel it first"
    )


@pytest.mark.parametrize("name", ["", "has space", "a/b", "-dash-first", "x" * 201])
def test_bad_wave_names_are_refused(name: str) -> None:
    with pytest.raises(PlanningError, match="Invalid wave name"):
        plan_wave(
            name, 42, "production", [ci("a-42", "42")], ProductionState("production"), now=NOW
        )


@pytest.mark.parametrize("version", [-1, True])
def test_bad_ci_versions_are_refused(version: Any) -> None:
    with pytest.raises(PlanningError, match="Version must be an integer"):
        plan_wave("w", version, "production", [], ProductionState("production"), now=NOW)


def test_a_production_state_of_another_tag_is_refused() -> None:
    with pytest.raises(PlanningError, match="Production state is for tag devel, not production"):
        plan_wave("w", 42, "production", [ci("a-42", "42")], ProductionState("devel"), now=NOW)


def test_a_float_in_custom_is_refused_before_anything_is_stored() -> None:
    target = ci("a-42", "42", score=0.5)
    with pytest.raises(PlanningError) as caught:
        plan_wave("w", 42, "production", [target], ProductionState("production"), now=NOW)
    assert str(caught.value).startswith("Wave w cannot be signed: canonical JSON refuses floats")


# ------------------------------------------------------------------ warnings, versions


def test_a_target_without_static_delta_gets_fioctls_warning() -> None:
    with_delta = ci("a-42", "42", "hw-a")
    without = CITarget(
        name="b-42", sha256=SHA_A, length=1, custom={"version": "42", "hardwareIds": ["hw-b"]}
    )
    plan = plan_wave(
        "w", 42, "production", [with_delta, without], ProductionState("production"), now=NOW
    )
    assert plan.warnings == (
        "Target b-42 has no static delta (custom.delta-stats): it is recommended to generate "
        "OSTree static deltas before rolling a wave out to production devices",
    )


def test_versions_come_from_the_highest_planned_not_from_production() -> None:
    # Production is at 5, but a canceled wave's revert went up to 9 meanwhile.
    production = production_with({"a-12": "12"}, version=5, highest=9)
    plan = plan_wave("w", 42, "production", [ci("a-42", "42")], production, now=NOW)
    assert (plan.version, plan.revert.version, plan.highest_planned) == (10, 11, 11)
    assert plan.wave["version"] == 10
    assert plan.revert.signed["version"] == 11


def test_planning_does_not_change_its_inputs_and_is_deterministic() -> None:
    production = production_with({"a-10": "10", "a-12": "12"}, version=2, highest=3)
    targets = [ci("a-42", "42")]
    snapshot = (production.to_dict(), [t.to_dict() for t in targets])
    first = plan_wave("w", 42, "production", targets, production, now=NOW, prune=["10"])
    second = plan_wave("w", 42, "production", targets, production, now=NOW, prune=["10"])
    assert first == second
    assert (production.to_dict(), [t.to_dict() for t in targets]) == snapshot
    # The plan's dicts are its own: editing them does not reach production.
    first.revert.signed["targets"].clear()
    assert production.targets != {}


# ------------------------------------------------------------------ expiry


def test_expiry_rounds_to_whole_seconds_like_go() -> None:
    half = NOW.replace(microsecond=500_000)
    below = NOW.replace(microsecond=499_999)
    assert compute_expiry(half, 1) == datetime(2026, 12, 4, 12, 0, 1, tzinfo=UTC)
    assert compute_expiry(below, 1) == datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


def test_expires_at_overrides_days_and_is_written_in_utc() -> None:
    at = parse_expires_at("2027-03-01T10:00:00+02:00")
    plan = plan_wave(
        "w",
        42,
        "production",
        [ci("a-42", "42")],
        ProductionState("production"),
        now=NOW,
        expires_days=5,
        expires_at=at,
    )
    assert plan.expires == "2027-03-01T08:00:00Z"
    assert plan.wave["expires"] == plan.revert.signed["expires"] == "2027-03-01T08:00:00Z"


def test_expires_days_sets_the_expiry() -> None:
    plan = plan_wave(
        "w",
        42,
        "production",
        [ci("a-42", "42")],
        ProductionState("production"),
        now=NOW,
        expires_days=30,
    )
    assert plan.expires == "2027-01-02T12:00:00Z"


def test_an_expiry_in_the_past_is_refused() -> None:
    with pytest.raises(PlanningError) as caught:
        compute_expiry(NOW, expires_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert str(caught.value) == "Expiry 2026-01-01T00:00:00Z is in the past"
    with pytest.raises(PlanningError, match="--expires-days must be at least 1, got 0"):
        compute_expiry(NOW, 0)
    with pytest.raises(PlanningError, match="must carry a time zone"):
        compute_expiry(NOW, expires_at=datetime(2030, 1, 1))


def test_parse_expires_at() -> None:
    assert parse_expires_at("2027-01-01T00:00:00Z") == datetime(2027, 1, 1, tzinfo=UTC)
    assert parse_expires_at("2027-01-01T00:00:00-05:00") == datetime(2027, 1, 1, 5, tzinfo=UTC)
    offset = parse_expires_at("2027-01-01T01:00:00+01:00")
    assert offset.tzinfo == UTC and offset == datetime(2027, 1, 1, tzinfo=UTC)
    for bad in ["2027-01-01", "2027-01-01T00:00:00", "tomorrow", ""]:
        with pytest.raises(PlanningError, match="Invalid expires-at value"):
            parse_expires_at(bad)


# ------------------------------------------------------------------ renewal


def test_renewal_keeps_the_targets_and_raises_the_version() -> None:
    production = production_with({"a-12": "12", "a-42": "42"}, version=3, highest=6)
    plan = plan_renewal("production", production, now=NOW, expires_days=200)
    assert isinstance(plan, RenewalPlan)
    assert plan.version == 7
    assert plan.highest_planned == 7
    assert plan.signed["version"] == 7
    assert plan.signed["targets"] == production.targets
    assert plan.expires == plan.signed["expires"] == "2027-06-21T12:00:00Z"
    assert plan.warnings == ()
    assert_valid_tuf_targets(plan.signed)
    assert RenewalPlan.from_dict(plan.to_dict()) == plan


def test_renewal_refusals_and_warning() -> None:
    with pytest.raises(PlanningError) as caught:
        plan_renewal("production", ProductionState("production"), now=NOW)
    assert str(caught.value) == "No production Targets for tag production: nothing to renew"
    production = production_with({"a-12": "12"}, version=1, highest=2)
    with pytest.raises(PlanningError) as caught:
        plan_renewal("production", production, now=NOW, open_wave="v2.0-update")
    assert str(caught.value) == (
        "Cannot renew production Targets for tag production: wave v2.0-update is still open "
        "(awaiting signatures or active); complete or cancel it first"
    )
    shorter = plan_renewal("production", production, now=NOW, expires_days=10)
    assert shorter.warnings == (
        "The new expiry 2026-12-13T12:00:00Z is earlier than the current one 2027-06-01T00:00:00Z",
    )


# ------------------------------------------------------------------ data classes


def test_round_trips() -> None:
    production = production_with({"a-12": "12"}, version=1, highest=2)
    assert ProductionState.from_dict(production.to_dict()) == production
    plan = plan_wave("w", 42, "production", [ci("a-42", "42")], production, now=NOW)
    assert WavePlan.from_dict(plan.to_dict()) == plan
    assert RevertPayload.from_dict(plan.revert.to_dict()) == plan.revert
    target = ci("a-42", "42")
    assert CITarget.from_dict(target.to_dict()) == target
    assert CITarget.from_entry("a-42", target.to_entry()) == target


def test_from_entry_refuses_an_entry_without_hashes() -> None:
    with pytest.raises(PlanningError, match=r"CI target x: needs length and hashes\.sha256"):
        CITarget.from_entry("x", {"length": 1, "custom": {}})


def test_production_state_validation() -> None:
    with pytest.raises(ValueError, match="below the production version 5"):
        production_with({"a-12": "12"}, version=5, highest=4)
    with pytest.raises(ValueError, match="integer version"):
        ProductionState("production", {"version": 0, "targets": {}}, 3)


def test_production_ci_version_ignores_entries_without_a_number() -> None:
    targets = {
        "a": {"custom": {"version": "12"}},
        "b": {"custom": {"version": "9"}},
        "c": {"custom": {"version": "nightly"}},
        "d": {"length": 1},
    }
    assert production_ci_version(targets) == 12
    assert production_ci_version({}) is None


# ------------------------------------------------------------------ properties

_versions = st.integers(min_value=1, max_value=60)


@settings(max_examples=150, deadline=None)
@given(
    production_versions=st.lists(_versions, max_size=6, unique=True),
    highest_extra=st.integers(min_value=0, max_value=5),
    new_hardware=st.lists(
        st.sampled_from(["hw-a", "hw-b", "hw-c", "hw-d"]), min_size=1, unique=True
    ),
    prune_count=st.integers(min_value=0, max_value=3),
)
def test_wave_is_production_plus_new_minus_pruned(
    production_versions: list[int], highest_extra: int, new_hardware: list[str], prune_count: int
) -> None:
    entries = {f"hw-lmp-{v}": str(v) for v in production_versions}
    if entries:
        production = production_with(entries, version=1, highest=1 + highest_extra)
    else:
        production = ProductionState("production", None, highest_extra)
    ci_version = max(production_versions, default=0) + 1
    new = [ci(f"{hw}-lmp-{ci_version}", str(ci_version), hw) for hw in new_hardware]
    prune = [str(v) for v in sorted(production_versions)[:prune_count]]
    plan = plan_wave("w", ci_version, "production", new, production, now=NOW, prune=prune)

    kept = {name for name, v in entries.items() if v not in prune}
    assert set(plan.wave["targets"]) == kept | {t.name for t in new}
    assert plan.revert.signed["targets"] == production.targets
    assert plan.version == production.highest_planned + 1
    assert plan.revert.version == plan.version + 1 == plan.highest_planned
    assert production.version is None or plan.version > production.version
    assert_valid_tuf_targets(plan.wave)
    assert_valid_tuf_targets(plan.revert.signed)
