"""The appliance journal's line format and hash-chain rules: one home for both sides.

The appliance writes and checks its journal with these (``wavesign.offline.journal``
adds the file, its head and appending); the auditor checks an exported journal with
the same code (``wavesign.shared.audit``), so the two can never disagree on what a
valid chain is. Pure: no file, clock or key is touched here.

A journal is one entry per line, each line the canonical JSON of the entry (so its
hash is well defined and any re-formatting shows). Line ``n`` carries ``index: n`` and
``prev``: the sha256 of line ``n-1``'s bytes (:data:`GENESIS`, 64 zeros, for line 1).
Editing a line breaks the ``prev`` of the next one; removing or reordering lines
breaks the indexes; cutting lines off the end is caught by a recorded head (the
appliance's ``journal.head``) or, for an export, by the officer's signature.
:func:`verify_lines` names the first line that breaks.

Entry fields::

    index, time, kind ("sign"), request_id, request_sha256, purpose, tag,
    payloads [{name, role, sha256, version}], keyids, confirmation,
    response_sha256, prev

``response_sha256`` is :meth:`SigningResponse.digest`; that response's
``journal_head`` is this entry's ``prev`` (the head before it was written), so an
auditor finds the entry of a response as the one with that ``prev`` and digest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .canonical import canonical_bytes, digest_bytes
from .errors import WavesignError
from .strictjson import HEX64, FieldReader, JSONInputError, loads_strict

__all__ = [
    "GENESIS",
    "KINDS",
    "MAX_LINE",
    "JournalEntry",
    "JournalVerification",
    "PayloadRecord",
    "split_lines",
    "verify_journal_chain",
    "verify_lines",
]

#: The ``prev`` of line 1: there is no line before it.
GENESIS = "0" * 64
#: No journal line is larger; a longer one is refused before it is parsed.
MAX_LINE = 1024 * 1024
KINDS = ("sign",)


@dataclass(frozen=True)
class PayloadRecord:
    """What the journal keeps about one signed payload."""

    name: str
    role: str
    sha256: str
    version: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # every field is a JSON scalar

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
        # Field order is the line's key order before canonicalisation (``journal show``
        # prints it); the tuples become JSON lists.
        return asdict(self) | {
            "payloads": [p.to_dict() for p in self.payloads],
            "keyids": list(self.keyids),
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
    """The result of checking a journal: fine, or the first line that breaks it.

    ``entries`` are the lines that chain (all of them when ``ok``); ``head`` is the
    hash of the last of them (:data:`GENESIS` for none); ``line`` names the broken
    line and ``problem`` says what is wrong with it.
    """

    ok: bool
    head: str
    entries: tuple[JournalEntry, ...] = ()
    problem: str | None = None
    line: int | None = None

    #: What ``journal verify --json`` prints: everything but the entries themselves.
    SUMMARY = ("ok", "lines", "head", "problem", "line")

    @property
    def lines(self) -> int:
        """How many lines chain."""
        return len(self.entries)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.SUMMARY}


def split_lines(data: bytes) -> list[bytes]:
    """The journal's lines; a final newline is expected, empty lines are not."""
    if not data:
        return []
    if not data.endswith(b"\n"):
        # Report as a problem of the last line rather than silently re-joining.
        return [*data.split(b"\n")]
    return data[:-1].split(b"\n")


def _parse_line(line: bytes, number: int) -> JournalEntry | str:
    """The entry on line ``number``, or why that line cannot be in a journal."""
    try:
        data = loads_strict(line, what=f"journal line {number}", max_size=MAX_LINE)
        entry = JournalEntry.from_dict(data, f"line {number}")
    except WavesignError as exc:
        return f"line {number} is not a valid journal entry: {exc}"
    if entry.to_line() != line:
        return f"line {number} is not in canonical form: it was edited by hand"
    if entry.index > number:
        return (
            f"line {number} holds entry {entry.index}: "
            f"a line before it was removed or lines were reordered"
        )
    if entry.index < number:
        return f"line {number} holds entry {entry.index}: lines were reordered"
    return entry


def _check_head(
    entries: tuple[JournalEntry, ...], head: str, recorded_head: tuple[int, str]
) -> JournalVerification:
    """Compare a chain that verified with the ``(index, hash)`` recorded after its last append."""
    count = len(entries)
    head_index, head_hash = recorded_head

    def broken(problem: str, at: int) -> JournalVerification:
        return JournalVerification(False, head, entries, problem, at)

    if count < head_index:
        return broken(
            f"the journal ends at line {count} but its head records line {head_index}: "
            f"line {count + 1} onwards were removed",
            count + 1,
        )
    if count > head_index:
        return broken(
            f"line {head_index + 1} onwards were added behind the appliance's back",
            head_index + 1,
        )
    if head_index and head != head_hash:
        return broken(
            f"line {head_index} was changed: it no longer matches the recorded journal head",
            head_index,
        )
    return JournalVerification(True, head, entries)


def verify_lines(
    lines: list[bytes], recorded_head: tuple[int, str] | None = None
) -> JournalVerification:
    """Check the chain over ``lines``; ``recorded_head`` is ``(index, hash)`` if known."""
    entries: list[JournalEntry] = []
    prev = GENESIS
    for number, line in enumerate(lines, start=1):
        parsed = _parse_line(line, number)
        if isinstance(parsed, str):
            return JournalVerification(False, prev, tuple(entries), parsed, number)
        if parsed.prev != prev:
            return JournalVerification(
                False,
                prev,
                tuple(entries),
                f"line {number - 1} was changed: line {number} records a different hash for it",
                number - 1,
            )
        entries.append(parsed)
        prev = digest_bytes(line)
    if recorded_head is not None:
        return _check_head(tuple(entries), prev, recorded_head)
    return JournalVerification(True, prev, tuple(entries))


def verify_journal_chain(data: bytes) -> JournalVerification:
    """Check an exported journal file's bytes (what the auditor is given).

    The same rules as :func:`verify_lines`, with no recorded head (the export's
    signature stands in for it), and the file must end with a newline: a last line
    without one means the file was cut.
    """
    if data and not data.endswith(b"\n"):
        count = len(data.split(b"\n"))
        return JournalVerification(
            False,
            GENESIS,
            (),
            f"line {count} has no final newline: the journal was cut",
            count,
        )
    return verify_lines(split_lines(data))
