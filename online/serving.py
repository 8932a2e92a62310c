"""The broker serves devices: database state -> views -> published bytes -> ``DeviceDirectory``.

This module is the wiring between the store (the tables of :mod:`wavesign.online.db`)
and the device hot path (:mod:`wavesign.online.device_api`):

1. :func:`load_state` reads, in one read transaction, everything views depend on: the
   roots, each tag's production targets bytes, the live waves (active, or canceled with
   R still above production) with their W/R bytes, recorded devices and full groups,
   and every device's token hash, tag and group.
2. :func:`assign_views` runs the pure :func:`wavesign.online.views.select_view` once per
   class of devices: a device recorded in no live wave sees what every device of its
   (tag, group) sees, so only wave devices are selected one by one.
3. :meth:`Serving.refresh` claims a publication (below), signs every view with
   :func:`wavesign.online.publish.publish_views` and swaps the directory.

Several server processes on one database
----------------------------------------
Each process polls a cheap change marker every second: the size of the transparency
log (every store change appends to it in its own transaction; device reports, stored
here, are not in it and never change views). When the marker moves, the process loads
the state and *claims* a publication in a short write transaction: if the ``settings``
row ``serving_publication`` already names this marker, another process published it,
and this one reuses its counter value and signing time; otherwise it takes the next
value of the global counter (``settings.metadata_counter``) and records it. Online
keys are ed25519 by default, whose signatures are deterministic, so every process
then serves byte-identical files for the same state. The processes then switch to it
together (:class:`Serving`), so a device may hit any of them. The timestamp re-signer
claims its renewals through the same record.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, bindparam, func, or_, select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from wavesign.shared.canonical import canonical_bytes
from wavesign.shared.errors import WavesignError
from wavesign.shared.timefmt import format_utc, parse_utc

from . import db
from .device_api import (
    DeviceApp,
    DeviceDirectory,
    DeviceEvent,
    DirectoryError,
    PreparedDirectory,
)
from .onlinekeys import OnlineKeys
from .publish import (
    DEFAULT_TIMESTAMP_LIFETIME,
    MetadataFile,
    PublishedView,
    PublishError,
    needs_refresh,
    publish_views,
    renew_timestamp,
    root_files,
)
from .rollout import DeviceRef
from .views import View, ViewState, WaveRecord, select_view

__all__ = [
    "DEVICE_EVENTS_KIND",
    "PUBLICATION_KEY",
    "LoadedState",
    "Publication",
    "Serving",
    "ServingConfig",
    "ServingError",
    "assign_views",
    "live_wave_rows",
    "load_state",
    "read_publication",
    "state_marker",
    "store_device_events",
    "write_last_seen",
]

#: Kind of the ``events`` row one batch of device reports is stored as.
DEVICE_EVENTS_KIND = "device-events"
#: ``settings`` key of the current publication record (JSON).
PUBLICATION_KEY = "serving_publication"
COUNTER_KEY = "metadata_counter"
#: ``settings`` key prefix of each server process's heartbeat (JSON).
NODE_PREFIX = db.HEARTBEAT_PREFIX

log = logging.getLogger(__name__)


class ServingError(WavesignError):
    """Device reports or a publication could not be stored."""


@dataclass(frozen=True)
class ServingConfig:
    """Timings of the background tasks (the defaults suit production)."""

    poll_interval: float = 1.0
    flush_interval: float = 5.0
    timestamp_lifetime: timedelta = DEFAULT_TIMESTAMP_LIFETIME
    #: Re-sign a timestamp once it expires within this margin.
    refresh_margin: timedelta = timedelta(hours=6)
    #: Seconds after which a silent server process no longer holds back a switch.
    node_timeout: float = 15.0

    def __post_init__(self) -> None:
        if self.poll_interval <= 0 or self.flush_interval <= 0 or self.node_timeout <= 0:
            raise ServingError("serving intervals must be above 0 seconds")
        if not timedelta(0) < self.refresh_margin < self.timestamp_lifetime:
            raise ServingError(
                "the timestamp refresh margin must be above 0 and below the timestamp lifetime"
            )


# --- loading (read-only SQL) ------------------------------------------------------------


class DeviceRow(NamedTuple):
    """A device as serving needs it (a tuple: a million of them are built per load)."""

    uuid: str
    token_sha256: str
    tag: str
    group: str | None


@dataclass(frozen=True)
class LoadedState:
    """Everything views depend on, read in one transaction at change marker ``marker``."""

    marker: int
    roots: tuple[bytes, ...]
    view_state: ViewState
    #: Exact published bytes per (kind, tag, wave): production, wave W, revert R.
    targets: Mapping[tuple[str, str, str | None], bytes]
    devices: tuple[DeviceRow, ...]

    def targets_of(self, view: View) -> bytes:
        return self.targets[(view.kind, view.tag, view.wave)]


def state_marker(conn: Connection) -> int:
    """How many events the transparency log holds (0: none): every store change appends
    to it in its own transaction; device reports, which never change views, do not.

    ``max`` over the unique index ``ux_events_leaf_index``: one index probe, however
    many device reports came after the last change.
    """
    value = conn.execute(select(func.max(db.events.c.leaf_index))).scalar()
    return 0 if value is None else int(value) + 1


def live_wave_rows(conn: Connection, production: Mapping[str, int | None]) -> list[Any]:
    """The waves some devices get a view of: active ones, and canceled ones whose revert R
    is still above the tag's production version (below it, R can never be selected)."""
    rows = conn.execute(
        select(
            db.waves.c.id,
            db.waves.c.name,
            db.waves.c.tag,
            db.waves.c.status,
            db.waves.c.version,
            db.waves.c.wave_version,
            db.waves.c.revert_version,
            db.waves.c.wave_signed,
            db.waves.c.revert_signed,
        ).where(db.waves.c.status.in_(("active", "canceled")), db.waves.c.wave_signed.is_not(None))
    ).all()
    return [
        row
        for row in rows
        if row.status == "active" or row.revert_version > (production.get(row.tag) or 0)
    ]


def load_state(conn: Connection) -> LoadedState:
    """Read the serving state (call inside one read transaction for a consistent view)."""
    marker = state_marker(conn)
    roots = tuple(
        str(text).encode("utf-8")
        for text in conn.execute(
            select(db.roots.c.root_json).order_by(db.roots.c.version)
        ).scalars()
    )
    production: dict[str, int] = {}
    targets: dict[tuple[str, str, str | None], bytes] = {}
    for tag_row in conn.execute(
        select(
            db.tag_state.c.tag, db.tag_state.c.production_version, db.tag_state.c.production_json
        ).where(db.tag_state.c.production_json.is_not(None))
    ):
        production[tag_row.tag] = int(tag_row.production_version)
        targets[("production", tag_row.tag, None)] = str(tag_row.production_json).encode()

    live = {int(row.id): row for row in live_wave_rows(conn, production)}
    group_names = {
        int(row.id): str(row.name)
        for row in conn.execute(select(db.device_groups.c.id, db.device_groups.c.name))
    }
    uuid_of: dict[int, str] = {}
    device_rows: list[DeviceRow] = []
    # The DB-API cursor's own fetchall: plain tuples of str and int, without
    # SQLAlchemy's Row objects (a third of the load over a million devices).
    result = conn.execute(
        select(
            db.devices.c.id,
            db.devices.c.uuid,
            db.devices.c.token_sha256,
            db.devices.c.tag,
            db.devices.c.group_id,
        )
    )
    rows = result.cursor.fetchall() if result.cursor is not None else result.all()
    new_row = DeviceRow._make
    for device_id, uuid, token_sha256, tag, group_id in rows:
        uuid_of[device_id] = uuid
        group = None if group_id is None else group_names.get(group_id)
        device_rows.append(new_row((uuid, token_sha256, tag, group)))
    result.close()
    members: dict[int, set[str]] = {wave_id: set() for wave_id in live}
    groups: dict[int, set[str]] = {wave_id: set() for wave_id in live}
    if live:
        ids = list(live)
        for wave_id, device_id in conn.execute(
            select(db.wave_devices.c.wave_id, db.wave_devices.c.device_id).where(
                db.wave_devices.c.wave_id.in_(ids)
            )
        ).all():
            uuid = uuid_of.get(device_id)
            if uuid is not None:
                members[wave_id].add(uuid)
        for wave_id, group_id in conn.execute(
            select(db.rollouts.c.wave_id, db.rollouts.c.group_id).where(
                db.rollouts.c.wave_id.in_(ids),
                db.rollouts.c.full_group.is_(True),
                db.rollouts.c.group_id.is_not(None),
            )
        ):
            groups[wave_id].add(group_names[group_id])
    records = []
    for wave_id, row in sorted(live.items()):
        records.append(
            WaveRecord(
                name=row.name,
                tag=row.tag,
                status=row.status,
                version=int(row.wave_version),
                revert_version=int(row.revert_version),
                devices=frozenset(members[wave_id]),
                full_groups=frozenset(groups[wave_id]),
            )
        )
        targets[("wave", row.tag, row.name)] = str(row.wave_signed).encode("utf-8")
        if row.revert_signed is not None:
            targets[("revert", row.tag, row.name)] = str(row.revert_signed).encode("utf-8")
    devices = tuple(device_rows)
    return LoadedState(
        marker=marker,
        roots=roots,
        view_state=ViewState(production=production, waves=tuple(records)),
        targets=targets,
        devices=devices,
    )


def assign_views(devices: Iterable[DeviceRow], state: ViewState) -> dict[str, View | None]:
    """Each device's view (None: nothing published for its tag yet), by uuid.

    Pure. select_view depends on a device's tag, group and the waves it is recorded in
    (by uuid), so devices that share all three share the answer: it runs once per such
    class (a handful), not once per device.
    """
    membership: dict[str, tuple[str, ...]] = {}
    for wave in state.waves:
        for uuid in wave.devices:
            membership[uuid] = (*membership.get(uuid, ()), wave.name)
    by_class: dict[tuple[str, str | None, tuple[str, ...]], View | None] = {}
    result: dict[str, View | None] = {}
    for device in devices:
        key = (device.tag, device.group, membership.get(device.uuid, ()))
        if key in by_class:
            result[device.uuid] = by_class[key]
            continue
        # Every device of the class gets the same answer: this one stands for them all.
        view = select_view(DeviceRef(device.uuid, device.tag, device.group), state)
        chosen = view if view.version is not None else None
        by_class[key] = result[device.uuid] = chosen
    return result


# --- the publication record (coordinates processes) ---------------------------------------


@dataclass(frozen=True)
class Publication:
    """The views of state ``marker`` are signed at ``version``, at time ``at``; their
    current timestamps at ``timestamp_version``, at ``timestamp_at``."""

    marker: int
    version: int
    at: str
    timestamp_version: int
    timestamp_at: str
    #: When every server process switches to it (Unix time in milliseconds); None
    #: while some live process is still preparing it.
    serve_at_ms: int | None = None

    @property
    def generation(self) -> int:
        """What processes agree on: a fresh counter value per publication or renewal."""
        return self.timestamp_version

    def to_dict(self) -> dict[str, Any]:
        return {
            "marker": self.marker,
            "version": self.version,
            "at": self.at,
            "timestamp_version": self.timestamp_version,
            "timestamp_at": self.timestamp_at,
            "serve_at_ms": self.serve_at_ms,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Publication:
        serve_at = data.get("serve_at_ms")
        return cls(
            marker=int(data["marker"]),
            version=int(data["version"]),
            at=str(data["at"]),
            timestamp_version=int(data["timestamp_version"]),
            timestamp_at=str(data["timestamp_at"]),
            serve_at_ms=None if serve_at is None else int(serve_at),
        )

    def committed(self) -> bool:
        """A switch time is set: no process may claim a newer publication before it."""
        return self.serve_at_ms is not None


def read_publication(conn: Connection) -> Publication | None:
    """The current publication record (None: nothing was ever published)."""
    text = conn.execute(
        select(db.settings.c.value).where(db.settings.c.key == PUBLICATION_KEY)
    ).scalar()
    return None if text is None else Publication.from_dict(json.loads(text))


def _upsert_setting(conn: Connection, key: str, value: str) -> None:
    exists = conn.execute(select(db.settings.c.key).where(db.settings.c.key == key)).first()
    if exists is None:
        conn.execute(db.settings.insert().values(key=key, value=value))
    else:
        conn.execute(update(db.settings).where(db.settings.c.key == key).values(value=value))


def _next_counter(conn: Connection) -> int:
    """The next value of the global counter, written in the caller's transaction."""
    current = conn.execute(
        select(db.settings.c.value).where(db.settings.c.key == COUNTER_KEY).with_for_update()
    ).scalar()
    value = int(current or 0) + 1
    _upsert_setting(conn, COUNTER_KEY, str(value))
    return value


def _write_publication(conn: Connection, publication: Publication) -> None:
    _upsert_setting(conn, PUBLICATION_KEY, canonical_bytes(publication.to_dict()).decode("utf-8"))


# --- writes from the device path -----------------------------------------------------------


def store_device_events(engine: Engine, device: str, events: Sequence[DeviceEvent]) -> None:
    """Store one batch of a device's reports, all or nothing, as one ``events`` row.

    ``install-completed`` sets the device's ``current_target`` (the last one of the
    batch wins: events are in the order they happened).
    """
    installed = [e.target for e in events if e.type == "install-completed"]
    with engine.begin() as conn:
        row = conn.execute(select(db.devices.c.id).where(db.devices.c.uuid == device)).first()
        if row is None:
            raise ServingError(f"device {device} is not registered")
        if installed:
            conn.execute(
                update(db.devices)
                .where(db.devices.c.id == row.id)
                .values(current_target=installed[-1])
            )
        conn.execute(
            db.events.insert().values(
                at=format_utc(datetime.now(UTC)),
                actor=f"device:{device}",
                kind=DEVICE_EVENTS_KIND,
                subject=device,
                detail=canonical_bytes({"events": [e.to_dict() for e in events]}).decode(),
            )
        )


def write_last_seen(engine: Engine, seen: Mapping[str, datetime]) -> int:
    """Write when devices were last seen, in one batched UPDATE; returns the row count.

    A time never replaces a later one (another server process may have seen the
    device more recently and flushed first).
    """
    if not seen:
        return 0
    rows = [{"u": uuid, "t": format_utc(at)} for uuid, at in sorted(seen.items())]
    last_seen = db.devices.c.last_seen
    statement = (
        update(db.devices)
        .where(
            db.devices.c.uuid == bindparam("u"),
            or_(last_seen.is_(None), last_seen < bindparam("t")),
        )
        .values(last_seen=bindparam("t"))
    )
    with engine.begin() as conn:
        conn.execute(statement, rows)
    return len(rows)


# --- server processes (coordinates the switch to a new publication) -------------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


class NodeState(NamedTuple):
    """What a server process says in its heartbeat: the generation it has prepared (or
    serves), and the one it serves."""

    ready: int
    serving: int


def _write_node(conn: Connection, node: str, seen_ms: int, state: NodeState) -> None:
    value = {"seen_ms": seen_ms, "ready": state.ready, "serving": state.serving}
    _upsert_setting(conn, NODE_PREFIX + node, json.dumps(value))


def _live_nodes(conn: Connection, now_ms: int, timeout_ms: int) -> dict[str, NodeState]:
    """The processes heard from within ``timeout_ms``, and what each is ready to serve
    and serves.

    Rows of processes silent for a hundred timeouts (killed, never left) are deleted.
    """
    live, gone = {}, []
    for key, value in conn.execute(
        select(db.settings.c.key, db.settings.c.value).where(
            db.settings.c.key.like(NODE_PREFIX + "%")
        )
    ):
        node = json.loads(value)
        silent_ms = now_ms - int(node["seen_ms"])
        if silent_ms <= timeout_ms:
            state = NodeState(int(node["ready"]), int(node.get("serving", 0)))
            live[str(key).removeprefix(NODE_PREFIX)] = state
        elif silent_ms > 100 * timeout_ms:
            gone.append(key)
    if gone:
        conn.execute(db.settings.delete().where(db.settings.c.key.in_(gone)))
    return live


# --- the serving state machine --------------------------------------------------------------


@dataclass
class _Served:
    marker: int
    publication: Publication | None
    views: dict[Hashable, PublishedView] = field(default_factory=dict)


@dataclass
class _Pending(_Served):
    """A publication prepared (signed, directory built) but not served yet."""

    prepared: PreparedDirectory | None = None
    #: Kept to rebuild the directory if a renewal arrives before the switch.
    inputs: tuple[Mapping[str, str], Mapping[str, View | None], tuple[MetadataFile, ...]] = (
        {},
        {},
        (),
    )
    since_ms: int = field(default_factory=_now_ms)


class _Wait:
    """A claim must wait: another publication's switch is due first."""


_WAIT = _Wait()


class Serving:
    """Keeps a :class:`DeviceDirectory` in step with the database (one per process).

    A device may poll any server process (or worker) of one database, so they must
    never disagree in a way it could notice: once one serves a publication, none may
    still serve an older one. They therefore switch *together*: each prepares the
    new publication (the slow part: signing, building the token table), says so in
    its ``settings`` row ``serving_node:ID`` (a heartbeat, written every poll), and the
    last one ready sets a switch time ``serve_at_ms`` a couple of polls ahead, by which
    every process has seen it. Nobody claims a newer publication until every live
    process serves it (see :meth:`_must_wait`). A process unheard of for
    ``node_timeout`` no longer holds the others back; a lone process switches at once.
    docs/architecture.md ("Serving devices") tells the whole protocol.
    """

    def __init__(
        self,
        engine: Engine,
        keys: OnlineKeys,
        directory: DeviceDirectory,
        config: ServingConfig | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.engine = engine
        self.keys = keys
        self.directory = directory
        self.config = config or ServingConfig()
        self.node_id = secrets.token_hex(8)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._served: _Served | None = None
        self._pending: _Pending | None = None
        self._reported = 0
        self._beat: tuple[threading.Event, threading.Thread] | None = None
        self._is_postgres = engine.dialect.name == "postgresql"

    # -- transactions --------------------------------------------------------------------
    def _read(self) -> Any:
        options: dict[str, Any] = {"wavesign_read_only": True}
        if self._is_postgres:
            # One snapshot for the whole load (PostgreSQL's default gives one per statement).
            options["isolation_level"] = "REPEATABLE READ"
        return self.engine.connect().execution_options(**options)

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC).replace(microsecond=0)

    def _lock_counter(self, conn: Connection) -> None:
        # The counter row lock serializes claimers on PostgreSQL; SQLite holds the
        # write lock from BEGIN IMMEDIATE.
        conn.execute(
            select(db.settings.c.value).where(db.settings.c.key == COUNTER_KEY).with_for_update()
        ).scalar()

    @property
    def _switch_delay_ms(self) -> int:
        # Every process polls once per interval: two intervals and a margin let each
        # see the switch time before it comes.
        return int(2000 * self.config.poll_interval) + 250

    # -- what is served ------------------------------------------------------------------
    @property
    def served_marker(self) -> int | None:
        """The change marker of the state being served (None before the first switch)."""
        return None if self._served is None else self._served.marker

    @property
    def publication(self) -> Publication | None:
        return None if self._served is None else self._served.publication

    def current_marker(self) -> tuple[int, Publication | None]:
        with self._read() as conn, conn.begin():
            return state_marker(conn), read_publication(conn)

    # -- the process registry ------------------------------------------------------------
    def _node_state(self, ready: int | None = None) -> NodeState:
        def generation(current: _Served | None) -> int:
            return (
                0
                if current is None or current.publication is None
                else (current.publication.generation)
            )

        serving = generation(self._served)
        if ready is None:
            ready = generation(self._pending) or serving
        return NodeState(ready, serving)

    def heartbeat(self) -> None:
        """Tell the other processes this one is alive, what it is ready to serve and what
        it serves."""
        with self.engine.begin() as conn:
            _write_node(conn, self.node_id, _now_ms(), self._node_state())

    def start_heartbeat(self) -> None:
        """Heartbeat every poll from a thread of its own: preparing a publication for a
        million devices takes longer than ``node_timeout``, and a process must not look
        dead meanwhile (the others would switch without it)."""
        if self._beat is not None:
            return
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.config.poll_interval):
                try:
                    self.heartbeat()
                except DBAPIError as exc:
                    log.warning("heartbeat failed: %s", type(exc).__name__)

        thread = threading.Thread(target=beat, name=f"wavesign-heartbeat-{self.node_id}")
        thread.daemon = True
        thread.start()
        self._beat = (stop, thread)

    def stop_heartbeat(self) -> None:
        if self._beat is not None:
            stop, thread = self._beat
            stop.set()
            thread.join(timeout=10)
            self._beat = None

    def leave(self) -> None:
        """Stop holding the other processes back (at shutdown)."""
        self.stop_heartbeat()
        with self.engine.begin() as conn:
            conn.execute(
                db.settings.delete().where(db.settings.c.key == NODE_PREFIX + self.node_id)
            )

    # -- refresh -------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> bool:
        """Prepare the newest publication, and switch to it when every live process is
        ready; True if it switched."""
        # A due switch first: a promised publication is served, never skipped (another
        # process may serve it already).
        switched = self.switch_if_due()
        self._prepare(force)
        return self.switch_if_due() or switched

    def start(self) -> None:
        """The first publication of this process, before it accepts requests."""
        self.heartbeat()
        self.start_heartbeat()
        deadline = time.monotonic() + 2 * self.config.node_timeout + 10
        self.refresh(force=True)
        while self._served is None and time.monotonic() < deadline:
            time.sleep(self.seconds_to_next_step())
            self.heartbeat()
            self.refresh()
        if self._served is None:
            raise ServingError("no publication became ready to serve: see the log of every server")

    def seconds_to_next_step(self) -> float:
        """Until the next poll, or sooner if a switch is due before it."""
        delay = self.config.poll_interval
        pending = self._pending
        if pending is not None and pending.publication is not None:
            serve_at = pending.publication.serve_at_ms
            if serve_at is not None:
                delay = min(delay, max(0.0, (serve_at - _now_ms()) / 1000))
        return delay

    def _prepare(self, force: bool) -> None:
        marker, record = self.current_marker()
        pending = self._pending
        if (
            pending is not None
            and pending.publication is not None
            and record is not None
            and record.generation == pending.publication.generation
            and record.committed()
        ):
            # Promised to every process: serve it at its time before preparing anything.
            pending.publication = record
            return
        basis = self._pending or self._served
        if not force and basis is not None and basis.marker == marker:
            if (
                record is not None
                and basis.publication is not None
                and record.marker == marker
                and record.version == basis.publication.version
                and record.generation > basis.publication.generation
            ):
                self._pending = self._renewal(basis, record)
            return
        for _attempt in range(5):
            with self._read() as conn, conn.begin():
                state = load_state(conn)
            publication = None
            if state.roots:
                claimed = self._claim(state)
                if claimed is _WAIT:
                    return  # keep what is pending; claim after the due switch
                if not isinstance(claimed, Publication):
                    continue  # the state moved between the load and the claim: load again
                publication = claimed
            served = self._served
            if (
                served is not None
                and served.marker == state.marker
                and _same_generation(served.publication, publication)
            ):
                self._pending = None  # already serving exactly this
                return
            self._pending = self._prepare_swap(state, publication)
            return
        raise ServingError("the database kept changing: could not publish a consistent state")

    def _claim(self, state: LoadedState) -> Publication | _Wait | None:
        """The publication for ``state``: an existing one or a new counter value.

        None if the state changed since it was loaded (or the claim lost a race);
        ``_WAIT`` if another publication's switch is due first.
        """
        try:
            with self.engine.begin() as conn:
                self._lock_counter(conn)
                if state_marker(conn) != state.marker:
                    return None
                record = read_publication(conn)
                if record is not None and record.marker == state.marker:
                    return record
                if record is not None and self._must_wait(conn, record):
                    return _WAIT
                version = _next_counter(conn)
                at = format_utc(self._now())
                record = Publication(state.marker, version, at, version, at)
                _write_publication(conn, record)
                return record
        except (OperationalError, DBAPIError) as exc:
            log.warning("claiming a publication failed (%s); retrying", type(exc).__name__)
            return None

    def _must_wait(self, conn: Connection, record: Publication) -> bool:
        """Whether a newer publication must wait for ``record`` (under the counter lock).

        A committed switch is a promise to every process: nothing newer is claimed until
        every live process serves it (not merely until its time passed: a process late
        by a poll would otherwise skip it and keep serving an older one). An uncommitted
        record that every live process is ready for is committed now rather than
        superseded, so a stream of changes cannot starve the switches.
        """
        now = _now_ms()
        live = _live_nodes(conn, now, int(1000 * self.config.node_timeout))
        if record.committed():
            assert record.serve_at_ms is not None
            if record.serve_at_ms > now:
                return True
            # A process that serves nothing yet (starting) shows devices nothing older.
            return any(0 < node.serving < record.generation for node in live.values())
        if live and all(node.ready >= record.generation for node in live.values()):
            delay = self._switch_delay_ms if len(live) > 1 else 0
            _write_publication(conn, replace(record, serve_at_ms=now + delay))
            return True
        return False  # served by nobody: a newer state supersedes it

    def _prepare_swap(self, state: LoadedState, publication: Publication | None) -> _Pending:
        assignment = assign_views(state.devices, state.view_state)
        tokens = {device.token_sha256: device.uuid for device in state.devices}
        views: dict[Hashable, PublishedView] = {}
        roots: tuple[MetadataFile, ...] = ()
        if publication is not None:
            roots = root_files(state.roots)
            needed = {view for view in assignment.values() if view is not None}
            views = dict(
                publish_views(
                    {view: state.targets_of(view) for view in needed},
                    roots=roots,
                    version=publication.version,
                    snapshot_signer=self.keys.signer("snapshot"),
                    timestamp_signer=self.keys.signer("timestamp"),
                    now=parse_utc(publication.at),
                    timestamp_lifetime=self.config.timestamp_lifetime,
                )
            )
            if publication.timestamp_version != publication.version:
                views = self._renewed(views, publication)
        else:
            assignment = {uuid: None for uuid in assignment}
        prepared = self.directory.prepare(
            tokens=tokens, views=views, view_of=assignment, roots=roots
        )
        return _Pending(state.marker, publication, views, prepared, (tokens, assignment, roots))

    def _renewed(
        self, views: Mapping[Hashable, PublishedView], record: Publication
    ) -> dict[Hashable, PublishedView]:
        signer = self.keys.signer("timestamp")
        return {
            key: renew_timestamp(
                view,
                version=record.timestamp_version,
                timestamp_signer=signer,
                now=parse_utc(record.timestamp_at),
                timestamp_lifetime=self.config.timestamp_lifetime,
            )
            for key, view in views.items()
        }

    def _renewal(self, basis: _Served, record: Publication) -> _Pending:
        """``basis`` (served or pending) with its timestamps renewed as ``record`` says."""
        views = self._renewed(basis.views, record)
        if isinstance(basis, _Pending):
            # Not served yet: rebuild its directory around the renewed views.
            tokens, assignment, roots = basis.inputs
            prepared = self.directory.prepare(
                tokens=tokens, views=views, view_of=assignment, roots=roots
            )
            return _Pending(basis.marker, record, views, prepared, basis.inputs)
        return _Pending(basis.marker, record, views)

    # -- the switch ------------------------------------------------------------------------
    def switch_if_due(self) -> bool:
        """Serve what is pending once every live process is ready and its time came."""
        pending = self._pending
        if pending is None:
            return False
        publication = pending.publication
        if publication is not None:
            if publication.serve_at_ms is None:
                committed = self._commit(publication)
                if committed is None:
                    return False
                pending.publication = publication = committed
            assert publication.serve_at_ms is not None
            late_ms = _now_ms() - publication.serve_at_ms
            if late_ms < 0:
                return False
            if late_ms > 1000 * self.config.poll_interval and self._served is not None:
                log.warning(
                    "switched to publication %d %.1f s late: a device polling several "
                    "servers may have met an older one meanwhile",
                    publication.generation,
                    late_ms / 1000,
                )
        self._install(pending)
        # Say at once what this process serves: newer publications wait for it.
        self.heartbeat()
        return True

    def _commit(self, publication: Publication) -> Publication | None:
        """Set the switch time of ``publication`` if every live process is ready for it
        (or return the one another process set); None while some are not."""
        with self.engine.begin() as conn:
            self._lock_counter(conn)
            record = read_publication(conn)
            if record is None or record.generation != publication.generation:
                return None  # superseded: the next refresh prepares the newer one
            if record.committed():
                return record
            now = _now_ms()
            _write_node(conn, self.node_id, now, self._node_state(ready=publication.generation))
            live = _live_nodes(conn, now, int(1000 * self.config.node_timeout))
            behind = sorted(n for n, node in live.items() if node.ready < publication.generation)
            if behind:
                self._report_waiting(publication, behind)
                return None
            delay = self._switch_delay_ms if len(live) > 1 else 0
            record = replace(record, serve_at_ms=now + delay)
            _write_publication(conn, record)
            return record

    def _report_waiting(self, publication: Publication, behind: list[str]) -> None:
        """Say once per publication when live processes hold it back for long: a process
        that cannot prepare it (see its log) blocks every switch, by design, because
        serving apart would show devices a rollback."""
        pending = self._pending
        waited_s = 0.0 if pending is None else (_now_ms() - pending.since_ms) / 1000
        if waited_s > self.config.node_timeout and self._reported != publication.generation:
            self._reported = publication.generation
            log.warning(
                "publication %d has waited %.0f s for server processes %s to prepare it",
                publication.generation,
                waited_s,
                ", ".join(behind),
            )

    def _install(self, pending: _Pending) -> None:
        if pending.prepared is not None:
            self.directory.install(pending.prepared)
        else:  # a renewal of what is served
            for key, view in pending.views.items():
                self.directory.renew(key, view)
        self._served = _Served(pending.marker, pending.publication, pending.views)
        self._pending = None
        publication = pending.publication
        log.info(
            "serving %d devices, %d views (state %d, version %s, timestamp %s)",
            len(self.directory),
            len(pending.views),
            pending.marker,
            None if publication is None else publication.version,
            None if publication is None else publication.timestamp_version,
        )

    # -- timestamps ----------------------------------------------------------------------
    def renew_if_needed(self) -> bool:
        """Claim a renewal of every timestamp if any expires within the margin; True if it
        claimed one (it is served once every live process is ready, like a publication)."""
        served = self._served
        if (
            self._pending is not None
            or served is None
            or served.publication is None
            or not served.views
        ):
            return False
        now = self._now()
        if not any(
            needs_refresh(view, now, self.config.refresh_margin) for view in served.views.values()
        ):
            return False
        current = served.publication
        with self.engine.begin() as conn:
            self._lock_counter(conn)
            record = read_publication(conn)
            if (
                record is None
                or record.marker != served.marker
                or record.version != current.version
                or self._must_wait(conn, record)
            ):
                return False  # the state changed, or a switch is due: look again next poll
            if record.generation == current.generation:
                version = _next_counter(conn)
                record = Publication(
                    record.marker, record.version, record.at, version, format_utc(now)
                )
                _write_publication(conn, record)
        self._pending = self._renewal(served, record)
        self.switch_if_due()
        return True

    def step(self) -> None:
        """One poll: heartbeat, prepare what changed, switch when due, renew timestamps."""
        self.heartbeat()
        self.refresh()
        self.renew_if_needed()

    # -- the device path's writes ------------------------------------------------------
    def store_events(self, device: str, events: list[DeviceEvent]) -> None:
        """The ``DeviceApp`` sink (runs in a worker thread)."""
        store_device_events(self.engine, device, events)

    def flush_last_seen(self, seen: Mapping[str, datetime]) -> int:
        return write_last_seen(self.engine, seen)

    # -- the background loop -------------------------------------------------------------
    async def run(self, app: DeviceApp) -> None:
        """Poll the marker, switch, renew timestamps and flush last_seen until cancelled."""
        loop = asyncio.get_running_loop()
        last_flush = loop.time()
        try:
            while True:
                await asyncio.sleep(self.seconds_to_next_step())
                try:
                    await asyncio.to_thread(self.step)
                except (WavesignError, PublishError, DirectoryError, DBAPIError) as exc:
                    log.error("serving refresh failed: %s", exc)
                except Exception:  # keep serving the last good state; never die silently
                    log.exception("serving refresh failed")
                if loop.time() - last_flush >= self.config.flush_interval:
                    last_flush = loop.time()
                    await self._flush(app)
        finally:
            await self._flush(app)
            try:
                await asyncio.to_thread(self.leave)
            except DBAPIError as exc:
                log.error("leaving the server registry failed: %s", type(exc).__name__)

    async def _flush(self, app: DeviceApp) -> None:
        seen = app.drain_last_seen()
        if not seen:
            return
        try:
            await asyncio.to_thread(self.flush_last_seen, seen)
        except DBAPIError as exc:
            log.error("writing last_seen of %d devices failed: %s", len(seen), type(exc).__name__)


def _same_generation(one: Publication | None, other: Publication | None) -> bool:
    if one is None or other is None:
        return one is other
    return one.version == other.version and one.generation == other.generation
