"""``wave status`` and ``status``: fioctl's fleet reports, computed over plain data (pure).

The SQL in :mod:`wavesign.online.status_queries` aggregates devices into
:class:`Bucket` rows (devices that share a tag, group, current target and view, with
how many of them are online); this module turns those few rows into the reports and
renders them as fioctl prints them (``reference/foundries-fioctl.md``):

- ``wave status``: "Wave 'W' for tag 'T' version N is S", the summary lines and the
  table GROUP, TOTAL, UPDATED, NEED UPDATE, SCHEDULED, ONLINE, ROLLOUT AT. A group
  the wave was not rolled out to shows "At Wave Completion" (active), "(Done)"
  (complete) or "Never (Wave Canceled)"; devices without a group are "(No Group)".
- ``status``: the total, then per tag LATEST TARGET, DEVICES, ON LATEST, ON ORPHAN,
  ONLINE (an active wave gets its own row, marked "(wave)"), then per tag its targets
  and groups. An orphan is a device running a target its view no longer lists (after
  a canceled wave, a canary device that installed the wave's build). Warnings name
  every published targets file that expires within 30 days.

"Updated" and "on latest" compare CI build numbers (``custom.version``), looked up by
target name in ``versions``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from wavesign.shared.timefmt import parse_utc

__all__ = [
    "DEFAULT_OFFLINE_THRESHOLD_HOURS",
    "EXPIRY_WARNING_DAYS",
    "NO_GROUP",
    "Bucket",
    "FleetReport",
    "GroupRow",
    "LiveWave",
    "RolledBucket",
    "TagFacts",
    "TagRow",
    "WaveFacts",
    "WaveReport",
    "expiry_warnings",
    "fleet_report",
    "wave_report",
]

DEFAULT_OFFLINE_THRESHOLD_HOURS = 4
EXPIRY_WARNING_DAYS = 30
NO_GROUP = "(No Group)"
AT_COMPLETION = "At Wave Completion"
DONE = "(Done)"
NEVER = "Never (Wave Canceled)"


def _group_label(group: str | None) -> str:
    return NO_GROUP if group is None else group


def _group_order(group: str | None) -> tuple[int, str]:
    return (1, "") if group is None else (0, group)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    cells = [list(header), *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]


# --- inputs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """``devices`` devices of ``tag`` and ``group`` running ``target`` (None: unknown),
    ``online`` of them seen recently. ``view`` is the live wave whose view they get
    (None: the tag's production view)."""

    tag: str
    group: str | None
    target: str | None
    devices: int
    online: int
    view: str | None = None


@dataclass(frozen=True)
class RolledBucket:
    """``devices`` devices of ``group`` running ``target`` that the wave was rolled out
    to, the first of them at ``first_rollout_at``."""

    group: str | None
    target: str | None
    devices: int
    first_rollout_at: str


@dataclass(frozen=True)
class WaveFacts:
    name: str
    tag: str
    version: int
    status: str
    created_at: str
    finished_at: str | None = None


@dataclass(frozen=True)
class TagFacts:
    """A tag's published production targets (``latest``: its highest CI build)."""

    tag: str
    latest: int | None
    targets: frozenset[str]
    expires: str | None = None
    targets_version: int | None = None


@dataclass(frozen=True)
class LiveWave:
    """A wave some devices get a view of: W while active, R once canceled.

    ``targets`` are the names in the view those devices get; ``expires`` that file's
    expiry.
    """

    name: str
    tag: str
    status: str
    version: int
    targets: frozenset[str]
    expires: str | None = None
    targets_version: int | None = None


# --- wave status --------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupRow:
    group: str | None
    total: int
    updated: int
    need_update: int
    scheduled: int
    online: int
    rollout_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": _group_label(self.group),
            "total": self.total,
            "updated": self.updated,
            "need_update": self.need_update,
            "scheduled": self.scheduled,
            "online": self.online,
            "rollout_at": self.rollout_at,
        }


@dataclass(frozen=True)
class WaveReport:
    wave: WaveFacts
    groups: tuple[GroupRow, ...]

    @property
    def devices(self) -> int:
        return sum(g.total for g in self.groups)

    @property
    def updated(self) -> int:
        return sum(g.updated for g in self.groups)

    @property
    def scheduled(self) -> int:
        return sum(g.scheduled for g in self.groups)

    @property
    def groups_on_tag(self) -> int:
        return sum(1 for g in self.groups if g.group is not None and g.total)

    @property
    def groups_rolled_out(self) -> int:
        labels = (AT_COMPLETION, DONE, NEVER)
        return sum(1 for g in self.groups if g.group is not None and g.rollout_at not in labels)

    def header(self) -> str:
        w = self.wave
        return f"Wave '{w.name}' for tag '{w.tag}' version {w.version} is {w.status}"

    def to_dict(self) -> dict[str, Any]:
        w = self.wave
        return {
            "name": w.name,
            "tag": w.tag,
            "version": w.version,
            "status": w.status,
            "created_at": w.created_at,
            "finished_at": w.finished_at,
            "device_groups_on_tag": self.groups_on_tag,
            "device_groups_rollout": self.groups_rolled_out,
            "devices_on_tag": self.devices,
            "devices_updated": self.updated,
            "devices_scheduled": self.scheduled,
            "devices_not_scheduled": self.devices - self.updated - self.scheduled,
            "groups": [g.to_dict() for g in self.groups],
        }

    def render(self) -> str:
        w = self.wave
        lines = [self.header(), f"Created At: {w.created_at}"]
        if w.finished_at:
            lines.append(f"Finished At: {w.finished_at}")
        lines += [
            "",
            f"Device Groups on Tag: {self.groups_on_tag}",
            f"Device Groups Rollout: {self.groups_rolled_out}",
            f"Devices on Tag: {self.devices}",
            f"Devices Updated: {self.updated}",
            f"Devices Scheduled for Update: {self.scheduled}",
            f"Devices Not Scheduled: {self.devices - self.updated - self.scheduled}",
            "",
        ]
        header = ("GROUP", "TOTAL", "UPDATED", "NEED UPDATE", "SCHEDULED", "ONLINE", "ROLLOUT AT")
        rows = [
            (_group_label(g.group), g.total, g.updated, g.need_update, g.scheduled, g.online,
             g.rollout_at)
            for g in self.groups
        ]  # fmt: skip
        lines += _table(header, rows)
        return "\n".join(lines)


def _updated(target: str | None, versions: Mapping[str, int], at_least: int) -> bool:
    if target is None:
        return False
    version = versions.get(target)
    return version is not None and version >= at_least


def wave_report(
    wave: WaveFacts,
    on_tag: Iterable[Bucket],
    rolled: Iterable[RolledBucket],
    versions: Mapping[str, int],
) -> WaveReport:
    """The ``wave status`` of ``wave`` from the tag's buckets and the rolled-out ones."""
    totals: dict[str | None, list[int]] = {}  # group -> [total, updated, online]
    for bucket in on_tag:
        row = totals.setdefault(bucket.group, [0, 0, 0])
        row[0] += bucket.devices
        row[1] += bucket.devices if _updated(bucket.target, versions, wave.version) else 0
        row[2] += bucket.online
    scheduled: dict[str | None, int] = {}
    first_at: dict[str | None, str] = {}
    for item in rolled:
        if not _updated(item.target, versions, wave.version):
            scheduled[item.group] = scheduled.get(item.group, 0) + item.devices
        else:
            scheduled.setdefault(item.group, 0)
        if item.group not in first_at or item.first_rollout_at < first_at[item.group]:
            first_at[item.group] = item.first_rollout_at
    never = {"active": AT_COMPLETION, "complete": DONE, "canceled": NEVER}
    pending = never.get(wave.status, AT_COMPLETION)
    rows = []
    for group in sorted(set(totals) | set(first_at), key=_group_order):
        total, updated, online = totals.get(group, [0, 0, 0])
        rows.append(
            GroupRow(
                group=group,
                total=total,
                updated=updated,
                need_update=total - updated,
                scheduled=scheduled.get(group, 0),
                online=online,
                rollout_at=first_at.get(group, pending),
            )
        )
    return WaveReport(wave, tuple(rows))


# --- fleet status -------------------------------------------------------------------------


@dataclass
class _Counts:
    devices: int = 0
    on_latest: int = 0
    on_orphan: int = 0
    online: int = 0

    def add(self, bucket: Bucket, latest: bool, orphan: bool) -> None:
        self.devices += bucket.devices
        self.on_latest += bucket.devices if latest else 0
        self.on_orphan += bucket.devices if orphan else 0
        self.online += bucket.online


@dataclass(frozen=True)
class TagRow:
    """One row of ``status``: a tag's production view, or an active wave on it."""

    tag: str
    wave: str | None
    latest: int | None
    devices: int
    on_latest: int
    on_orphan: int
    online: int
    targets: tuple[tuple[str, int], ...] = ()
    groups: tuple[tuple[str | None, int, int, int], ...] = ()

    @property
    def label(self) -> str:
        return self.tag if self.wave is None else f"{self.tag} (wave)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "wave": self.wave,
            "latest_target": self.latest,
            "devices": self.devices,
            "on_latest": self.on_latest,
            "on_orphan": self.on_orphan,
            "online": self.online,
            "targets": [{"name": name, "devices": count} for name, count in self.targets],
            "groups": [
                {"group": _group_label(g), "devices": d, "on_latest": latest, "online": o}
                for g, d, latest, o in self.groups
            ],
        }


@dataclass(frozen=True)
class FleetReport:
    total: int
    rows: tuple[TagRow, ...]
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_devices": self.total,
            "tags": [row.to_dict() for row in self.rows],
            "warnings": list(self.warnings),
        }

    def render(self) -> str:
        lines = [f"Total number of devices: {self.total}", ""]
        header = ("TAG", "LATEST TARGET", "DEVICES", "ON LATEST", "ON ORPHAN", "ONLINE")
        lines += _table(
            header,
            [
                (r.label, "-" if r.latest is None else r.latest, r.devices, r.on_latest,
                 r.on_orphan, r.online)
                for r in self.rows
            ],
        )  # fmt: skip
        for row in self.rows:
            lines += ["", f"## Tag: {row.label}", ""]
            lines += _table(("TARGET", "DEVICES"), [(n or "(unknown)", c) for n, c in row.targets])
            lines.append("")
            lines += _table(
                ("GROUP", "DEVICES", "ON LATEST", "ONLINE"),
                [(_group_label(g), d, latest, o) for g, d, latest, o in row.groups],
            )
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _tag_row(
    tag: str,
    wave: str | None,
    latest: int | None,
    view_targets: Mapping[str | None, frozenset[str]],
    buckets: Sequence[Bucket],
    versions: Mapping[str, int],
) -> TagRow:
    total = _Counts()
    by_target: dict[str, int] = {}
    by_group: dict[str | None, _Counts] = {}
    for bucket in buckets:
        version = versions.get(bucket.target) if bucket.target is not None else None
        on_latest = latest is not None and version == latest
        listed = view_targets.get(bucket.view, frozenset())
        orphan = bucket.target is not None and bucket.target not in listed
        total.add(bucket, on_latest, orphan)
        by_group.setdefault(bucket.group, _Counts()).add(bucket, on_latest, orphan)
        name = bucket.target or "(unknown)"
        by_target[name] = by_target.get(name, 0) + bucket.devices
    return TagRow(
        tag=tag,
        wave=wave,
        latest=latest,
        devices=total.devices,
        on_latest=total.on_latest,
        on_orphan=total.on_orphan,
        online=total.online,
        targets=tuple(sorted(by_target.items(), key=lambda kv: (-versions.get(kv[0], -1), kv[0]))),
        groups=tuple(
            (g, c.devices, c.on_latest, c.online)
            for g, c in sorted(by_group.items(), key=lambda kv: _group_order(kv[0]))
        ),
    )


def expiry_warnings(
    tags: Iterable[TagFacts],
    waves: Iterable[LiveWave],
    now: datetime,
    days: int = EXPIRY_WARNING_DAYS,
) -> list[str]:
    """One line per published targets file that expires within ``days`` of ``now``."""
    limit = now.astimezone(UTC) + timedelta(days=days)
    found: list[str] = []

    def check(expires: str | None, what: str, fix: str) -> None:
        if expires is None:
            return
        moment = parse_utc(expires)
        if moment <= limit:
            verb = "expired" if moment <= now else "expires"
            found.append(f"{what} {verb} at {expires}: {fix}")

    for tag in sorted(tags, key=lambda t: t.tag):
        check(
            tag.expires,
            f"production targets of tag {tag.tag} (version {tag.targets_version})",
            f"run `wavesign production renew {tag.tag}`",
        )
    for wave in sorted(waves, key=lambda w: w.name):
        kind = "targets" if wave.status == "active" else "revert targets"
        fix = "complete it or init a new wave" if wave.status == "active" else "init a new wave"
        check(wave.expires, f"{kind} of wave {wave.name} (version {wave.targets_version})", fix)
    return found


def fleet_report(
    tags: Iterable[TagFacts],
    waves: Iterable[LiveWave],
    buckets: Iterable[Bucket],
    versions: Mapping[str, int],
    now: datetime,
) -> FleetReport:
    """The ``status`` report. Devices in an active wave's view are counted on its row."""
    tag_facts = {t.tag: t for t in tags}
    live = {w.name: w for w in waves}
    by_row: dict[tuple[str, str | None], list[Bucket]] = {}
    for bucket in buckets:
        wave = live.get(bucket.view) if bucket.view is not None else None
        row_wave = wave.name if wave is not None and wave.status == "active" else None
        by_row.setdefault((bucket.tag, row_wave), []).append(bucket)
    for tag in tag_facts:
        by_row.setdefault((tag, None), [])
    for wave in live.values():
        if wave.status == "active":
            by_row.setdefault((wave.tag, wave.name), [])
    rows = []
    for (tag, wave_name), row_buckets in sorted(
        by_row.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
    ):
        facts = tag_facts.get(tag)
        view_targets: dict[str | None, frozenset[str]] = {
            None: facts.targets if facts is not None else frozenset()
        }
        view_targets.update({w.name: w.targets for w in live.values() if w.tag == tag})
        latest = facts.latest if facts is not None else None
        if wave_name is not None:
            latest = live[wave_name].version
        rows.append(_tag_row(tag, wave_name, latest, view_targets, row_buckets, versions))
    total = sum(r.devices for r in rows)
    warnings = expiry_warnings(tag_facts.values(), live.values(), now)
    return FleetReport(total, tuple(rows), tuple(warnings))
