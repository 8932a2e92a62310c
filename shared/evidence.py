"""The evidence export: the folder an auditor verifies, and a strict reader for it.

The broker writes it (``wavesign evidence export --out DIR``); ``wavesign-audit
verify`` reads it. Every document here is parsed strictly (duplicate keys, floats,
unknown fields and wrong types are refused, naming the file and field), because an
evidence folder is untrusted input by definition: the auditor is checking the party
that wrote it. The byte-level specification is ``docs/formats/evidence.md``.

Layout (every path is fixed by the format; nothing else may be in the folder)::

    MANIFEST.json                       sha256 of every other file
    root/N.root.json                    every root version, exactly as served
    published/S.targets.json            the targets file of publication S, exactly as served
    publications.json                   the publication index (roots and targets, in order)
    current/TAG.snapshot.json           the current production view's snapshot, per tag
    current/TAG.timestamp.json          ... and its timestamp
    requests/ID.request.json            every signing request, full form, operator-signed
    responses/ID.response.json          the response to request ID
    keys/online.json                    the broker's online public keys
    keys/operators.asc, keys/officers.asc   GnuPG public keys (ASCII armour)
    waves.json                          wave records with their history
    log/events.jsonl                    the event log, one canonical JSON event per line
    log/heads.json                      signed tree heads, oldest first
    log/consistency.json                consistency proofs between successive heads
    log/inclusion.json                  inclusion proofs of publication events
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from securesystemslib.signer import SSlibKey

from .canonical import canonical_bytes, digest_bytes
from .errors import WavesignError
from .keys import key_from_dict
from .merkle import leaf_hash
from .strictjson import HEX64, FieldReader, loads_strict, read_list

__all__ = [
    "EVIDENCE_FORMAT",
    "FORMAT_VERSION",
    "ConsistencyProof",
    "Evidence",
    "EvidenceError",
    "InclusionProof",
    "LogEvent",
    "Manifest",
    "OnlineKeys",
    "Publication",
    "WaveHistoryEntry",
    "WaveRecord",
    "publication_path",
    "root_path",
]

EVIDENCE_FORMAT = "wavesign-evidence"
FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
#: No single evidence file is larger (a 5,000-target file is about 3 MiB).
MAX_FILE_BYTES = 64 * 1024 * 1024

PUBLICATION_ROLES = ("root", "targets")
VIEW_KINDS = ("production", "wave", "revert")
WAVE_STATUSES = ("awaiting-signatures", "active", "complete", "canceled")
ONLINE_ROLES = ("targets", "snapshot", "timestamp", "log")
#: The event kind of a publication; its detail is the publication record.
PUBLISHED_EVENT = "published"

_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX = re.compile(r"[0-9a-f]{64}")
# Every path the format allows; MANIFEST.json lists all of them but itself.
_ALLOWED_PATHS = re.compile(
    r"(root/[1-9][0-9]*\.root\.json"
    r"|published/[1-9][0-9]*\.targets\.json"
    r"|current/[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\.(snapshot|timestamp)\.json"
    r"|requests/[A-Za-z0-9][A-Za-z0-9._-]{0,63}\.request\.json"
    r"|responses/[A-Za-z0-9][A-Za-z0-9._-]{0,63}\.response\.json"
    r"|keys/(online\.json|operators\.asc|officers\.asc)"
    r"|publications\.json|waves\.json"
    r"|log/(events\.jsonl|heads\.json|consistency\.json|inclusion\.json))"
)


class EvidenceError(WavesignError):
    """An evidence file is missing, unreadable or malformed; the message names it."""


T = TypeVar("T")


def root_path(version: int) -> str:
    return f"root/{version}.root.json"


def publication_path(seq: int) -> str:
    return f"published/{seq}.targets.json"


def _header(reader: FieldReader, fmt: str) -> None:
    reader.format_header(fmt, FORMAT_VERSION, repr(fmt))


def _hex_list(values: Any, path: str) -> tuple[bytes, ...]:
    if not isinstance(values, list):
        raise EvidenceError(f"{path}: expected a list of hex hashes")
    hashes = []
    for index, value in enumerate(values):
        if not isinstance(value, str) or not _HEX.fullmatch(value):
            raise EvidenceError(f"{path}[{index}]: expected 64 lowercase hex digits")
        hashes.append(bytes.fromhex(value))
    return tuple(hashes)


# --- MANIFEST.json -----------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """What the export holds: the sha256 of every file's bytes, by relative path."""

    factory: str
    created: str
    files: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": EVIDENCE_FORMAT,
            "version": FORMAT_VERSION,
            "factory": self.factory,
            "created": self.created,
            "files": dict(self.files),
        }

    @classmethod
    def from_dict(cls, data: Any, path: str = MANIFEST) -> Manifest:
        reader = FieldReader(data, path)
        _header(reader, EVIDENCE_FORMAT)
        factory = reader.string("factory", pattern=_NAME)
        created = reader.string("created", pattern=_TIME)
        files = reader.mapping("files")
        reader.done()
        for name, sha256 in files.items():
            if not _ALLOWED_PATHS.fullmatch(name):
                raise EvidenceError(f"{path}.files: {name[:80]!r} is not a path of this format")
            if not isinstance(sha256, str) or not HEX64.fullmatch(sha256):
                raise EvidenceError(f"{path}.files.{name}: expected a sha256 hex digest")
        return cls(factory, created, dict(files))


# --- keys/online.json --------------------------------------------------------------


@dataclass(frozen=True)
class OnlineKeys:
    """The broker's online public keys by role; ``log`` signs the tree heads."""

    keys: dict[str, SSlibKey]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "wavesign-evidence-online-keys",
            "version": FORMAT_VERSION,
            "keys": {
                role: {
                    "keyid": key.keyid,
                    "key": {"keytype": key.keytype, "scheme": key.scheme, "keyval": key.keyval},
                }
                for role, key in sorted(self.keys.items())
            },
        }

    @classmethod
    def from_dict(cls, data: Any, path: str = "keys/online.json") -> OnlineKeys:
        reader = FieldReader(data, path)
        _header(reader, "wavesign-evidence-online-keys")
        entries = reader.mapping("keys")
        reader.done()
        keys: dict[str, SSlibKey] = {}
        for role in ONLINE_ROLES:
            entry = FieldReader(entries.get(role), f"{path}.keys.{role}")
            keyid = entry.string("keyid", pattern=HEX64)
            try:
                keys[role] = key_from_dict(entry.mapping("key"), keyid)
            except WavesignError as exc:
                raise EvidenceError(f"{path}.keys.{role}: {exc}") from None
            entry.done()
        extra = sorted(set(entries) - set(ONLINE_ROLES))
        if extra:
            raise EvidenceError(f"{path}.keys: unknown role {extra[0]!r}")
        return cls(keys)


# --- publications.json -------------------------------------------------------------


@dataclass(frozen=True)
class Publication:
    """One file made visible to devices, in publication order (``seq`` from 1).

    A root publication names the root ``version`` (file ``root/N.root.json``). A
    targets publication (file ``published/SEQ.targets.json``) names its ``view``, the
    ``tag``, the ``wave`` (the wave shown, reverted or, for production, completed;
    null for a renewal), the targets ``version``, and the ``root_version`` in force.
    ``request``/``payload`` name the signing request and payload it came from, and
    ``event`` the leaf index of its ``published`` event in the log.
    """

    seq: int
    time: str
    role: str
    version: int
    sha256: str
    request: str
    payload: str
    event: int
    view: str | None = None
    tag: str | None = None
    wave: str | None = None
    root_version: int | None = None

    @property
    def path(self) -> str:
        return root_path(self.version) if self.role == "root" else publication_path(self.seq)

    def describe(self) -> str:
        if self.role == "root":
            return f"publication {self.seq} (root v{self.version})"
        wave = f" of wave {self.wave}" if self.wave else ""
        return f"publication {self.seq} ({self.view} targets v{self.version}{wave}, tag {self.tag})"

    def event_detail(self) -> dict[str, Any]:
        """What the ``published`` event records: this record without ``event``."""
        data = self.to_dict()
        del data["event"]
        return data

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "seq": self.seq,
            "time": self.time,
            "role": self.role,
            "version": self.version,
            "sha256": self.sha256,
            "request": self.request,
            "payload": self.payload,
            "event": self.event,
        }
        if self.role == "targets":
            data.update(
                view=self.view, tag=self.tag, wave=self.wave, root_version=self.root_version
            )
        return data

    @classmethod
    def from_dict(cls, data: Any, path: str) -> Publication:
        reader = FieldReader(data, path)
        seq = reader.integer("seq", minimum=1)
        time = reader.string("time", pattern=_TIME)
        role = reader.choice("role", PUBLICATION_ROLES)
        version = reader.integer("version", minimum=1)
        sha256 = reader.string("sha256", pattern=HEX64)
        request = reader.string("request", pattern=_ID)
        payload = reader.choice("payload", ("wave", "revert", "root", "renew"))
        event = reader.integer("event", minimum=0)
        view = tag = wave = None
        root_version = None
        if role == "targets":
            view = reader.choice("view", VIEW_KINDS)
            tag = reader.string("tag", pattern=_NAME)
            if "wave" not in reader.data:
                raise EvidenceError(f"{path}.wave: missing (null for a renewal)")
            wave = reader.string("wave", optional=True, pattern=_NAME)
            root_version = reader.integer("root_version", minimum=1)
            if view != "production" and wave is None:
                raise EvidenceError(f"{path}.wave: a {view} publication names its wave")
        reader.done()
        return cls(
            seq, time, role, version, sha256, request, payload, event, view, tag, wave, root_version
        )


def parse_publications(data: Any, path: str = "publications.json") -> list[Publication]:
    reader = FieldReader(data, path)
    _header(reader, "wavesign-evidence-publications")
    items = read_list(
        reader.sequence("publications"), f"{path}.publications", Publication.from_dict
    )
    reader.done()
    for index, item in enumerate(items, start=1):
        if item.seq != index:
            raise EvidenceError(
                f"{path}.publications[{index - 1}].seq: expected {index}, got {item.seq} "
                "(publications are listed in order, numbered from 1)"
            )
    return items


def publications_document(items: list[Publication]) -> dict[str, Any]:
    return {
        "format": "wavesign-evidence-publications",
        "version": FORMAT_VERSION,
        "publications": [item.to_dict() for item in items],
    }


# --- waves.json --------------------------------------------------------------------


@dataclass(frozen=True)
class WaveHistoryEntry:
    """One step of a wave, pointing at its event in the log (leaf index)."""

    event: int
    kind: str
    time: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, "kind": self.kind, "time": self.time, "detail": self.detail}

    @classmethod
    def from_dict(cls, data: Any, path: str) -> WaveHistoryEntry:
        reader = FieldReader(data, path)
        entry = cls(
            reader.integer("event", minimum=0),
            reader.string("kind", pattern=_NAME),
            reader.string("time", pattern=_TIME),
            reader.mapping("detail"),
        )
        reader.done()
        return entry


@dataclass(frozen=True)
class WaveRecord:
    """A wave: its request, payload versions and digests, status and history."""

    name: str
    tag: str
    ci_version: int
    status: str
    request: str
    version: int
    revert_version: int
    wave_sha256: str
    revert_sha256: str
    history: tuple[WaveHistoryEntry, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tag": self.tag,
            "ci_version": self.ci_version,
            "status": self.status,
            "request": self.request,
            "version": self.version,
            "revert_version": self.revert_version,
            "wave_sha256": self.wave_sha256,
            "revert_sha256": self.revert_sha256,
            "history": [entry.to_dict() for entry in self.history],
        }

    @classmethod
    def from_dict(cls, data: Any, path: str) -> WaveRecord:
        reader = FieldReader(data, path)
        record = cls(
            name=reader.string("name", pattern=_NAME),
            tag=reader.string("tag", pattern=_NAME),
            ci_version=reader.integer("ci_version", minimum=0),
            status=reader.choice("status", WAVE_STATUSES),
            request=reader.string("request", pattern=_ID),
            version=reader.integer("version", minimum=1),
            revert_version=reader.integer("revert_version", minimum=1),
            wave_sha256=reader.string("wave_sha256", pattern=HEX64),
            revert_sha256=reader.string("revert_sha256", pattern=HEX64),
            history=tuple(
                read_list(reader.sequence("history"), f"{path}.history", WaveHistoryEntry.from_dict)
            ),
        )
        reader.done()
        return record


def parse_waves(data: Any, path: str = "waves.json") -> list[WaveRecord]:
    reader = FieldReader(data, path)
    _header(reader, "wavesign-evidence-waves")
    waves = read_list(reader.sequence("waves"), f"{path}.waves", WaveRecord.from_dict)
    reader.done()
    names = [wave.name for wave in waves]
    for name in names:
        if names.count(name) > 1:
            raise EvidenceError(f"{path}: wave {name!r} is listed twice")
    return waves


def waves_document(waves: list[WaveRecord]) -> dict[str, Any]:
    return {
        "format": "wavesign-evidence-waves",
        "version": FORMAT_VERSION,
        "waves": [wave.to_dict() for wave in waves],
    }


# --- log/events.jsonl --------------------------------------------------------------


@dataclass(frozen=True)
class LogEvent:
    """One event of the broker's log; its leaf is SHA-256(0x00 || canonical event)."""

    index: int
    time: str
    actor: str
    kind: str
    subject: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "time": self.time,
            "actor": self.actor,
            "kind": self.kind,
            "subject": self.subject,
            "detail": self.detail,
        }

    def to_line(self) -> bytes:
        return canonical_bytes(self.to_dict())

    def leaf(self) -> bytes:
        return leaf_hash(self.to_line())

    @classmethod
    def from_dict(cls, data: Any, path: str) -> LogEvent:
        reader = FieldReader(data, path)
        event = cls(
            reader.integer("index", minimum=0),
            reader.string("time", pattern=_TIME),
            reader.string("actor"),
            reader.string("kind", pattern=_NAME),
            reader.string("subject"),
            reader.mapping("detail"),
        )
        reader.done()
        return event


def parse_event_lines(data: bytes, path: str = "log/events.jsonl") -> list[LogEvent]:
    """Every event, checking that each line is canonical and numbered from 0."""
    if data and not data.endswith(b"\n"):
        raise EvidenceError(f"{path}: the last line has no newline (the file was cut)")
    events = []
    for number, line in enumerate(data.split(b"\n")[:-1] if data else [], start=1):
        where = f"{path} line {number}"
        event = LogEvent.from_dict(loads_strict(line, what=where, max_size=MAX_FILE_BYTES), where)
        if event.to_line() != line:
            raise EvidenceError(f"{where}: not canonical JSON (edited by hand?)")
        if event.index != number - 1:
            raise EvidenceError(
                f"{where}: holds event {event.index}, expected {number - 1} "
                "(an event was removed, added or moved)"
            )
        events.append(event)
    return events


# --- log/heads.json, consistency.json, inclusion.json ------------------------------


def parse_heads(data: Any, path: str = "log/heads.json") -> list[dict[str, Any]]:
    """The signed tree heads, oldest first (verified later, with the log key)."""
    reader = FieldReader(data, path)
    _header(reader, "wavesign-evidence-tree-heads")
    heads = reader.sequence("heads")
    reader.done()
    for index, head in enumerate(heads):
        if not isinstance(head, dict):
            raise EvidenceError(f"{path}.heads[{index}]: expected a signed tree head object")
    return list(heads)


@dataclass(frozen=True)
class ConsistencyProof:
    """RFC 9162 PROOF(old_size, new_size) between two successive tree heads."""

    old_size: int
    new_size: int
    proof: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "proof": [node.hex() for node in self.proof],
        }

    @classmethod
    def from_dict(cls, data: Any, path: str) -> ConsistencyProof:
        reader = FieldReader(data, path)
        old_size = reader.integer("old_size", minimum=0)
        new_size = reader.integer("new_size", minimum=0)
        proof = _hex_list(reader.sequence("proof"), f"{path}.proof")
        reader.done()
        return cls(old_size, new_size, proof)


def parse_consistency(data: Any, path: str = "log/consistency.json") -> list[ConsistencyProof]:
    reader = FieldReader(data, path)
    _header(reader, "wavesign-evidence-consistency")
    proofs = read_list(reader.sequence("proofs"), f"{path}.proofs", ConsistencyProof.from_dict)
    reader.done()
    return proofs


@dataclass(frozen=True)
class InclusionProof:
    """RFC 9162 PATH(index, tree_size) of one event against a signed tree head."""

    index: int
    tree_size: int
    proof: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "tree_size": self.tree_size,
            "proof": [node.hex() for node in self.proof],
        }

    @classmethod
    def from_dict(cls, data: Any, path: str) -> InclusionProof:
        reader = FieldReader(data, path)
        index = reader.integer("index", minimum=0)
        tree_size = reader.integer("tree_size", minimum=1)
        proof = _hex_list(reader.sequence("proof"), f"{path}.proof")
        reader.done()
        return cls(index, tree_size, proof)


def parse_inclusion(data: Any, path: str = "log/inclusion.json") -> list[InclusionProof]:
    reader = FieldReader(data, path)
    _header(reader, "wavesign-evidence-inclusion")
    proofs = read_list(reader.sequence("proofs"), f"{path}.proofs", InclusionProof.from_dict)
    reader.done()
    return proofs


def document(kind: str, field_name: str, items: list[Any]) -> dict[str, Any]:
    """A ``{"format", "version", field: [...]}`` document of this format."""
    return {
        "format": f"wavesign-evidence-{kind}",
        "version": FORMAT_VERSION,
        field_name: [item.to_dict() if hasattr(item, "to_dict") else item for item in items],
    }


# --- the folder --------------------------------------------------------------------


class Evidence:
    """An evidence folder, read lazily: each part is parsed when a check asks for it.

    Every reader raises :class:`EvidenceError` (or another one-line
    :class:`WavesignError`) naming the file, so one malformed part fails the checks
    that need it and leaves the others to run.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._cache: dict[str, Any] = {}

    # raw access
    def exists(self, relative: str) -> bool:
        return (self.root / relative).is_file()

    def read(self, relative: str) -> bytes:
        if not _ALLOWED_PATHS.fullmatch(relative) and relative != MANIFEST:
            raise EvidenceError(f"{relative!r} is not a path of the evidence format")
        path = self.root / relative
        if path.is_symlink():
            raise EvidenceError(f"{relative} is a symbolic link: evidence files must be files")
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise EvidenceError(f"{relative} is {size} bytes, above {MAX_FILE_BYTES}")
            return path.read_bytes()
        except FileNotFoundError:
            raise EvidenceError(f"{relative} is missing from the evidence folder") from None
        except IsADirectoryError:
            raise EvidenceError(f"{relative} is a folder, not a file") from None

    def json(self, relative: str) -> Any:
        return loads_strict(self.read(relative), what=relative, max_size=MAX_FILE_BYTES)

    def files(self) -> list[str]:
        """Every entry under the folder except MANIFEST.json, as relative paths."""
        if not self.root.is_dir():
            raise EvidenceError(f"{self.root} is not a folder")
        found = []
        for folder, dirs, names in os.walk(self.root):
            for name in names + [d for d in dirs if (Path(folder) / d).is_symlink()]:
                relative = (Path(folder) / name).relative_to(self.root).as_posix()
                if relative != MANIFEST:
                    found.append(relative)
        return sorted(found)

    def _cached(self, key: str, load: Callable[[], T]) -> T:
        if key not in self._cache:
            try:
                self._cache[key] = load()
            except WavesignError as exc:
                self._cache[key] = EvidenceError(str(exc))
        value = self._cache[key]
        if isinstance(value, EvidenceError):
            raise value
        return value

    # parsed parts
    def manifest(self) -> Manifest:
        return self._cached("manifest", lambda: Manifest.from_dict(self.json(MANIFEST)))

    def root_versions(self) -> list[int]:
        """Versions of the ``root/N.root.json`` files present, ascending."""
        folder = self.root / "root"
        if not folder.is_dir():
            return []
        versions = []
        for entry in folder.iterdir():
            match = re.fullmatch(r"([1-9][0-9]*)\.root\.json", entry.name)
            if match:
                versions.append(int(match.group(1)))
        return sorted(versions)

    def online_keys(self) -> OnlineKeys:
        return self._cached("online", lambda: OnlineKeys.from_dict(self.json("keys/online.json")))

    def publications(self) -> list[Publication]:
        return self._cached(
            "publications", lambda: parse_publications(self.json("publications.json"))
        )

    def waves(self) -> list[WaveRecord]:
        return self._cached("waves", lambda: parse_waves(self.json("waves.json")))

    def events(self) -> list[LogEvent]:
        return self._cached("events", lambda: parse_event_lines(self.read("log/events.jsonl")))

    def heads(self) -> list[dict[str, Any]]:
        return self._cached("heads", lambda: parse_heads(self.json("log/heads.json")))

    def consistency(self) -> list[ConsistencyProof]:
        return self._cached(
            "consistency", lambda: parse_consistency(self.json("log/consistency.json"))
        )

    def inclusion(self) -> list[InclusionProof]:
        return self._cached("inclusion", lambda: parse_inclusion(self.json("log/inclusion.json")))

    def request_ids(self) -> list[str]:
        folder = self.root / "requests"
        if not folder.is_dir():
            return []
        return sorted(
            name[: -len(".request.json")]
            for name in os.listdir(folder)
            if name.endswith(".request.json")
        )

    def current_tags(self) -> list[str]:
        folder = self.root / "current"
        if not folder.is_dir():
            return []
        return sorted(
            name[: -len(".timestamp.json")]
            for name in os.listdir(folder)
            if name.endswith(".timestamp.json")
        )


def file_digest(data: bytes) -> str:
    return digest_bytes(data)
