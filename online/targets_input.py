"""CI targets as they arrive: parse a CI ``targets.json`` and validate each entry (pure).

Accepted shapes (``wavesign targets add --from-json FILE``):

- a whole signed CI ``targets.json`` ``{"signed": {"_type": "targets", "targets": {...}}, ...}``;
- its ``signed`` part ``{"_type": "targets", "targets": {...}}``;
- a mapping ``{name: entry}``;
- a list of entries, each carrying its ``name``.

An entry is ``{"length": N, "hashes": {"sha256": HEX}, "custom": {"version": "42",
"hardwareIds": [...], ...}}``. Every entry is checked before any is stored: one bad entry
refuses the whole file, naming the entry and the field.
"""

from __future__ import annotations

import re
from typing import Any

from wavesign.shared.errors import WavesignError
from wavesign.shared.strictjson import JSONInputError, loads_strict

__all__ = ["TargetsInputError", "ci_version_of", "parse_targets_document", "validate_entry"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_NAME = 500
#: A CI targets file of ~100,000 targets is ~50 MB; anything larger is refused unread.
MAX_FILE_BYTES = 256 * 1024 * 1024


class TargetsInputError(WavesignError):
    """A CI targets file or entry is malformed."""


def ci_version_of(custom: dict[str, Any], where: str) -> int:
    """The CI build number in ``custom.version`` (a string of digits, as CI writes it)."""
    version = custom.get("version")
    if isinstance(version, bool):
        raise TargetsInputError(f"{where}: custom.version must be a build number")
    if isinstance(version, int):
        number = version
    elif isinstance(version, str) and version.isdigit() and version.isascii():
        number = int(version)
    else:
        raise TargetsInputError(f"{where}: custom.version must be a build number, got {version!r}")
    if number < 0 or number > 2**31 - 1:
        raise TargetsInputError(f"{where}: custom.version {number} is out of range")
    return number


def validate_entry(name: Any, entry: Any) -> dict[str, Any]:
    """Check one target entry and return it normalized (custom.version as a string).

    Unknown fields are kept: CI adds its own (``uri``, ``docker_compose_apps``, ...).
    """
    if not isinstance(name, str) or not name or len(name) > MAX_NAME or name.strip() != name:
        raise TargetsInputError(f"target name {name!r} is not a valid name")
    where = f"target {name}"
    if not isinstance(entry, dict):
        raise TargetsInputError(f"{where}: the entry must be a JSON object")
    length = entry.get("length")
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise TargetsInputError(f"{where}: length must be an integer >= 0, got {length!r}")
    hashes = entry.get("hashes")
    if not isinstance(hashes, dict) or "sha256" not in hashes:
        raise TargetsInputError(f"{where}: hashes.sha256 is missing")
    sha = hashes["sha256"]
    if not isinstance(sha, str) or not _HEX64.match(sha):
        raise TargetsInputError(f"{where}: hashes.sha256 must be 64 lower-case hex digits")
    custom = entry.get("custom")
    if not isinstance(custom, dict):
        raise TargetsInputError(f"{where}: custom is missing")
    version = ci_version_of(custom, where)
    hw_ids = custom.get("hardwareIds")
    if (
        not isinstance(hw_ids, list)
        or not hw_ids
        or not all(isinstance(h, str) and h for h in hw_ids)
    ):
        raise TargetsInputError(f"{where}: custom.hardwareIds must be a non-empty list of names")
    tags = custom.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
        raise TargetsInputError(f"{where}: custom.tags must be a list of names")
    normalized = dict(entry)
    normalized["custom"] = dict(custom, version=str(version))
    return normalized


def _entries_of(document: Any) -> dict[str, Any]:
    if isinstance(document, list):
        result: dict[str, Any] = {}
        for index, item in enumerate(document):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise TargetsInputError(f'entry {index}: a listed target needs a "name"')
            name = item["name"]
            if name in result:
                raise TargetsInputError(f"entry {index}: target {name} is listed twice")
            result[name] = {k: v for k, v in item.items() if k != "name"}
        return result
    if not isinstance(document, dict):
        raise TargetsInputError("a targets file must be a JSON object or a list of entries")
    if "signed" in document:
        document = document["signed"]
        if not isinstance(document, dict):
            raise TargetsInputError('"signed" must be a JSON object')
    if "_type" in document or "targets" in document:
        if document.get("_type", "targets") != "targets":
            raise TargetsInputError(f"this is {document.get('_type')!r} metadata, not targets")
        targets = document.get("targets")
        if not isinstance(targets, dict):
            raise TargetsInputError('"targets" must be a JSON object of name: entry')
        return targets
    return document


def parse_targets_document(document: Any) -> dict[str, dict[str, Any]]:
    """All entries of a CI targets document, validated; raises on the first bad one."""
    entries = _entries_of(document)
    if not entries:
        raise TargetsInputError("the targets file holds no targets")
    return {name: validate_entry(name, entry) for name, entry in entries.items()}


def parse_targets_bytes(data: bytes, source: str) -> dict[str, dict[str, Any]]:
    """Parse a file's bytes as strict JSON (no duplicate keys, NaN or floats); validate it."""
    try:
        document = loads_strict(data, what=source, max_size=MAX_FILE_BYTES)
    except JSONInputError as exc:
        raise TargetsInputError(str(exc)) from None
    try:
        return parse_targets_document(document)
    except TargetsInputError as exc:
        raise TargetsInputError(f"{source}: {exc}") from None
