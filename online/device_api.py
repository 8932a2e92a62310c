"""The device hot path: a lean raw ASGI app over precomputed bytes.

Routes (``design/cli.md``, "HTTP"):

- ``GET /device/v1/repo/{N.root.json | timestamp.json | V.snapshot.json | V.targets.json}``
  with ``Authorization: Bearer <device token>``: the file of the device's view, with a
  strong ETag; ``If-None-Match`` with that ETag gives a 304 without a body;
- ``POST /device/v1/events``: a JSON list of events, checked strictly and handed to the
  broker's sink as one batch (all or nothing).

Everything else is a 404. No FastAPI and no router: FastAPI's routing alone costs more
than this whole path (``design/architecture.md``, "Performance targets"). A request
costs one sha256 of the token and a few dict lookups; every response's header list is
built once, when a view is published.

The broker owns the data: it fills a :class:`DeviceDirectory` (token hashes, which
view each device is served, the published views) and swaps it when anything changes,
flushes :meth:`DeviceApp.drain_last_seen` in batches, and stores the events its sink
receives. Tokens are never logged; only their sha256 is held.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from wavesign.shared.errors import WavesignError
from wavesign.shared.strictjson import FieldReader, JSONInputError, loads_strict

from .publish import MetadataFile, PublishedView

__all__ = [
    "DEVICE_PREFIX",
    "EVENTS_PATH",
    "EVENT_TYPES",
    "MAX_EVENTS",
    "MAX_EVENTS_BYTES",
    "REPO_PREFIX",
    "DeviceApp",
    "DeviceDirectory",
    "DeviceEvent",
    "DirectoryError",
    "EventSink",
    "PreparedDirectory",
    "parse_events",
]

DEVICE_PREFIX = "/device/"
REPO_PREFIX = "/device/v1/repo/"
EVENTS_PATH = "/device/v1/events"
EVENT_TYPES = (
    "download-started",
    "download-completed",
    "install-started",
    "install-completed",
    "install-failed",
)
MAX_EVENTS_BYTES = 64 * 1024
MAX_EVENTS = 200
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_NAME_LIMIT = 500
_CORRELATION_LIMIT = 128

log = logging.getLogger(__name__)

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]
# Any ASGI app (FastAPI types its scope as a MutableMapping, hence the ellipsis).
ASGIApp = Callable[..., Awaitable[None]]


class DirectoryError(WavesignError):
    """A directory update would show some device older metadata than it already has."""


# --- events: strict parsing (pure) ----------------------------------------------------


@dataclass(frozen=True)
class DeviceEvent:
    """One event a device reported: what happened to which target, and when."""

    type: str
    target: str
    version: int
    correlation_id: str
    time: str

    @classmethod
    def from_dict(cls, data: Any, path: str) -> DeviceEvent:
        reader = FieldReader(data, path)
        event = cls(
            type=reader.choice("type", EVENT_TYPES),
            target=reader.string("target"),
            version=reader.integer("version", minimum=0),
            correlation_id=reader.string("correlation_id"),
            time=reader.string("time", pattern=_TIME),
        )
        reader.done()
        if not 0 < len(event.target) <= _NAME_LIMIT:
            raise JSONInputError(f"{path}.target: must be 1 to {_NAME_LIMIT} characters")
        if not 0 < len(event.correlation_id) <= _CORRELATION_LIMIT:
            raise JSONInputError(
                f"{path}.correlation_id: must be 1 to {_CORRELATION_LIMIT} characters"
            )
        return event

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "target": self.target,
            "version": self.version,
            "correlation_id": self.correlation_id,
            "time": self.time,
        }


def parse_events(
    body: bytes, *, max_bytes: int = MAX_EVENTS_BYTES, max_events: int = MAX_EVENTS
) -> list[DeviceEvent]:
    """The events of one POST body, or :class:`JSONInputError` naming the first problem."""
    data = loads_strict(body, what="events", max_size=max_bytes)
    if not isinstance(data, list):
        raise JSONInputError("events: expected a JSON list of events")
    if not data:
        raise JSONInputError("events: the list is empty")
    if len(data) > max_events:
        raise JSONInputError(f"events: {len(data)} events, above the limit of {max_events}")
    return [DeviceEvent.from_dict(item, f"events[{index}]") for index, item in enumerate(data)]


#: Receives ``(device, events)`` of one accepted batch; may be a coroutine function.
#: A synchronous sink runs in a worker thread so that it never blocks device polls.
EventSink = Callable[[str, list[DeviceEvent]], Awaitable[None] | None]


# --- precomputed responses --------------------------------------------------------------


def _json_headers(length: int, extra: Sequence[tuple[bytes, bytes]] = ()) -> list[Any]:
    return [
        (b"content-type", b"application/json"),
        (b"content-length", str(length).encode()),
        *extra,
    ]


def _canned(status: int, body: bytes, extra: Sequence[tuple[bytes, bytes]] = ()) -> _Response:
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": _json_headers(len(body), extra),
    }
    return _Response(start, {"type": "http.response.body", "body": body})


def _reason(status: int, message: str) -> _Response:
    return _canned(status, json.dumps({"error": message}).encode() + b"\n")


@dataclass(frozen=True)
class _Response:
    start: dict[str, Any]
    body: dict[str, Any]


@dataclass(frozen=True)
class _Served:
    """One file's two possible answers, built once per published view."""

    etag: bytes
    full: _Response
    not_modified: _Response

    @classmethod
    def of(cls, file: MetadataFile, cache_control: bytes) -> _Served:
        etag = file.etag.encode()
        full = _canned(200, file.body, [(b"etag", etag), (b"cache-control", cache_control)])
        not_modified = _Response(
            {
                "type": "http.response.start",
                "status": 304,
                "headers": [(b"etag", etag), (b"cache-control", cache_control)],
            },
            {"type": "http.response.body", "body": b""},
        )
        return cls(etag, full, not_modified)


# Versioned files never change; they are private to the device's token.
_IMMUTABLE = b"private, max-age=31536000, immutable"
_REVALIDATE = b"no-cache"
_UNAUTHORIZED = _canned(
    401,
    b'{"error": "missing or unknown device token"}\n',
    [(b"www-authenticate", b'Bearer realm="wavesign-device"')],
)
_NOT_FOUND = _canned(404, b'{"error": "not found"}\n')
_NO_VIEW = _canned(404, b'{"error": "nothing is published for this device yet"}\n')
_ACCEPTED = _Response(
    {"type": "http.response.start", "status": 204, "headers": []},
    {"type": "http.response.body", "body": b""},
)
_NOT_STORED = _reason(503, "events not stored, try again later")


def _served_files(view: PublishedView | None, roots: Sequence[MetadataFile]) -> dict[str, _Served]:
    files = {root.name: _Served.of(root, _IMMUTABLE) for root in roots}
    if view is not None:
        files[view.targets.name] = _Served.of(view.targets, _IMMUTABLE)
        files[view.snapshot.name] = _Served.of(view.snapshot, _IMMUTABLE)
        files["timestamp.json"] = _Served.of(view.timestamp, _REVALIDATE)
    return files


class _Slot:
    """What the devices of one view are served; swapped in place when a timestamp is renewed."""

    __slots__ = ("files", "view")

    def __init__(self, view: PublishedView | None, roots: Sequence[MetadataFile]) -> None:
        self.view = view
        self.files = _served_files(view, roots)


def _check_move(device: str, old: PublishedView, new: PublishedView | None) -> None:
    """Refuse to show ``device`` versions below those of the view it was served."""
    if new is None or new is old:
        return
    for role, before, after in (
        ("timestamp", old.timestamp.version, new.timestamp.version),
        ("snapshot", old.snapshot.version, new.snapshot.version),
        ("targets", old.targets.version, new.targets.version),
    ):
        # Timestamp and snapshot must go strictly up (an equal timestamp version is
        # silently ignored by clients, so the device would never see the new view);
        # the targets version may stay (a completed wave's W becomes production).
        if after < before or (after == before and role != "targets"):
            raise DirectoryError(
                f"device {device} would move from {old.describe()} to {new.describe()}: "
                f"clients refuse a {role} version that does not go up; publish the new "
                "views with a fresh counter value"
            )


class PreparedDirectory(NamedTuple):
    """A state built by :meth:`DeviceDirectory.prepare`, not served yet."""

    by_token: dict[str, tuple[str, _Slot]]
    slots: dict[Hashable, _Slot]
    #: The table it was checked against: installing over another one is refused.
    based_on: dict[str, tuple[str, _Slot]]


class DeviceDirectory:
    """Who a device token belongs to and which view that device is served (in memory).

    The broker calls :meth:`replace` after anything that changes tokens or views (a
    swap of whole tables: requests see the old state or the new one, never a mix) and
    :meth:`renew` after re-signing one view's timestamp. Only token sha256s are held.
    """

    def __init__(self) -> None:
        self._by_token: dict[str, tuple[str, _Slot]] = {}
        self._slots: dict[Hashable, _Slot] = {}

    def prepare(
        self,
        *,
        tokens: Mapping[str, str],
        views: Mapping[Hashable, PublishedView],
        view_of: Mapping[str, Hashable | None] | Callable[[str], Hashable | None],
        roots: Sequence[MetadataFile],
    ) -> PreparedDirectory:
        """Build (and check) a new state without serving it yet; :meth:`install` swaps it in.

        ``tokens`` maps a token's sha256 (hex) to a device key (its uuid), ``views`` a
        view key (e.g. ``views.View``) to its published files, and ``view_of`` a device
        key to its view key (None or absent: nothing published for it yet, only the
        roots are served). Raises :class:`DirectoryError` if a device would be shown
        lower versions than it is now (``publish`` module, invariant 3).

        Building is the slow part (a loop over every device token); it is separate so
        that several server processes can build first and then switch together.
        """
        root_names = [root.name for root in roots]
        for key, view in views.items():
            if [root.name for root in view.roots] != root_names:
                raise DirectoryError(f"view {key} was published with other roots")
        slots = {key: _Slot(view, roots) for key, view in views.items()}
        no_view = _Slot(None, roots)
        lookup = view_of.get if isinstance(view_of, Mapping) else view_of
        # Keyed by device, not token: a device whose token was replaced keeps its history.
        served_before = {device: slot.view for device, slot in self._by_token.values()}
        by_token: dict[str, tuple[str, _Slot]] = {}
        # A million devices share a handful of views: check each (old, new) pair once.
        checked: set[tuple[int, int]] = set()
        for token_sha256, device in tokens.items():
            key = lookup(device)
            slot = no_view if key is None else slots.get(key)
            if slot is None:
                raise DirectoryError(f"device {device} is assigned view {key}, not published")
            before = served_before.get(device)
            if before is not None:
                move = (id(before), id(slot.view))
                if move not in checked:
                    _check_move(device, before, slot.view)
                    checked.add(move)
            by_token[token_sha256] = (device, slot)
        return PreparedDirectory(by_token, slots, self._by_token)

    def install(self, prepared: PreparedDirectory) -> None:
        """Serve a prepared state (a swap of whole tables: requests see the old state or
        the new one, never a mix)."""
        if prepared.based_on is not self._by_token:
            raise DirectoryError("the directory changed since this state was prepared")
        self._by_token, self._slots = prepared.by_token, prepared.slots

    def replace(
        self,
        *,
        tokens: Mapping[str, str],
        views: Mapping[Hashable, PublishedView],
        view_of: Mapping[str, Hashable | None] | Callable[[str], Hashable | None],
        roots: Sequence[MetadataFile],
    ) -> None:
        """Prepare and install a new state at once (see :meth:`prepare`)."""
        self.install(self.prepare(tokens=tokens, views=views, view_of=view_of, roots=roots))

    def renew(self, key: Hashable, view: PublishedView) -> None:
        """Serve ``view`` (a renewed timestamp, same snapshot) to every device of ``key``."""
        slot = self._slots.get(key)
        if slot is None or slot.view is None:
            raise DirectoryError(f"view {key} is not published")
        if view.snapshot is not slot.view.snapshot and view.snapshot != slot.view.snapshot:
            raise DirectoryError(f"view {key}: a renewal must keep the snapshot")
        if view.timestamp.version <= slot.view.timestamp.version:
            raise DirectoryError(
                f"view {key}: renewed timestamp version {view.timestamp.version} is not "
                f"above {slot.view.timestamp.version}"
            )
        files = _served_files(view, slot.view.roots)
        slot.view, slot.files = view, files

    def view(self, key: Hashable) -> PublishedView | None:
        """The view currently published under ``key``."""
        slot = self._slots.get(key)
        return None if slot is None else slot.view

    def views(self) -> dict[Hashable, PublishedView]:
        return {key: slot.view for key, slot in self._slots.items() if slot.view is not None}

    def lookup(self, token_sha256: str) -> tuple[str, PublishedView | None] | None:
        """The device key and view of a token hash (None: unknown token)."""
        entry = self._by_token.get(token_sha256)
        return None if entry is None else (entry[0], entry[1].view)

    def __len__(self) -> int:
        return len(self._by_token)


# --- the ASGI app -------------------------------------------------------------------------


def _token_hash(authorization: bytes | None) -> str | None:
    if authorization is None or len(authorization) < 8:
        return None
    if authorization[:7] != b"Bearer " and authorization[:7].lower() != b"bearer ":
        return None
    return hashlib.sha256(authorization[7:].strip()).hexdigest()


def _matches(if_none_match: bytes, etag: bytes) -> bool:
    """RFC 9110 If-None-Match: a list of ETags (weak comparison) or ``*``."""
    if if_none_match == etag:
        return True
    for candidate in if_none_match.split(b","):
        candidate = candidate.strip()
        if candidate == b"*" or candidate.removeprefix(b"W/") == etag:
            return True
    return False


class DeviceApp:
    """The raw ASGI app of the device routes.

    ``sink(device, events)`` receives each accepted batch of events (a coroutine
    function is awaited; a plain function runs in a worker thread). If it raises,
    the device gets a 503 and keeps the events queued.

    ``fallback`` (e.g. the broker's FastAPI app) receives every request outside
    ``/device/`` and the lifespan events, so one server process serves both; without
    it those requests get a 404.
    """

    def __init__(
        self,
        directory: DeviceDirectory,
        sink: EventSink,
        *,
        max_events_bytes: int = MAX_EVENTS_BYTES,
        max_events: int = MAX_EVENTS,
        fallback: ASGIApp | None = None,
    ) -> None:
        self.directory = directory
        self.fallback = fallback
        self._sink = sink
        self._sink_is_async = inspect.iscoroutinefunction(sink)
        self.max_events_bytes = max_events_bytes
        self.max_events = max_events
        self._seen: dict[str, float] = {}

    def drain_last_seen(self) -> dict[str, datetime]:
        """The devices seen since the last drain, with when (UTC, to the second).

        Polls only touch an in-memory dict; the broker writes these in one batch.
        Call it from the server's event loop (it swaps the dict without a lock).
        """
        seen, self._seen = self._seen, {}
        wall, mono = time.time(), time.monotonic()
        return {
            device: datetime.fromtimestamp(int(wall - (mono - at)), UTC)
            for device, at in seen.items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith(REPO_PREFIX):
                response = self._repo(scope, path[len(REPO_PREFIX) :])
            elif path == EVENTS_PATH:
                response = await self._events(scope, receive)
            elif self.fallback is not None and not path.startswith(DEVICE_PREFIX):
                await self.fallback(scope, receive, send)
                return
            else:
                response = _NOT_FOUND
        elif self.fallback is not None:
            await self.fallback(scope, receive, send)
            return
        else:
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
        await send(response.start)
        await send(response.body)

    def _repo(self, scope: Scope, name: str) -> _Response:
        authorization = if_none_match = None
        for header, value in scope["headers"]:
            if header == b"authorization":
                authorization = value
            elif header == b"if-none-match":
                if_none_match = value
        token_sha256 = _token_hash(authorization)
        entry = None if token_sha256 is None else self.directory._by_token.get(token_sha256)
        if entry is None:
            return _UNAUTHORIZED
        device, slot = entry
        self._seen[device] = time.monotonic()
        if scope["method"] != "GET":
            return _NOT_FOUND
        served = slot.files.get(name)
        if served is None:
            return _NO_VIEW if slot.view is None and name == "timestamp.json" else _NOT_FOUND
        if if_none_match is not None and _matches(if_none_match, served.etag):
            return served.not_modified
        return served.full

    async def _events(self, scope: Scope, receive: Receive) -> _Response:
        authorization = None
        declared = None
        for header, value in scope["headers"]:
            if header == b"authorization":
                authorization = value
            elif header == b"content-length":
                declared = value
        token_sha256 = _token_hash(authorization)
        entry = None if token_sha256 is None else self.directory._by_token.get(token_sha256)
        if entry is None:
            return _UNAUTHORIZED
        device = entry[0]
        self._seen[device] = time.monotonic()
        if scope["method"] != "POST":
            return _NOT_FOUND
        if declared is not None and (
            not declared.isdigit() or int(declared) > self.max_events_bytes
        ):
            return _reason(
                400, f"events: the body is above the limit of {self.max_events_bytes} bytes"
            )
        body = await self._read_body(receive)
        if body is None:
            return _reason(
                400, f"events: the body is above the limit of {self.max_events_bytes} bytes"
            )
        try:
            events = parse_events(body, max_bytes=self.max_events_bytes, max_events=self.max_events)
        except JSONInputError as exc:
            return _reason(400, str(exc))
        try:
            if self._sink_is_async:
                await self._sink(device, events)  # type: ignore[misc]
            else:
                await asyncio.to_thread(self._sink, device, events)
        except Exception as exc:  # the sink is the broker's store: report, never crash
            log.error(
                "storing %d events of device %s failed: %s", len(events), device, type(exc).__name__
            )
            return _NOT_STORED
        return _ACCEPTED

    async def _read_body(self, receive: Receive) -> bytes | None:
        """The request body, or None once it grows past the limit."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_events_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
