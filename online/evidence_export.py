"""The evidence export: the folder ``wavesign-audit verify`` checks, read from the broker.

:func:`evidence_files` reads everything in **one write transaction** (SQLite's
``BEGIN IMMEDIATE``; on PostgreSQL the transparency log's lock row), so no change can
commit halfway through the export: the publications, files, waves and log it writes
belong to one state. It first signs a fresh tree head if the newest one does not cover
the whole log (``docs/formats/evidence.md``: the newest head covers every exported
event). :func:`write_evidence_folder` writes the files into a temporary sibling folder
and renames it into place: an export is complete or absent, never half-written.

Published files are the exact stored bytes that devices were served (never
re-serialized). The current snapshot and timestamp of each tag's production view are
re-derived from the serving publication record (counter value and signing time) with
the same pure functions and deterministic ed25519 keys the serving path uses, so they
are the bytes devices get for the state that record was made for.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select
from wavesign.shared.canonical import canonical_bytes, digest_bytes
from wavesign.shared.errors import WavesignError
from wavesign.shared.evidence import (
    MANIFEST,
    ConsistencyProof,
    InclusionProof,
    LogEvent,
    Manifest,
    Publication,
    WaveHistoryEntry,
    WaveRecord,
    document,
    publication_path,
    publications_document,
    root_path,
    waves_document,
)
from wavesign.shared.evidence import OnlineKeys as EvidenceOnlineKeys
from wavesign.shared.merkle import MerkleTree, TreeHead
from wavesign.shared.timefmt import format_utc, parse_utc

from . import db
from .eventlog import ensure_fresh_head, is_publication, log_events, log_tree, signed_heads
from .publish import publish_view, renew_timestamp, root_files
from .serving import read_publication
from .store import utcnow
from .store_waves import WaveStore

__all__ = [
    "EvidenceExportError",
    "check_destination",
    "evidence_files",
    "export_evidence",
    "write_evidence_folder",
]

#: Log event kinds listed in a wave's history (the ones the auditor relies on).
WAVE_HISTORY_KINDS = ("wave-created", "wave-rolled-out", "wave-canceled", "wave-completed")


class EvidenceExportError(WavesignError):
    """The evidence cannot be exported (no keys, a name the format cannot hold, a
    non-empty destination)."""


def _json_file(data: Any) -> bytes:
    return canonical_bytes(data) + b"\n"


def _setting(conn: Connection, key: str) -> str | None:
    value = conn.execute(select(db.settings.c.value).where(db.settings.c.key == key)).scalar()
    return None if value is None else str(value)


def _publications(conn: Connection, events: list[LogEvent]) -> list[Publication]:
    pubs = []
    for event in events:
        if is_publication(event):
            where = f"log event {event.index}"
            try:
                pubs.append(Publication.from_dict({**event.detail, "event": event.index}, where))
            except WavesignError as exc:
                raise EvidenceExportError(f"cannot export {where}: {exc}") from None
    return pubs


def _published_bodies(conn: Connection) -> dict[int, bytes]:
    rows = conn.execute(select(db.published_files.c.seq, db.published_files.c.body))
    return {int(seq): str(body).encode("utf-8") for seq, body in rows.all()}


def _waves(conn: Connection, events: list[LogEvent]) -> list[WaveRecord]:
    history: dict[str, list[WaveHistoryEntry]] = {}
    for event in events:
        if event.kind in WAVE_HISTORY_KINDS:
            history.setdefault(event.subject, []).append(
                WaveHistoryEntry(event.index, event.kind, event.time, event.detail)
            )
    return [
        WaveRecord(
            name=row.name,
            tag=row.tag,
            ci_version=int(row.version),
            status=row.status,
            request=str(row.request_id),
            version=int(row.wave_version),
            revert_version=int(row.revert_version),
            wave_sha256=row.wave_sha256,
            revert_sha256=row.revert_sha256,
            history=tuple(history.get(row.name, ())),
        )
        for row in conn.execute(select(db.waves).order_by(db.waves.c.id)).all()
    ]


def _log_files(
    events: list[LogEvent], heads: list[dict[str, Any]], included: list[int]
) -> dict[str, bytes]:
    tree: MerkleTree = log_tree(events)
    parsed = [TreeHead.from_dict(head["signed"]) for head in heads]
    if not parsed or parsed[-1].size != len(events):
        raise EvidenceExportError("the newest tree head does not cover the whole log")
    consistency = [
        ConsistencyProof(old.size, new.size, tuple(tree.consistency_proof(old.size, new.size)))
        for old, new in itertools.pairwise(parsed)
    ]
    size = parsed[-1].size
    inclusion = [
        InclusionProof(index, size, tuple(tree.inclusion_proof(index, size))) for index in included
    ]
    return {
        "log/events.jsonl": b"".join(event.to_line() + b"\n" for event in events),
        "log/heads.json": _json_file(
            {"format": "wavesign-evidence-tree-heads", "version": 1, "heads": heads}
        ),
        "log/consistency.json": _json_file(document("consistency", "proofs", consistency)),
        "log/inclusion.json": _json_file(document("inclusion", "proofs", inclusion)),
    }


def _current(
    conn: Connection, store: WaveStore, roots: list[bytes], now: datetime
) -> dict[str, bytes]:
    """Each tag's production snapshot and timestamp, as the serving path signs them."""
    assert store.keys is not None
    rows = conn.execute(
        select(db.tag_state.c.tag, db.tag_state.c.production_json)
        .where(db.tag_state.c.production_json.is_not(None))
        .order_by(db.tag_state.c.tag)
    ).all()
    if not rows:
        return {}
    record = read_publication(conn)
    if record is not None:
        version, at = record.version, parse_utc(record.at)
        ts_version, ts_at = record.timestamp_version, parse_utc(record.timestamp_at)
    else:  # never served (an embedded broker without a server): sign at the counter
        version = ts_version = max(1, int(_setting(conn, "metadata_counter") or 0))
        at = ts_at = now
    files = {}
    served_roots = root_files(roots)
    for tag, production in rows:
        view = publish_view(
            str(production).encode("utf-8"),
            roots=served_roots,
            version=version,
            snapshot_signer=store.keys.signer("snapshot"),
            timestamp_signer=store.keys.signer("timestamp"),
            now=at,
        )
        if ts_version != version:
            view = renew_timestamp(
                view,
                version=ts_version,
                timestamp_signer=store.keys.signer("timestamp"),
                now=ts_at,
            )
        files[f"current/{tag}.snapshot.json"] = view.snapshot.body
        files[f"current/{tag}.timestamp.json"] = view.timestamp.body
    return files


def _gnupg_keys(conn: Connection, role: str) -> bytes:
    armored = conn.execute(
        select(db.gpg_keys.c.armored)
        .where(db.gpg_keys.c.role == role)
        .order_by(db.gpg_keys.c.created_at, db.gpg_keys.c.fingerprint)
    ).scalars()
    return "".join(text if text.endswith("\n") else text + "\n" for text in armored).encode()


def _collect(conn: Connection, store: WaveStore, now: datetime) -> dict[str, bytes]:
    assert store.keys is not None
    files: dict[str, bytes] = {}
    roots = [
        (int(version), str(text).encode("utf-8"))
        for version, text in conn.execute(
            select(db.roots.c.version, db.roots.c.root_json).order_by(db.roots.c.version)
        ).all()
    ]
    for version, body in roots:
        files[root_path(version)] = body
    events = log_events(conn)
    pubs = _publications(conn, events)
    bodies = _published_bodies(conn)
    for pub in pubs:
        if pub.role == "targets":
            if pub.seq not in bodies:
                raise EvidenceExportError(f"the bytes of {pub.describe()} are missing")
            files[publication_path(pub.seq)] = bodies[pub.seq]
    files["publications.json"] = _json_file(publications_document(pubs))
    for row in conn.execute(
        select(
            db.signing_requests.c.id,
            db.signing_requests.c.request_json,
            db.signing_requests.c.response_json,
        ).order_by(db.signing_requests.c.id)
    ).all():
        files[f"requests/{row.id}.request.json"] = str(row.request_json).encode() + b"\n"
        if row.response_json:
            files[f"responses/{row.id}.response.json"] = str(row.response_json).encode() + b"\n"
    online = store.keys.public_keys()
    online_keys = EvidenceOnlineKeys({**online, "log": online["timestamp"]})
    files["keys/online.json"] = _json_file(online_keys.to_dict())
    files["keys/operators.asc"] = _gnupg_keys(conn, "operator")
    files["keys/officers.asc"] = _gnupg_keys(conn, "officer")
    files["waves.json"] = _json_file(waves_document(_waves(conn, events)))
    files.update(_log_files(events, signed_heads(conn), [pub.event for pub in pubs]))
    files.update(_current(conn, store, [body for _, body in roots], now))
    factory = _setting(conn, "factory") or "wavesign"
    manifest = Manifest(
        factory,
        format_utc(now),
        {path: digest_bytes(data) for path, data in sorted(files.items())},
    )
    try:
        # The reader's own strict parse: every path and name fits the format.
        Manifest.from_dict(manifest.to_dict())
    except WavesignError as exc:
        raise EvidenceExportError(
            f"the evidence format cannot hold this broker's data: {exc}"
        ) from None
    files[MANIFEST] = _json_file(manifest.to_dict())
    return files


def evidence_files(store: WaveStore, now: datetime | None = None) -> dict[str, bytes]:
    """Every file of the evidence folder, by relative path (``docs/formats/evidence.md``)."""
    signer = store.log_signer()
    if signer is None or store.keys is None:
        raise EvidenceExportError("this broker has no online keys: tree heads cannot be signed")
    moment = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    with store.engine.begin() as conn:
        ensure_fresh_head(conn, utcnow(), signer)
        return _collect(conn, store, moment)


def check_destination(out: str | os.PathLike[str]) -> Path:
    """Refuse a destination that exists and is not an empty folder."""
    path = Path(out)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise EvidenceExportError(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        raise EvidenceExportError(f"{path} is not empty: choose a new or empty folder")
    return path


def write_evidence_folder(files: Mapping[str, bytes], out: str | os.PathLike[str]) -> list[str]:
    """Write ``files`` as the folder ``out``: into a temporary sibling, renamed into place.

    Refuses an ``out`` that exists and is not an empty folder. Returns the relative
    paths written, sorted.
    """
    path = check_destination(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        for relative, data in files.items():
            target = staging / relative
            if ".." in Path(relative).parts or Path(relative).is_absolute():
                raise EvidenceExportError(f"refusing to write {relative!r} outside the folder")
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        staging.chmod(0o755)
        check_destination(path)
        if path.is_dir():
            path.rmdir()
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sorted(files)


def export_evidence(store: WaveStore, out: Path) -> list[str]:
    """Export the evidence folder of ``store`` to ``out``; the relative paths written.

    ``out`` must not exist or be an empty folder; nothing is left behind on failure.
    """
    check_destination(out)
    return write_evidence_folder(evidence_files(store), out)
