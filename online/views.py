"""Which TUF targets a device sees: ``select_view(device, state)`` (pure).

A device sees one of three views of its tag (``design/architecture.md``, "TUF views"):

- **production**: the tag's published production targets (version None before the
  first wave of the tag completes: nothing to serve yet);
- **wave**: the targets W of an *active* wave the device was rolled out to;
- **revert**: the revert payload R of a *canceled* wave the device was rolled out to.

A device was *rolled out to* a wave if its uuid is recorded in the wave's devices
(explicit rollouts, and every device a full-group rollout reached), or if its current
group had a full-group rollout of that wave (devices that join later are included).
Waves awaiting signatures and completed waves give no view: a completed wave's W *is*
the production targets, at the same version.

Of the views a device is entitled to, it is shown **the one with the highest targets
version**. That single rule gives everything the architecture asks for: a rolled-out
device sees W (v > production); after a cancel it sees R (v + 1 > v), and only while R is
above production; after a completion, or once a later production supersedes R, it sees
production; and a second wave's W (planned above every earlier payload) wins over an
older revert. Ties cannot happen while the invariants below hold; if one did, production
would win, then revert, then wave.

Invariants (the store keeps 1-5; together they make the theorem hold):

1. Versions come from a per-tag counter: every payload planned for a tag (W, R,
   renewal) has a version above every payload planned for it before
   (``planning.plan_wave`` / ``plan_renewal`` take ``highest_planned + 1``).
2. At most one wave per tag is awaiting signatures or active, and no renewal is planned
   while one is (``planning`` refuses with ``open_wave``).
3. Production only moves up: a completion or renewal is published only if its version
   is above the published one (``ensure_production_advances``).
4. A wave's recorded devices only grow, and a device that leaves a group through which
   it is in an active wave, or in a canceled wave whose R is still shown, is first
   recorded in that wave explicitly (``pins_for_group_change``): a device never leaves a
   wave view while the wave is active, even if it changes group.
5. A device keeps its tag for life (re-provisioning resets its TUF state).

A store that records in ``devices`` every device a full-group rollout reaches, including
each later joiner at the moment it joins (as the broker's store does), keeps invariant 4
by construction: ``pins_for_group_change`` then finds nothing to pin, and calling it
before every group change stays a cheap safety net.

Theorem: for every device, the version of the selected view never decreases. Every
change either adds views to a device's set (rollout, joining a group, a new
publication), or replaces one by a view of equal or higher version (cancel: W at v ->
R at v + 1; complete: W at v -> production at v; publication: production p -> p' > p),
and a group change removes nothing (4). The maximum of such a set never goes down.
``tests/test_views.py`` checks it with hypothesis over random sequences of wave inits,
signatures, rollouts, cancels, completions, renewals, group moves and new devices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from wavesign.shared.errors import WavesignError

from .rollout import DeviceRef

__all__ = [
    "VIEW_KINDS",
    "WAVE_STATUSES",
    "View",
    "ViewError",
    "ViewKind",
    "ViewState",
    "WaveRecord",
    "WaveStatus",
    "ensure_production_advances",
    "pins_for_group_change",
    "select_view",
]

ViewKind = Literal["production", "wave", "revert"]
WaveStatus = Literal["awaiting-signatures", "active", "complete", "canceled"]
VIEW_KINDS: tuple[str, ...] = ("production", "wave", "revert")
WAVE_STATUSES: tuple[str, ...] = ("awaiting-signatures", "active", "complete", "canceled")
# Tie-break order (never needed while the invariants hold): production, revert, wave.
_KIND_RANK = {"production": 2, "revert": 1, "wave": 0}


class ViewError(WavesignError):
    """A publication would show some device a lower targets version than before."""


@dataclass(frozen=True)
class View:
    """What a device is served: the kind, its tag, the wave (if any) and the version.

    ``version`` is the TUF targets version, None only for a production view of a tag
    with no production targets yet.
    """

    kind: ViewKind
    tag: str
    wave: str | None
    version: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tag": self.tag, "wave": self.wave, "version": self.version}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> View:
        kind = data["kind"]
        if kind not in VIEW_KINDS:
            raise ValueError(f"unknown view kind {kind!r}")
        return cls(kind=kind, tag=data["tag"], wave=data.get("wave"), version=data.get("version"))


@dataclass(frozen=True)
class WaveRecord:
    """One wave as views need it.

    ``devices`` are the uuids recorded as rolled out to (a store may pass just the one
    device it asks about); ``full_groups`` the groups rolled out to whole.
    """

    name: str
    tag: str
    status: WaveStatus
    version: int
    revert_version: int
    devices: frozenset[str] = field(default_factory=frozenset)
    full_groups: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.status not in WAVE_STATUSES:
            raise ValueError(f"unknown wave status {self.status!r}")
        if self.revert_version <= self.version:
            raise ValueError(
                f"wave {self.name}: revert version {self.revert_version} must be above "
                f"the wave version {self.version}"
            )

    def reaches(self, device: DeviceRef) -> bool:
        """Whether the wave was rolled out to the device (explicitly or via its group)."""
        if device.tag != self.tag:
            return False
        return device.uuid in self.devices or (
            device.group is not None and device.group in self.full_groups
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tag": self.tag,
            "status": self.status,
            "version": self.version,
            "revert_version": self.revert_version,
            "devices": sorted(self.devices),
            "full_groups": sorted(self.full_groups),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WaveRecord:
        return cls(
            name=data["name"],
            tag=data["tag"],
            status=data["status"],
            version=int(data["version"]),
            revert_version=int(data["revert_version"]),
            devices=frozenset(data.get("devices", ())),
            full_groups=frozenset(data.get("full_groups", ())),
        )


@dataclass(frozen=True)
class ViewState:
    """The published state views are chosen from.

    ``production`` maps a tag to its published production targets version (a tag
    without production targets is absent). ``waves`` are the waves of any tags; only
    those on the device's tag matter to it.
    """

    production: Mapping[str, int] = field(default_factory=dict, hash=False)
    waves: tuple[WaveRecord, ...] = ()

    def waves_on(self, tag: str) -> Iterable[WaveRecord]:
        return (wave for wave in self.waves if wave.tag == tag)

    def to_dict(self) -> dict[str, Any]:
        return {
            "production": dict(self.production),
            "waves": [wave.to_dict() for wave in self.waves],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ViewState:
        return cls(
            production={str(k): int(v) for k, v in dict(data.get("production", {})).items()},
            waves=tuple(WaveRecord.from_dict(w) for w in data.get("waves", ())),
        )


def _rank(view: View) -> tuple[int, int]:
    return (view.version if view.version is not None else 0, _KIND_RANK[view.kind])


def _views_of(device: DeviceRef, state: ViewState) -> list[View]:
    tag = device.tag
    views = [View("production", tag, None, state.production.get(tag))]
    for wave in state.waves_on(tag):
        if not wave.reaches(device):
            continue
        if wave.status == "active":
            views.append(View("wave", tag, wave.name, wave.version))
        elif wave.status == "canceled":
            views.append(View("revert", tag, wave.name, wave.revert_version))
    return views


def select_view(device: DeviceRef, state: ViewState) -> View:
    """The view ``device`` is served: the highest-version view it is entitled to."""
    return max(_views_of(device, state), key=_rank)


def pins_for_group_change(
    device: DeviceRef, new_group: str | None, state: ViewState
) -> tuple[str, ...]:
    """Waves the store must record ``device`` in explicitly before moving it to ``new_group``.

    These are the waves that reach the device only through a full-group rollout of its
    current group, which the new group does not have, and whose view is still live: the
    wave is active, or canceled with R above production. Without the pin, the device
    would fall back to a lower version, which TUF clients refuse (and it would then never
    update again until production overtook the version it saw).
    """
    if device.group is None or device.group == new_group:
        return ()
    production = state.production.get(device.tag, 0)
    pins = []
    for wave in state.waves_on(device.tag):
        if device.uuid in wave.devices or device.group not in wave.full_groups:
            continue
        if new_group is not None and new_group in wave.full_groups:
            continue
        live = wave.status == "active" or (
            wave.status == "canceled" and wave.revert_version > production
        )
        if live:
            pins.append(wave.name)
    return tuple(sorted(pins))


def ensure_production_advances(tag: str, current_version: int | None, new_version: int) -> None:
    """Refuse to publish production targets that are not above the published ones.

    Called before ``wave complete`` and before publishing a renewal: a renewal planned
    before a wave, signed late, must not replace the completed wave's higher version.
    """
    if current_version is not None and new_version <= current_version:
        raise ViewError(
            f"Cannot publish targets version {new_version} as production for tag {tag}: "
            f"version {current_version} is already published, and TUF clients refuse "
            "to go back to a lower version"
        )
