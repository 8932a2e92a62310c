"""The broker's transparency log: the ``events`` table as an RFC 9162 Merkle tree.

Every committed change of the broker appends its event(s) here in its own transaction:
each event gets the next leaf index, its leaf hash (``SHA-256(0x00 || canonical
event)``, the evidence form :class:`wavesign.shared.evidence.LogEvent`) extends the
tree, and a tree head over the new size is signed with the online timestamp key, all
before the commit. A head therefore never names an event that was rolled back.

Appending is O(log n): the tree's compact range (the roots of its perfect subtrees,
:class:`wavesign.shared.merkle.MerkleLog`) is kept in the ``settings`` row
``transparency_log`` together with the size and the publication counter. That row is
also the log's lock (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite holds the write
lock from ``BEGIN IMMEDIATE``): changes append one at a time, in commit order.

Device reports (kind ``device-events``) are stored in ``events`` by the serving path
but are not part of the log: they are claims of devices, not decisions of the broker,
and their ``leaf_index`` stays NULL.

A publication (a file made visible to devices) is logged as an event of kind
``published`` whose detail is the record of ``publications.json`` in the evidence
format (without its ``event`` field); the file's exact bytes go to ``published_files``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from securesystemslib.signer import Signer
from sqlalchemy import Connection, select, update
from wavesign.shared.canonical import canonical_bytes, digest_bytes
from wavesign.shared.errors import WavesignError
from wavesign.shared.evidence import PUBLISHED_EVENT, LogEvent
from wavesign.shared.merkle import MerkleLog, MerkleTree, TreeHead, sign_tree_head

from . import db

__all__ = [
    "LOG_STATE_KEY",
    "LogEntry",
    "LogError",
    "LogState",
    "PublicationDraft",
    "append_to_log",
    "ensure_fresh_head",
    "log_events",
    "log_tree",
    "read_state",
    "signed_heads",
]

#: ``settings`` key of the log's size, compact range and publication counter.
LOG_STATE_KEY = "transparency_log"


class LogError(WavesignError):
    """The transparency log is not in the state a change or a proof needs."""


@dataclass
class LogState:
    """The log's size, its compact range (largest subtree first), and counters."""

    size: int
    frontier: list[bytes]
    publications: int
    head_time: str | None

    @classmethod
    def empty(cls) -> LogState:
        return cls(0, [], 0, None)

    def to_json(self) -> str:
        data = {
            "size": self.size,
            "frontier": [node.hex() for node in self.frontier],
            "publications": self.publications,
            "head_time": self.head_time,
        }
        return canonical_bytes(data).decode("utf-8")

    @classmethod
    def from_json(cls, text: str) -> LogState:
        data = json.loads(text)
        return cls(
            int(data["size"]),
            [bytes.fromhex(node) for node in data["frontier"]],
            int(data["publications"]),
            data.get("head_time"),
        )


@dataclass(frozen=True)
class PublicationDraft:
    """A file about to become visible to devices; ``seq`` and time come at append."""

    role: str
    body: str
    version: int
    request: str
    payload: str
    view: str | None = None
    tag: str | None = None
    wave: str | None = None
    root_version: int | None = None

    def record(self, seq: int, time: str) -> dict[str, Any]:
        """The ``published`` event's detail: the evidence publication record."""
        data: dict[str, Any] = {
            "seq": seq,
            "time": time,
            "role": self.role,
            "version": self.version,
            "sha256": digest_bytes(self.body.encode("utf-8")),
            "request": self.request,
            "payload": self.payload,
        }
        if self.role == "targets":
            data.update(
                view=self.view, tag=self.tag, wave=self.wave, root_version=self.root_version
            )
        return data

    def subject(self) -> str:
        if self.role == "root":
            return f"root v{self.version}"
        return f"{self.view} targets v{self.version} of tag {self.tag}"


@dataclass(frozen=True)
class LogEntry:
    """One event a change appends: its own, or a publication's."""

    kind: str
    subject: str
    detail: dict[str, Any]
    publication: PublicationDraft | None = None


def read_state(conn: Connection, *, lock: bool) -> LogState:
    query = select(db.settings.c.value).where(db.settings.c.key == LOG_STATE_KEY)
    if lock:
        query = query.with_for_update()
    text = conn.execute(query).scalar()
    if text is None:
        raise LogError("the database has no transparency log: run `wavesign server migrate`")
    return LogState.from_json(str(text))


def _write_state(conn: Connection, state: LogState) -> None:
    conn.execute(
        update(db.settings).where(db.settings.c.key == LOG_STATE_KEY).values(value=state.to_json())
    )


def _sign_head(conn: Connection, log: MerkleLog, state: LogState, at: str, signer: Signer) -> None:
    # Heads never go back in time, even if this host's clock does.
    timestamp = max(at, state.head_time or at)
    head = TreeHead.of(log, timestamp)
    signed = sign_tree_head(signer, head)
    conn.execute(
        db.tree_heads.insert().values(
            size=head.size,
            root_hash=head.root_hash,
            timestamp=head.timestamp,
            head_json=canonical_bytes(signed).decode("utf-8"),
        )
    )
    state.head_time = timestamp


def append_to_log(
    conn: Connection,
    *,
    at: str,
    actor: str,
    entries: Sequence[LogEntry],
    signer: Signer | None,
) -> list[int]:
    """Append ``entries`` as events (in order), sign the new tree head; the leaf indexes.

    Runs inside the change's transaction, after its writes: the log lock is taken last,
    so no change ever waits for it while holding it.
    """
    state = read_state(conn, lock=True)
    log = MerkleLog(state.size, state.frontier)
    indexes = []
    for entry in entries:
        detail = entry.detail
        if entry.publication is not None:
            state.publications += 1
            detail = entry.publication.record(state.publications, at)
        event = LogEvent(log.size, at, actor, entry.kind, entry.subject, detail)
        conn.execute(
            db.events.insert().values(
                at=at,
                actor=actor,
                kind=entry.kind,
                subject=entry.subject,
                detail=canonical_bytes(detail).decode("utf-8"),
                leaf_index=event.index,
            )
        )
        if entry.publication is not None:
            conn.execute(
                db.published_files.insert().values(
                    seq=state.publications,
                    leaf_index=event.index,
                    sha256=detail["sha256"],
                    body=entry.publication.body,
                )
            )
        indexes.append(log.append(event.leaf()))
    state.size, state.frontier = log.size, log.frontier
    if signer is not None:
        _sign_head(conn, log, state, at, signer)
    _write_state(conn, state)
    return indexes


def ensure_fresh_head(conn: Connection, at: str, signer: Signer) -> None:
    """Sign a head over the whole log if the newest one is older (a write transaction).

    Every change signs its head, so this only happens for events appended without a
    key (``server init``) or before the log existed (events of an upgraded database).
    """
    state = read_state(conn, lock=True)
    newest = conn.execute(
        select(db.tree_heads.c.size).order_by(db.tree_heads.c.size.desc()).limit(1)
    ).scalar()
    if state.size == 0 or newest == state.size:
        return
    _sign_head(conn, MerkleLog(state.size, state.frontier), state, at, signer)
    _write_state(conn, state)


def log_events(conn: Connection, size: int | None = None) -> list[LogEvent]:
    """The logged events in leaf order (the first ``size`` of them)."""
    query = (
        select(
            db.events.c.leaf_index,
            db.events.c.at,
            db.events.c.actor,
            db.events.c.kind,
            db.events.c.subject,
            db.events.c.detail,
        )
        .where(db.events.c.leaf_index.is_not(None))
        .order_by(db.events.c.leaf_index)
    )
    if size is not None:
        query = query.where(db.events.c.leaf_index < size)
    events = [
        LogEvent(int(r.leaf_index), r.at, r.actor, r.kind, r.subject, json.loads(r.detail))
        for r in conn.execute(query).all()
    ]
    for position, event in enumerate(events):
        if event.index != position:
            raise LogError(f"the transparency log has no event {position}: it was tampered with")
    return events


def log_tree(events: Sequence[LogEvent]) -> MerkleTree:
    """All perfect subtrees of the log, for O(log n) roots and proofs of any size."""
    return MerkleTree([event.leaf() for event in events])


def signed_heads(conn: Connection) -> list[dict[str, Any]]:
    """Every signed tree head, oldest (smallest) first."""
    rows = conn.execute(select(db.tree_heads.c.head_json).order_by(db.tree_heads.c.size))
    return [json.loads(text) for text in rows.scalars()]


def is_publication(event: LogEvent) -> bool:
    return event.kind == PUBLISHED_EVENT
