"""The appliance's journal: an append-only, hash-chained record of every signing.

``HOME/journal.jsonl`` holds one entry per line, each line the canonical JSON of the
entry (so its hash is well defined and any re-formatting shows). Line ``n`` carries
``index: n`` and ``prev``: the sha256 of line ``n-1``'s bytes (64 zeros for line 1).
Editing a line breaks the ``prev`` of the next one; removing or reordering lines
breaks the indexes; cutting lines off the end is caught by ``HOME/journal.head``,
which records the last index and hash. :func:`verify_lines` names the first line that
breaks.

Entry fields::

    index, time, kind ("sign"), request_id, request_sha256, purpose, tag,
    payloads [{name, role, sha256, version}], keyids, confirmation,
    response_sha256, prev

``response_sha256`` is :meth:`SigningResponse.digest`; that response's
``journal_head`` is this entry's ``prev`` (the head before it was written), so an
auditor finds the entry of a response as the one with that ``prev`` and digest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wavesign.shared.canonical import canonical_bytes, digest_bytes
from wavesign.shared.errors import WavesignError
from wavesign.shared.fileio import atomic_write
from wavesign.shared.strictjson import HEX64, FieldReader, JSONInputError, loads_strict

__all__ = [
    "GENESIS",
    "Journal",
    "JournalEntry",
    "JournalError",
    "JournalVerification",
    "PayloadRecord",
    "verify_lines",
]

GENESIS = "0" * 64
MAX_LINE = 1024 * 1024
KINDS = ("sign",)


class JournalError(WavesignError):
    """The journal is broken, or cannot be written."""


@dataclass(frozen=True)
class PayloadRecord:
    """What the journal keeps about one signed payload."""

    name: str
    role: str
    sha256: str
    version: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "sha256": self.sha256,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: Any, path: str) -> PayloadRecord:
        reader = FieldReader(data, path)
        record = cls(
            reader.string("name"),
            reader.string("role"),
            reader.string("sha256", pattern=HEX64),
            reader.integer("version", minimum=0),
        )
        reader.done()
        return record


@dataclass(frozen=True)
class JournalEntry:
    """One journal line."""

    index: int
    time: str
    kind: str
    request_id: str
    request_sha256: str
    purpose: dict[str, Any]
    tag: str | None
    payloads: tuple[PayloadRecord, ...]
    keyids: tuple[str, ...]
    confirmation: str
    response_sha256: str
    prev: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "time": self.time,
            "kind": self.kind,
            "request_id": self.request_id,
            "request_sha256": self.request_sha256,
            "purpose": self.purpose,
            "tag": self.tag,
            "payloads": [p.to_dict() for p in self.payloads],
            "keyids": list(self.keyids),
            "confirmation": self.confirmation,
            "response_sha256": self.response_sha256,
            "prev": self.prev,
        }

    def to_line(self) -> bytes:
        return canonical_bytes(self.to_dict())

    def hash(self) -> str:
        return digest_bytes(self.to_line())

    @classmethod
    def from_dict(cls, data: Any, path: str = "entry") -> JournalEntry:
        reader = FieldReader(data, path)
        index = reader.integer("index", minimum=1)
        time = reader.string("time")
        kind = reader.choice("kind", KINDS)
        request_id = reader.string("request_id")
        request_sha256 = reader.string("request_sha256", pattern=HEX64)
        purpose = reader.mapping("purpose")
        tag = reader.string("tag", optional=True)
        payloads = tuple(
            PayloadRecord.from_dict(item, f"{path}.payloads[{i}]")
            for i, item in enumerate(reader.sequence("payloads"))
        )
        keyids = reader.sequence("keyids")
        if not all(isinstance(k, str) and HEX64.fullmatch(k) for k in keyids):
            raise JSONInputError(f"{path}.keyids: expected 64-hex key ids")
        confirmation = reader.string("confirmation")
        response_sha256 = reader.string("response_sha256", pattern=HEX64)
        prev = reader.string("prev", pattern=HEX64)
        reader.done()
        return cls(
            index,
            time,
            kind,
            request_id,
            request_sha256,
            purpose,
            tag,
            payloads,
            tuple(keyids),
            confirmation,
            response_sha256,
            prev,
        )


@dataclass(frozen=True)
class JournalVerification:
    """The result of checking a journal: fine, or the first line that breaks it."""

    ok: bool
    lines: int
    head: str
    problem: str | None = None
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "lines": self.lines,
            "head": self.head,
            "problem": self.problem,
            "line": self.line,
        }


def split_lines(data: bytes) -> list[bytes]:
    """The journal's lines; a final newline is expected, empty lines are not."""
    if not data:
        return []
    if not data.endswith(b"\n"):
        # Report as a problem of the last line rather than silently re-joining.
        return [*data.split(b"\n")]
    return data[:-1].split(b"\n")


def verify_lines(
    lines: list[bytes], recorded_head: tuple[int, str] | None = None
) -> JournalVerification:
    """Check the chain over ``lines``; ``recorded_head`` is ``(index, hash)`` if known."""
    prev = GENESIS
    for number, line in enumerate(lines, start=1):

        def broken(
            problem: str, at: int = number, count: int = number - 1, head: str = prev
        ) -> JournalVerification:
            return JournalVerification(False, count, head, problem, at)

        try:
            data = loads_strict(line, what=f"journal line {number}", max_size=MAX_LINE)
            entry = JournalEntry.from_dict(data, f"line {number}")
        except WavesignError as exc:
            return broken(f"line {number} is not a valid journal entry: {exc}")
        if entry.to_line() != line:
            return broken(f"line {number} is not in canonical form: it was edited by hand")
        if entry.index != number:
            if entry.index > number:
                problem = (
                    f"line {number} holds entry {entry.index}: "
                    f"a line before it was removed or lines were reordered"
                )
            else:
                problem = f"line {number} holds entry {entry.index}: lines were reordered"
            return broken(problem)
        if entry.prev != prev:
            return broken(
                f"line {number - 1} was changed: line {number} records a different hash for it",
                at=number - 1,
            )
        prev = digest_bytes(line)
    if recorded_head is not None:
        head_index, head_hash = recorded_head
        if len(lines) < head_index:
            return JournalVerification(
                False,
                len(lines),
                prev,
                f"the journal ends at line {len(lines)} but its head records line {head_index}: "
                f"line {len(lines) + 1} onwards were removed",
                len(lines) + 1,
            )
        if len(lines) > head_index:
            return JournalVerification(
                False,
                len(lines),
                prev,
                f"line {head_index + 1} onwards were added behind the appliance's back",
                head_index + 1,
            )
        if head_index and prev != head_hash:
            return JournalVerification(
                False,
                len(lines),
                prev,
                f"line {head_index} was changed: it no longer matches the recorded journal head",
                head_index,
            )
    return JournalVerification(True, len(lines), prev)


def now_rfc3339() -> str:
    return datetime.now(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


class Journal:
    """The journal file of one appliance home."""

    def __init__(self, path: Path, head_path: Path) -> None:
        self.path = path
        self.head_path = head_path

    def raw(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            raise JournalError(f"journal {self.path} is missing") from None

    def recorded_head(self) -> tuple[int, str] | None:
        if not self.head_path.exists():
            return None
        data = loads_strict(self.head_path.read_bytes(), what="journal head", max_size=4096)
        reader = FieldReader(data, "journal.head")
        head = (reader.integer("index", minimum=0), reader.string("hash", pattern=HEX64))
        reader.done()
        return head

    def verify(self) -> JournalVerification:
        return verify_lines(split_lines(self.raw()), self.recorded_head())

    def entries(self) -> list[JournalEntry]:
        """Every entry, after checking the chain: a broken journal is never trusted."""
        result = self.verify()
        if not result.ok:
            raise JournalError(f"the journal is broken: {result.problem}")
        return [
            JournalEntry.from_dict(loads_strict(line, what="journal line", max_size=MAX_LINE))
            for line in split_lines(self.raw())
        ]

    def next_entry(self, **fields: Any) -> JournalEntry:
        """The entry that would be appended next (nothing is written)."""
        entries = self.entries()
        prev = entries[-1].hash() if entries else GENESIS
        return JournalEntry(index=len(entries) + 1, prev=prev, **fields)

    def append(self, entry: JournalEntry) -> None:
        """Append ``entry``; it must chain onto the current last line."""
        raw = self.raw()
        lines = split_lines(raw)
        result = verify_lines(lines, self.recorded_head())
        if not result.ok:
            raise JournalError(f"the journal is broken: {result.problem}")
        if entry.index != len(lines) + 1 or entry.prev != result.head:
            raise JournalError("the journal changed while this entry was prepared")
        # Whole-file atomic rewrite: a crash leaves the old journal or the new, never half
        # a line. Journals stay small (one line per signing ceremony).
        atomic_write(self.path, raw + entry.to_line() + b"\n", mode=0o600)
        self._write_head(entry.index, entry.hash())

    def restore(self, raw: bytes, head: tuple[int, str] | None) -> None:
        """Put back an earlier state (used to undo an append whose ceremony failed later)."""
        atomic_write(self.path, raw, mode=0o600)
        if head is None:
            self.head_path.unlink(missing_ok=True)
        else:
            self._write_head(*head)

    def _write_head(self, index: int, hash_: str) -> None:
        atomic_write(
            self.head_path, canonical_bytes({"index": index, "hash": hash_}) + b"\n", mode=0o600
        )

    def signed_versions(self, tag: str) -> list[int]:
        """Every targets version this appliance signed for ``tag``, in any payload."""
        return [
            record.version
            for entry in self.entries()
            if entry.tag == tag
            for record in entry.payloads
            if record.role == "targets"
        ]

    def find_request(self, request_sha256: str) -> list[JournalEntry]:
        return [e for e in self.entries() if e.request_sha256 == request_sha256]


def entries_to_json(entries: Iterable[JournalEntry]) -> list[dict[str, Any]]:
    return [entry.to_dict() | {"hash": entry.hash()} for entry in entries]
