"""Delta payloads: a targets payload carried as its change against one signed before.

A typical wave adds a handful of targets to a production file of about a thousand.
The appliance keeps every payload it signed, so a request can carry only the change
and still fit in one to three QR frames. The receiver rebuilds the full ``signed``
object from its copy of the base and checks the rebuilt payload's sha256 against the
one the request names *before* anything is shown or signed: a delta can never make
the officer sign something other than what the digest commits to.

Wire form of a delta::

    {"base": <sha256 of the base signed object>, "version": int, "expires": str,
     "added": {name: target}, "changed": {name: target}, "removed": [name, ...]}

Everything in the base other than ``version``, ``expires`` and ``targets`` is kept.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .canonical import digest
from .errors import WavesignError
from .strictjson import HEX64, FieldReader

if TYPE_CHECKING:
    from .bundles import SigningRequest

__all__ = [
    "Delta",
    "DeltaError",
    "UnknownDeltaBaseError",
    "apply_delta",
    "make_delta",
    "resolve_payloads",
]

#: The top-level fields of a targets payload that a delta may change.
_DELTA_FIELDS = {"version", "expires", "targets"}


class DeltaError(WavesignError):
    """A delta does not apply to its base, or does not rebuild the promised payload."""


class UnknownDeltaBaseError(DeltaError):
    """The delta's base payload is not one this receiver holds."""


@dataclass(frozen=True)
class Delta:
    """The change from a base targets payload to a new one."""

    base: str
    version: int
    expires: str
    added: dict[str, Any] = field(default_factory=dict)
    changed: dict[str, Any] = field(default_factory=dict)
    removed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "version": self.version,
            "expires": self.expires,
            "added": self.added,
            "changed": self.changed,
            "removed": list(self.removed),
        }

    @classmethod
    def from_dict(cls, data: Any, path: str = "delta") -> Delta:
        reader = FieldReader(data, path)
        base = reader.string("base", pattern=HEX64)
        version = reader.integer("version", minimum=1)
        expires = reader.string("expires")
        added = reader.mapping("added")
        changed = reader.mapping("changed")
        removed = reader.sequence("removed")
        reader.done()
        for index, name in enumerate(removed):
            if not isinstance(name, str):
                raise DeltaError(f"{path}.removed[{index}]: expected a target name")
        overlap = (set(added) & set(changed)) | (set(added) & set(removed))
        overlap |= set(changed) & set(removed)
        if overlap:
            raise DeltaError(f"{path}: target {sorted(overlap)[0]!r} appears in two change lists")
        if len(set(removed)) != len(removed):
            raise DeltaError(f"{path}.removed: a target is listed twice")
        return cls(base, version, expires, added, changed, tuple(removed))


def make_delta(base: dict[str, Any], new: dict[str, Any]) -> Delta | None:
    """The delta from ``base`` to ``new``, or None when a delta cannot express it."""
    if {k: v for k, v in base.items() if k not in _DELTA_FIELDS} != {
        k: v for k, v in new.items() if k not in _DELTA_FIELDS
    }:
        return None
    old_targets: dict[str, Any] = base.get("targets", {})
    new_targets: dict[str, Any] = new.get("targets", {})
    return Delta(
        base=digest(base),
        version=new["version"],
        expires=new["expires"],
        added={n: t for n, t in new_targets.items() if n not in old_targets},
        changed={n: t for n, t in new_targets.items() if n in old_targets and old_targets[n] != t},
        removed=tuple(sorted(n for n in old_targets if n not in new_targets)),
    )


def apply_delta(base: dict[str, Any], delta: Delta) -> dict[str, Any]:
    """Rebuild the full payload from ``base``; refuses a delta that does not fit it."""
    if digest(base) != delta.base:
        raise DeltaError("the base payload does not have the digest the delta names")
    rebuilt = copy.deepcopy(base)
    targets: dict[str, Any] = rebuilt.setdefault("targets", {})
    for name in delta.removed:
        if name not in targets:
            raise DeltaError(f"the delta removes {name!r}, which the base does not hold")
        del targets[name]
    for name, entry in delta.changed.items():
        if name not in targets:
            raise DeltaError(f"the delta changes {name!r}, which the base does not hold")
        targets[name] = copy.deepcopy(entry)
    for name, entry in delta.added.items():
        if name in targets:
            raise DeltaError(f"the delta adds {name!r}, which the base already holds")
        targets[name] = copy.deepcopy(entry)
    rebuilt["version"] = delta.version
    rebuilt["expires"] = delta.expires
    return rebuilt


def resolve_payloads(
    request: SigningRequest, lookup_base: Callable[[str], dict[str, Any] | None]
) -> SigningRequest:
    """Return ``request`` with every delta payload rebuilt into its full form.

    ``lookup_base(sha256)`` returns a payload the receiver signed before, or None.
    Each rebuilt payload must hash to the sha256 the request names.
    """
    resolved = []
    for payload in request.payloads:
        if payload.delta is None:
            resolved.append(payload)
            continue
        base = lookup_base(payload.delta.base)
        if base is None:
            raise UnknownDeltaBaseError(
                f"payload {payload.name!r} is a delta against {payload.delta.base[:16]}…, "
                "a payload this appliance never signed: export the request with --full"
            )
        rebuilt = apply_delta(base, payload.delta)
        if digest(rebuilt) != payload.sha256:
            raise DeltaError(
                f"payload {payload.name!r} rebuilt from its delta does not match its sha256"
            )
        resolved.append(payload.with_signed(rebuilt))
    return request.with_payloads(resolved)
