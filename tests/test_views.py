"""Which view a device sees (pure), and the invariant: its version never goes down."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from wavesign.online.planning import (
    CITarget,
    PlanningError,
    ProductionState,
    RenewalPlan,
    WavePlan,
    plan_renewal,
    plan_wave,
)
from wavesign.online.rollout import DeviceRef, RolloutError, select_rollout
from wavesign.online.views import (
    View,
    ViewError,
    ViewState,
    WaveRecord,
    WaveStatus,
    ensure_production_advances,
    pins_for_group_change,
    select_view,
)

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


def ci_target(version: int, hardware: str = "intel-corei7-64") -> CITarget:
    return CITarget(
        name=f"{hardware}-lmp-{version}",
        sha256="c" * 64,
        length=100,
        custom={"version": str(version), "hardwareIds": [hardware], "tags": ["main"]},
    )


def wave(
    name: str,
    status: WaveStatus,
    version: int,
    devices: set[str] | None = None,
    groups: set[str] | None = None,
    tag: str = "production",
) -> WaveRecord:
    return WaveRecord(
        name=name,
        tag=tag,
        status=status,
        version=version,
        revert_version=version + 1,
        devices=frozenset(devices or ()),
        full_groups=frozenset(groups or ()),
    )


CANARY_1 = DeviceRef("canary-1", "production", "canary")
CANARY_2 = DeviceRef("canary-2", "production", "canary")
EAST_1 = DeviceRef("east-1", "production", "us-east-1")
LONE = DeviceRef("lone", "production", None)
FLEET = (CANARY_1, CANARY_2, EAST_1, LONE)


def versions(state: ViewState, devices: tuple[DeviceRef, ...] = FLEET) -> dict[str, int | None]:
    return {d.uuid: select_view(d, state).version for d in devices}


# ------------------------------------------------------------------ the seed's story


def test_seed_story_views() -> None:
    # No production yet: a production view with nothing to serve.
    empty = ViewState()
    assert select_view(LONE, empty) == View("production", "production", None, None)

    # populate-targets 12: W1 v1 (R1 v2) -> complete: production v1 for everyone.
    populate = wave("populate-targets", "complete", 1)
    state = ViewState({"production": 1}, (populate,))
    assert versions(state) == {"canary-1": 1, "canary-2": 1, "east-1": 1, "lone": 1}

    # v2.0-update 42: W2 v3, R2 v4. Awaiting signatures, then active: nobody sees it yet.
    for status in ("awaiting-signatures", "active"):
        state = ViewState({"production": 1}, (populate, wave("v2.0-update", status, 3)))
        assert versions(state) == {"canary-1": 1, "canary-2": 1, "east-1": 1, "lone": 1}

    # rollout v2.0-update canary: the canary devices see W2.
    rolled = wave("v2.0-update", "active", 3, {"canary-1", "canary-2"}, {"canary"})
    state = ViewState({"production": 1}, (populate, rolled))
    assert select_view(CANARY_1, state) == View("wave", "production", "v2.0-update", 3)
    assert versions(state) == {"canary-1": 3, "canary-2": 3, "east-1": 1, "lone": 1}

    # cancel: the canary devices see R2 (v4, the targets of production v1); others stay.
    canceled = replace(rolled, status="canceled")
    state = ViewState({"production": 1}, (populate, canceled))
    assert select_view(CANARY_2, state) == View("revert", "production", "v2.0-update", 4)
    assert versions(state) == {"canary-1": 4, "canary-2": 4, "east-1": 1, "lone": 1}

    # The next wave (v5, R v6) rolled out to us-east-1 and the canaries' R is untouched.
    v3 = wave("v3.0-update", "active", 5, {"east-1"}, {"us-east-1"})
    state = ViewState({"production": 1}, (populate, canceled, v3))
    assert versions(state) == {"canary-1": 4, "canary-2": 4, "east-1": 5, "lone": 1}

    # complete: W3 is production at v5, for every device on the tag.
    state = ViewState({"production": 5}, (populate, canceled, replace(v3, status="complete")))
    assert {select_view(d, state) for d in FLEET} == {View("production", "production", None, 5)}


def test_seed_story_with_real_plans() -> None:
    """The versions views compare are the ones the planner hands out."""
    targets = [ci_target(12), ci_target(42)]
    first = plan_wave(
        "populate-targets", 12, "production", targets, ProductionState("production"), now=NOW
    )
    production = ProductionState("production", first.wave, first.highest_planned)
    second = plan_wave("v2.0-update", 42, "production", targets, production, now=NOW)
    record = WaveRecord(
        "v2.0-update",
        "production",
        "canceled",
        second.version,
        second.revert.version,
        frozenset({"canary-1"}),
        frozenset(),
    )
    state = ViewState({"production": first.version}, (record,))
    assert select_view(CANARY_1, state) == View("revert", "production", "v2.0-update", 4)
    assert select_view(CANARY_2, state) == View("production", "production", None, 1)


# ------------------------------------------------------------------ membership


def test_a_device_joining_a_fully_rolled_out_group_is_included() -> None:
    state = ViewState({"production": 1}, (wave("w", "active", 3, {"canary-1"}, {"canary"}),))
    newcomer = DeviceRef("new", "production", "canary")
    assert select_view(newcomer, state) == View("wave", "production", "w", 3)
    # A limited rollout of the same group does not cover newcomers.
    limited = ViewState({"production": 1}, (wave("w", "active", 3, {"canary-1"}),))
    assert select_view(newcomer, limited).kind == "production"


def test_an_explicit_member_keeps_the_wave_in_another_group() -> None:
    state = ViewState({"production": 1}, (wave("w", "active", 3, {"canary-1"}, {"canary"}),))
    moved = replace(CANARY_1, group="us-east-1")
    assert select_view(moved, state) == View("wave", "production", "w", 3)
    ungrouped = replace(CANARY_1, group=None)
    assert select_view(ungrouped, state) == View("wave", "production", "w", 3)


def test_waves_of_other_tags_do_not_matter() -> None:
    devel = wave("d", "active", 7, {"canary-1"}, {"canary"}, tag="devel")
    state = ViewState({"production": 1, "devel": 4}, (devel,))
    assert select_view(CANARY_1, state) == View("production", "production", None, 1)
    devel_device = DeviceRef("dv", "devel", "canary")
    assert select_view(devel_device, state) == View("wave", "devel", "d", 7)


def test_a_revert_shows_only_while_above_production() -> None:
    canceled = wave("w", "canceled", 3, {"canary-1"})
    assert select_view(CANARY_1, ViewState({"production": 1}, (canceled,))).kind == "revert"
    # A renewal published at v5 supersedes R (v4): back to production, version up.
    after = select_view(CANARY_1, ViewState({"production": 5}, (canceled,)))
    assert after == View("production", "production", None, 5)


def test_the_highest_version_wins_between_a_revert_and_a_later_wave() -> None:
    old = wave("w1", "canceled", 3, {"canary-1"})
    new = wave("w2", "active", 5, {"canary-1"})
    state = ViewState({"production": 1}, (old, new))
    assert select_view(CANARY_1, state) == View("wave", "production", "w2", 5)
    state = ViewState({"production": 1}, (old, replace(new, status="canceled")))
    assert select_view(CANARY_1, state) == View("revert", "production", "w2", 6)


# ------------------------------------------------------------------ pins and publication


def test_leaving_a_fully_rolled_out_group_needs_a_pin() -> None:
    active = wave("w", "active", 3, {"canary-2"}, {"canary"})
    state = ViewState({"production": 1}, (active,))
    assert pins_for_group_change(CANARY_1, "us-east-1", state) == ("w",)
    assert pins_for_group_change(CANARY_1, None, state) == ("w",)
    # Why: unpinned, the device would be offered v1 after v3, which TUF clients refuse.
    moved = replace(CANARY_1, group="us-east-1")
    assert select_view(moved, state).version == 1
    pinned = ViewState({"production": 1}, (replace(active, devices=frozenset({"canary-1"})),))
    assert select_view(moved, pinned) == View("wave", "production", "w", 3)


def test_no_pin_when_nothing_would_be_lost() -> None:
    both = wave("w", "active", 3, set(), {"canary", "us-east-1"})
    state = ViewState({"production": 1}, (both,))
    assert pins_for_group_change(CANARY_1, "us-east-1", state) == ()  # still covered
    assert pins_for_group_change(CANARY_1, "canary", state) == ()  # no change
    assert pins_for_group_change(LONE, "canary", state) == ()  # joining, not leaving
    explicit = ViewState({"production": 1}, (wave("w", "active", 3, {"canary-1"}, {"canary"}),))
    assert pins_for_group_change(CANARY_1, None, explicit) == ()  # already recorded
    for status in ("complete", "awaiting-signatures"):
        other = ViewState({"production": 3}, (wave("w", status, 3, set(), {"canary"}),))
        assert pins_for_group_change(CANARY_1, None, other) == ()


def test_canceled_waves_are_pinned_only_while_their_revert_is_live() -> None:
    canceled = wave("w", "canceled", 3, set(), {"canary"})
    assert pins_for_group_change(CANARY_1, None, ViewState({"production": 1}, (canceled,))) == (
        "w",
    )
    superseded = ViewState({"production": 5}, (canceled,))
    assert pins_for_group_change(CANARY_1, None, superseded) == ()


def test_production_only_moves_up() -> None:
    ensure_production_advances("production", None, 1)
    ensure_production_advances("production", 3, 5)
    with pytest.raises(ViewError) as caught:
        ensure_production_advances("production", 5, 4)
    assert str(caught.value) == (
        "Cannot publish targets version 4 as production for tag production: version 5 is "
        "already published, and TUF clients refuse to go back to a lower version"
    )
    with pytest.raises(ViewError):
        ensure_production_advances("production", 5, 5)


# ------------------------------------------------------------------ data classes


def test_round_trips_and_validation() -> None:
    record = wave("w", "canceled", 3, {"a", "b"}, {"canary"})
    state = ViewState({"production": 1}, (record,))
    assert ViewState.from_dict(state.to_dict()) == state
    assert WaveRecord.from_dict(record.to_dict()) == record
    view = View("revert", "production", "w", 4)
    assert View.from_dict(view.to_dict()) == view
    with pytest.raises(ValueError, match="unknown view kind"):
        View.from_dict({"kind": "other", "tag": "t", "wave": None, "version": 1})
    with pytest.raises(ValueError, match="revert version 3 must be above the wave version 3"):
        WaveRecord("w", "production", "active", 3, 3)
    with pytest.raises(ValueError, match="unknown wave status"):
        WaveRecord("w", "production", cast(WaveStatus, "paused"), 3, 4)


# ------------------------------------------------------------------ the invariant


@dataclass
class ModelWave:
    plan: WavePlan
    status: WaveStatus = "awaiting-signatures"
    devices: set[str] = field(default_factory=set)
    full_groups: set[str] = field(default_factory=set)

    def record(self) -> WaveRecord:
        return WaveRecord(
            self.plan.name,
            self.plan.tag,
            self.status,
            self.plan.version,
            self.plan.revert.version,
            frozenset(self.devices),
            frozenset(self.full_groups),
        )


TAGS = ("production", "devel")
GROUPS = ("canary", "us-east-1", "eu")
group_choice = st.sampled_from((*GROUPS, None))
# Mostly one tag, so that waves, rollouts and moves meet often; the other tag checks that
# tags stay apart.
tag_choice = st.sampled_from(("production", "production", "production", "devel"))
ACTIONS = (
    *("add_device", "init_wave", "init_wave", "sign", "sign"),
    *("rollout", "rollout", "rollout", "rollout", "cancel", "complete"),
    *("renew", "publish_renewal", "move", "move", "move"),
)


class FleetMachine(RuleBasedStateMachine):
    """A model broker that keeps the store's invariants, driven by the real pure core.

    Every step is followed by every device polling; the version it is shown must never be
    lower than the one it was shown before.
    """

    def __init__(self) -> None:
        super().__init__()
        self.devices: dict[str, DeviceRef] = {}
        self.production = {tag: ProductionState(tag) for tag in TAGS}
        self.waves: list[ModelWave] = []
        self.pending_renewals: list[RenewalPlan] = []
        self.next_ci = dict.fromkeys(TAGS, 10)
        self.clock = NOW
        self.seen: dict[str, int] = {}

    # -- helpers
    def state(self) -> ViewState:
        production = {
            tag: ps.version for tag, ps in self.production.items() if ps.version is not None
        }
        return ViewState(production, tuple(w.record() for w in self.waves))

    def open_wave(self, tag: str) -> ModelWave | None:
        for w in self.waves:
            if w.plan.tag == tag and w.status in ("awaiting-signatures", "active"):
                return w
        return None

    def raise_counter(self, tag: str, highest: int) -> None:
        ps = self.production[tag]
        self.production[tag] = ProductionState(tag, ps.signed, highest)

    def publish_production(self, tag: str, signed: dict[str, Any]) -> None:
        ps = self.production[tag]
        ensure_production_advances(tag, ps.version, signed["version"])
        self.production[tag] = ProductionState(tag, signed, ps.highest_planned)

    # -- one rule, many actions: the weights keep waves alive long enough to be rolled out
    # to several groups, and devices moving, while every action stays reachable.
    @initialize(groups=st.lists(group_choice, min_size=2, max_size=8))
    def fleet(self, groups: list[str | None]) -> None:
        for group in groups:
            self.add_device("production", group)

    @rule(
        action=st.sampled_from(ACTIONS),
        tag=tag_choice,
        group=group_choice,
        limit=st.sampled_from((None, "1", "2", "50%")),
        number=st.integers(0, 50),
    )
    def step(
        self, action: str, tag: str, group: str | None, limit: str | None, number: int
    ) -> None:
        if action == "add_device":
            self.add_device(tag, group)
        elif action == "init_wave":
            self.init_wave(tag, number)
        elif action == "sign":
            self.sign(tag)
        elif action == "rollout":
            self.rollout(tag, group, limit, number)
        elif action == "cancel":
            self.cancel(tag)
        elif action == "complete":
            self.complete(tag)
        elif action == "renew":
            self.renew(tag)
        elif action == "publish_renewal":
            self.publish_renewal(number)
        else:
            self.move(number, group)

    def add_device(self, tag: str, group: str | None) -> None:
        uuid = f"d{len(self.devices)}"
        self.devices[uuid] = DeviceRef(
            uuid, tag, group, f"2026-12-03T12:{len(self.devices):02d}:00Z"
        )

    def init_wave(self, tag: str, number: int) -> None:
        self.next_ci[tag] += 1 + number % 3
        version = self.next_ci[tag]
        hardware = ("hw-a", "hw-b")[number % 2]
        blocking = self.open_wave(tag)
        self.clock += timedelta(hours=1)
        try:
            plan = plan_wave(
                f"w{len(self.waves)}",
                version,
                tag,
                [ci_target(version, hardware)],
                self.production[tag],
                now=self.clock,
                open_wave=None if blocking is None else blocking.plan.name,
            )
        except PlanningError:
            assert blocking is not None  # the only refusal this model can meet
            return
        assert blocking is None
        self.raise_counter(tag, plan.highest_planned)
        self.waves.append(ModelWave(plan))

    def sign(self, tag: str) -> None:
        w = self.open_wave(tag)
        if w is not None and w.status == "awaiting-signatures":
            w.status = "active"

    def rollout(self, tag: str, group: str | None, limit: str | None, number: int) -> None:
        w = self.open_wave(tag)
        if w is None or w.status != "active":
            return
        uuids = None
        mode = number % 3
        if mode == 0:  # a full-group rollout
            group, limit = group or "canary", None
        elif mode == 1:  # --limit, with or without a group
            limit = limit or "1"
        else:  # --uuids (maybe with --limit and --group): a few devices on the tag
            on_tag = sorted(u for u, d in self.devices.items() if d.tag == tag)
            uuids = on_tag[number % 5 : number % 5 + 3] or None
        try:
            selection = select_rollout(
                list(self.devices.values()),
                tag=tag,
                already_in_wave=w.devices,
                group=group,
                limit=limit,
                uuids=uuids,
            )
        except RolloutError:
            return
        w.devices.update(selection.uuids)
        if selection.full_group and selection.group is not None:
            w.full_groups.add(selection.group)

    def cancel(self, tag: str) -> None:
        w = self.open_wave(tag)
        if w is not None:
            w.status = "canceled"

    def complete(self, tag: str) -> None:
        w = self.open_wave(tag)
        if w is not None and w.status == "active":
            self.publish_production(tag, w.plan.wave)
            w.status = "complete"

    def renew(self, tag: str) -> None:
        blocking = self.open_wave(tag)
        self.clock += timedelta(hours=1)
        try:
            plan = plan_renewal(
                tag,
                self.production[tag],
                now=self.clock,
                open_wave=None if blocking is None else blocking.plan.name,
            )
        except PlanningError:
            assert blocking is not None or self.production[tag].signed is None
            return
        self.raise_counter(tag, plan.highest_planned)
        self.pending_renewals.append(plan)

    def publish_renewal(self, number: int) -> None:
        # Renewals come back from the offline machine in any order, possibly late.
        if not self.pending_renewals:
            return
        plan = self.pending_renewals.pop(number % len(self.pending_renewals))
        current = self.production[plan.tag].version
        try:
            self.publish_production(plan.tag, plan.signed)
        except ViewError:
            assert current is not None and current >= plan.version

    def move(self, number: int, group: str | None) -> None:
        if not self.devices:
            return
        uuid = sorted(self.devices)[number % len(self.devices)]
        device = self.devices[uuid]
        for name in pins_for_group_change(device, group, self.state()):
            next(w for w in self.waves if w.plan.name == name).devices.add(uuid)
        self.devices[uuid] = replace(device, group=group)

    # -- the invariant
    @invariant()
    def versions_never_decrease(self) -> None:
        state = self.state()
        for uuid, device in self.devices.items():
            view = select_view(device, state)
            version = view.version or 0
            assert version >= self.seen.get(uuid, 0), (uuid, view, self.seen.get(uuid))
            self.seen[uuid] = version
            # And the view is the one the architecture promises.
            active = self.open_wave(device.tag)
            if active is not None and active.status == "active" and active.record().reaches(device):
                assert view == View("wave", device.tag, active.plan.name, active.plan.version)
            if view.kind == "production":
                assert view.version == self.production[device.tag].version


FleetMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestFleetViews = FleetMachine.TestCase
