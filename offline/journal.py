"""The appliance's journal file: an append-only, hash-chained record of every signing.

``HOME/journal.jsonl`` holds one entry per line; the line format and the chain rules
live in :mod:`wavesign.shared.journal_format` (the auditor checks an export with the
same code). Cutting lines off the end is caught by ``HOME/journal.head``, which
records the last index and hash and is rewritten on every append.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from wavesign.shared.canonical import canonical_bytes
from wavesign.shared.errors import WavesignError
from wavesign.shared.fileio import atomic_write
from wavesign.shared.journal_format import (
    GENESIS,
    JournalEntry,
    JournalVerification,
    PayloadRecord,
    split_lines,
    verify_lines,
)
from wavesign.shared.strictjson import HEX64, FieldReader, loads_strict
from wavesign.shared.timefmt import utc_now_text

# The format's names stay importable from here for older importers; new code imports
# them from wavesign.shared.journal_format.
__all__ = [
    "GENESIS",
    "Journal",
    "JournalEntry",
    "JournalError",
    "JournalVerification",
    "PayloadRecord",
    "split_lines",
    "verify_lines",
]


class JournalError(WavesignError):
    """The journal is broken, or cannot be written."""


def now_rfc3339() -> str:
    return utc_now_text()


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
        return list(result.entries)

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
