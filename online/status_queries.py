"""The SQL behind ``status`` and ``wave status``: GROUP BY aggregates, never a device loop.

A fleet of 1,000,000 devices reduces to a few hundred :class:`~wavesign.online.status.Bucket`
rows (tag x group x current target x view) in one scan of ``devices``; the devices of
live waves (a few rollouts' worth) are counted in a second, smaller aggregate and
moved to their wave's view. Everything else is per tag or per wave. The pure
:mod:`wavesign.online.status` turns the buckets into the reports.

A device's view follows ``views.select_view``: the store records every device a wave
reached in ``wave_devices`` (full-group joiners included), an active wave's W and a
canceled wave's R (while above production) outrank production, and of several live
waves on a tag the newest has the highest version.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, func, select
from sqlalchemy.orm import aliased
from wavesign.shared.errors import WavesignError
from wavesign.shared.timefmt import format_utc

from . import db
from .serving import live_wave_rows
from .status import (
    DEFAULT_OFFLINE_THRESHOLD_HOURS,
    Bucket,
    FleetReport,
    LiveWave,
    RolledBucket,
    TagFacts,
    WaveFacts,
    WaveReport,
    fleet_report,
    wave_report,
)

__all__ = ["StatusError", "fleet_status", "wave_status"]

_CHUNK = 5000


class StatusError(WavesignError):
    """The wave asked about does not exist."""


def _since(now: datetime, threshold_hours: float) -> str:
    return format_utc(now.astimezone(UTC) - timedelta(hours=threshold_hours))


def _online(since: str) -> Any:
    return func.sum(case((db.devices.c.last_seen >= since, 1), else_=0))


def _group_names(conn: Connection) -> dict[int, str]:
    return {
        int(row.id): row.name
        for row in conn.execute(select(db.device_groups.c.id, db.device_groups.c.name))
    }


def _target_versions(conn: Connection, names: Iterable[str | None]) -> dict[str, int]:
    """CI build numbers of the named targets (registered by CI)."""
    wanted = sorted({n for n in names if n is not None})
    versions: dict[str, int] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        for row in conn.execute(
            select(db.ci_targets.c.name, db.ci_targets.c.version).where(
                db.ci_targets.c.name.in_(chunk)
            )
        ):
            versions[row.name] = int(row.version)
    return versions


def _signed(document: str | None) -> dict[str, Any]:
    return dict(json.loads(document)["signed"]) if document else {}


def _tag_facts(conn: Connection) -> list[TagFacts]:
    facts = []
    for row in conn.execute(
        select(
            db.tag_state.c.tag,
            db.tag_state.c.production_json,
            db.tag_state.c.production_ci_version,
            db.tag_state.c.production_version,
        )
    ):
        signed = _signed(row.production_json)
        facts.append(
            TagFacts(
                tag=row.tag,
                latest=row.production_ci_version,
                targets=frozenset(signed.get("targets", {})),
                expires=signed.get("expires"),
                targets_version=row.production_version,
            )
        )
    return facts


def _live_waves(conn: Connection, production: Mapping[str, int | None]) -> dict[int, LiveWave]:
    """Waves some devices get a view of, by wave id (``serving.load_state``'s rule)."""
    live: dict[int, LiveWave] = {}
    for row in live_wave_rows(conn, production):
        active = row.status == "active"
        signed = _signed(row.wave_signed if active else row.revert_signed)
        live[int(row.id)] = LiveWave(
            name=row.name,
            tag=row.tag,
            status=row.status,
            version=int(row.version),
            targets=frozenset(signed.get("targets", {})),
            expires=signed.get("expires"),
            targets_version=int(row.wave_version if active else row.revert_version),
        )
    return live


def _wave_sizes(conn: Connection, ids: list[int]) -> dict[int, int]:
    wd = db.wave_devices.c
    return {
        int(wave_id): int(n)
        for wave_id, n in conn.execute(
            select(wd.wave_id, func.count()).where(wd.wave_id.in_(ids)).group_by(wd.wave_id)
        )
    }


def _full_groups(conn: Connection, ids: list[int]) -> dict[int, dict[int, str]]:
    """Per wave: the groups it was rolled out to whole, with their first rollout time."""
    r = db.rollouts.c
    found: dict[int, dict[int, str]] = {}
    for wave_id, group_id, first in conn.execute(
        select(r.wave_id, r.group_id, func.min(r.created_at))
        .where(r.wave_id.in_(ids), r.full_group.is_(True), r.group_id.is_not(None))
        .group_by(r.wave_id, r.group_id)
    ):
        found.setdefault(int(wave_id), {})[int(group_id)] = str(first)
    return found


def _covered(status: str, groups: Iterable[int], size: int, on_tag: Mapping[int, int]) -> bool:
    """Whether an active wave's devices are exactly the devices of its full groups.

    The store records every device of a fully rolled-out group, and each device that
    joins it while the wave is active, so those devices are a subset of the wave's;
    equal counts then mean equal sets, and the wave's buckets are those groups'
    buckets: no join over its (maybe 100,000s of) devices is needed.
    """
    groups = list(groups)
    return status == "active" and bool(groups) and size == sum(on_tag.get(g, 0) for g in groups)


def _buckets(conn: Connection, live: Mapping[int, LiveWave], since: str) -> list[Bucket]:
    groups = _group_names(conn)
    d = db.devices.c
    counts: dict[tuple[str, int | None, str | None], list[int]] = {}
    for row in conn.execute(
        select(d.tag, d.group_id, d.current_target, func.count(), _online(since)).group_by(
            d.tag, d.group_id, d.current_target
        )
    ):
        counts[(row[0], row[1], row[2])] = [int(row[3]), int(row[4] or 0)]

    def label(group_id: int | None) -> str | None:
        return None if group_id is None else groups.get(group_id)

    in_waves: list[Bucket] = []
    ids = list(live)
    sizes = _wave_sizes(conn, ids) if ids else {}
    full = _full_groups(conn, ids) if ids else {}
    explicit: list[int] = []
    for wave_id, wave in live.items():
        per_group: dict[int, int] = {}
        for (tag, group_id, _target), (n, _online_n) in counts.items():
            if tag == wave.tag and group_id is not None:
                per_group[group_id] = per_group.get(group_id, 0) + n
        wave_groups = full.get(wave_id, {})
        if not _covered(wave.status, wave_groups, sizes.get(wave_id, 0), per_group):
            explicit.append(wave_id)
            continue
        for key in [k for k in counts if k[0] == wave.tag and k[1] in wave_groups]:
            n, online = counts.pop(key)
            in_waves.append(Bucket(key[0], label(key[1]), key[2], n, online, wave.name))
    if explicit:
        wd = db.wave_devices
        newer = aliased(db.wave_devices)
        newest_only = ~(
            select(newer.c.wave_id)
            .where(
                newer.c.device_id == wd.c.device_id,
                newer.c.wave_id.in_(ids),
                newer.c.wave_id > wd.c.wave_id,
            )
            .exists()
        )
        query = (
            select(wd.c.wave_id, d.tag, d.group_id, d.current_target, func.count(), _online(since))
            .select_from(wd.join(db.devices, d.id == wd.c.device_id))
            .where(and_(wd.c.wave_id.in_(explicit), newest_only))
            .group_by(wd.c.wave_id, d.tag, d.group_id, d.current_target)
        )
        for wave_id, tag, group_id, current, devices, online in conn.execute(query):
            rest = counts.get((tag, group_id, current))
            if rest is None:  # moved to a covered wave's buckets (cannot happen) or raced
                continue
            devices, online = min(int(devices), rest[0]), min(int(online or 0), rest[1])
            rest[0] -= devices
            rest[1] -= online
            in_waves.append(Bucket(tag, label(group_id), current, devices, online,
                                   live[wave_id].name))  # fmt: skip
    production = [
        Bucket(tag, label(gid), current, n, online)
        for (tag, gid, current), (n, online) in counts.items()
        if n
    ]
    return production + in_waves


def fleet_status(
    conn: Connection,
    *,
    now: datetime | None = None,
    offline_threshold_hours: float = DEFAULT_OFFLINE_THRESHOLD_HOURS,
) -> FleetReport:
    """The ``status`` report of the whole fleet."""
    moment = now or datetime.now(UTC)
    tags = _tag_facts(conn)
    live = _live_waves(conn, {t.tag: t.targets_version for t in tags})
    buckets = _buckets(conn, live, _since(moment, offline_threshold_hours))
    versions = _target_versions(conn, (b.target for b in buckets))
    return fleet_report(tags, live.values(), buckets, versions, moment)


def _wave_row(conn: Connection, name: str | None) -> Any:
    w = db.waves.c
    query = select(db.waves)
    if name is not None:
        row = conn.execute(query.where(w.name == name)).first()
        if row is None:
            raise StatusError(f"no wave named {name}")
        return row
    row = conn.execute(query.where(w.status == "active").order_by(w.id.desc()).limit(1)).first()
    if row is None:
        row = conn.execute(query.order_by(w.id.desc()).limit(1)).first()
    if row is None:
        raise StatusError("there are no waves yet: create one with `wavesign wave init`")
    return row


def wave_status(
    conn: Connection,
    name: str | None = None,
    *,
    now: datetime | None = None,
    offline_threshold_hours: float = DEFAULT_OFFLINE_THRESHOLD_HOURS,
) -> WaveReport:
    """The ``wave status`` report of wave ``name`` (default: the newest active wave, or
    the newest wave)."""
    moment = now or datetime.now(UTC)
    wave = _wave_row(conn, name)
    groups = _group_names(conn)
    since = _since(moment, offline_threshold_hours)
    d = db.devices.c

    def label(group_id: int | None) -> str | None:
        return None if group_id is None else groups.get(group_id)

    on_tag: list[Bucket] = []
    on_tag_keys: list[int | None] = []
    for row in conn.execute(
        select(d.group_id, d.current_target, func.count(), _online(since))
        .where(d.tag == wave.tag)
        .group_by(d.group_id, d.current_target)
    ):
        on_tag_keys.append(row[0])
        on_tag.append(Bucket(wave.tag, label(row[0]), row[1], int(row[2]), int(row[3] or 0)))
    wd = db.wave_devices
    r = db.rollouts
    wave_id = int(wave.id)
    full = _full_groups(conn, [wave_id]).get(wave_id, {})
    per_group: dict[int, int] = {}
    for key, bucket in zip(on_tag_keys, on_tag, strict=True):
        if key is not None:
            per_group[key] = per_group.get(key, 0) + bucket.devices
    size = _wave_sizes(conn, [wave_id]).get(wave_id, 0)
    rolled: list[RolledBucket]
    if _covered(wave.status, full, size, per_group):
        rolled = [
            RolledBucket(b.group, b.target, b.devices, full[key])
            for key, b in zip(on_tag_keys, on_tag, strict=True)
            if key is not None and key in full
        ]
    else:
        rolled = [
            RolledBucket(label(row[0]), row[1], int(row[2]), str(row[3]))
            for row in conn.execute(
                select(d.group_id, d.current_target, func.count(), func.min(r.c.created_at))
                .select_from(
                    wd.join(db.devices, d.id == wd.c.device_id).join(r, r.c.id == wd.c.rollout_id)
                )
                .where(wd.c.wave_id == wave_id)
                .group_by(d.group_id, d.current_target)
            )
        ]
    # Group rollouts that reached no device yet still have a rollout time.
    rolled += [
        RolledBucket(label(row[0]), None, 0, str(row[1]))
        for row in conn.execute(
            select(r.c.group_id, func.min(r.c.created_at))
            .where(r.c.wave_id == wave_id, r.c.group_id.is_not(None))
            .group_by(r.c.group_id)
        )
    ]
    versions = _target_versions(conn, (b.target for b in on_tag))
    facts = WaveFacts(
        name=wave.name,
        tag=wave.tag,
        version=int(wave.version),
        status=wave.status,
        created_at=wave.created_at,
        finished_at=wave.finished_at,
    )
    return wave_report(facts, on_tag, rolled, versions)
