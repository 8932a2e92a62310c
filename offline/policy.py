"""The appliance's signing policy: pure functions, each refusal with its own reason.

Nothing here reads files or the clock: callers pass what the appliance holds (its
keys, the versions it signed, the production payload it signed before) and ``now``.
Every check returns a list of reasons; an empty list means the check passed. ``sign``
refuses on the first reason, ``review`` shows them all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from wavesign.shared.bundles import Payload, SigningRequest
from wavesign.shared.timefmt import parse_utc

__all__ = [
    "PolicyInput",
    "check_already_signed",
    "check_expiry",
    "check_keys_held",
    "check_payload_roles",
    "check_production_base",
    "check_renew",
    "check_revert",
    "check_target_entries",
    "check_unchanged_fields",
    "check_versions",
    "evaluate",
    "parse_expires",
    "warn_missing_production",
]

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PolicyInput:
    """Everything the policy needs to judge one resolved request."""

    request: SigningRequest
    production: dict[str, Any] | None  # the base production targets, if known
    held_keys: Mapping[str, frozenset[str]]  # role -> key ids this appliance holds
    signed_versions: tuple[int, ...]  # versions already signed for the request's tag
    already_signed: bool
    again: bool
    now: datetime
    max_expiry_days: int


def parse_expires(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_utc(value)
    except ValueError:
        return None


def check_expiry(name: str, signed: Mapping[str, Any], now: datetime, max_days: int) -> list[str]:
    """Expiry must lie in the future and no more than ``max_days`` ahead."""
    expires = parse_expires(signed.get("expires"))
    if expires is None:
        return [f"payload {name}: expiry {signed.get('expires')!r} is not YYYY-MM-DDTHH:MM:SSZ"]
    if expires <= now:
        return [f"payload {name}: expiry {signed['expires']} is in the past"]
    if expires > now + timedelta(days=max_days):
        days = (expires - now).days
        return [
            f"payload {name}: expiry {signed['expires']} is {days} days away, "
            f"beyond the policy maximum of {max_days} days"
        ]
    return []


def check_target_entries(name: str, signed: Mapping[str, Any]) -> list[str]:
    """Every target needs a 64-hex sha256, a non-negative length, hardware ids and a version."""
    reasons: list[str] = []
    targets = signed.get("targets")
    if not isinstance(targets, Mapping):
        return [f"payload {name}: 'targets' is not an object"]
    for target_name, entry in sorted(targets.items()):
        where = f"payload {name}: target {target_name!r}"
        if not isinstance(entry, Mapping):
            reasons.append(f"{where} is not an object")
            continue
        hashes = entry.get("hashes")
        sha = hashes.get("sha256") if isinstance(hashes, Mapping) else None
        if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
            reasons.append(f"{where} has no valid sha256 (64 lower-case hex digits)")
        length = entry.get("length")
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            reasons.append(f"{where} has a missing or negative length")
        custom = entry.get("custom")
        custom = custom if isinstance(custom, Mapping) else {}
        hwids = custom.get("hardwareIds")
        if (
            not isinstance(hwids, list)
            or not hwids
            or not all(isinstance(h, str) and h for h in hwids)
        ):
            reasons.append(f"{where} has no hardwareIds")
        version = custom.get("version")
        if version in (None, "") or not isinstance(version, (str, int)):
            reasons.append(f"{where} has no custom.version")
    return reasons


def check_versions(
    payloads: Iterable[Payload], signed_versions: Iterable[int], tag: str | None
) -> list[str]:
    """Each targets version must be above every version this appliance signed for the tag."""
    highest = max(signed_versions, default=0)
    reasons = []
    for payload in payloads:
        if payload.role != "targets":
            continue
        version = payload.full().get("version")
        if isinstance(version, int) and version <= highest:
            reasons.append(
                f"payload {payload.name}: version {version} is not above version {highest}, "
                f"which this appliance already signed for tag {tag} (rollback)"
            )
    return reasons


def _targets_of(signed: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if signed is None:
        return {}
    targets = signed.get("targets")
    return targets if isinstance(targets, Mapping) else {}


def check_revert(
    wave: Mapping[str, Any], revert: Mapping[str, Any], production: Mapping[str, Any] | None
) -> list[str]:
    """The revert payload pins exactly the production targets, at a version above the wave."""
    reasons = []
    base, pinned = _targets_of(production), _targets_of(revert)
    added = sorted(set(pinned) - set(base))
    removed = sorted(set(base) - set(pinned))
    changed = sorted(n for n in set(base) & set(pinned) if base[n] != pinned[n])
    if added:
        reasons.append(f"revert payload adds target {added[0]!r}, which production does not hold")
    if removed:
        reasons.append(f"revert payload drops production target {removed[0]!r}")
    if changed:
        reasons.append(f"revert payload changes production target {changed[0]!r}")
    wave_version, revert_version = wave.get("version"), revert.get("version")
    if not (
        isinstance(wave_version, int)
        and isinstance(revert_version, int)
        and revert_version > wave_version
    ):
        reasons.append(
            f"revert payload version {revert_version} is not above the wave's {wave_version}"
        )
    return reasons


def check_renew(renew: Mapping[str, Any], production: Mapping[str, Any] | None) -> list[str]:
    """A renewal re-signs the production content unchanged, at a higher version."""
    if production is None:
        return ["renewal: there are no production targets known to this appliance to renew"]
    reasons = []
    if _targets_of(renew) != _targets_of(production):
        reasons.append("renewal payload does not carry exactly the production targets")
    if not renew.get("version", 0) > production.get("version", 0):
        reasons.append(
            f"renewal version {renew.get('version')} is not above production "
            f"version {production.get('version')}"
        )
    return reasons


def check_production_base(
    request: SigningRequest, production: Mapping[str, Any] | None
) -> list[str]:
    """A targets request builds on production targets this appliance signed before."""
    context = request.context
    if request.purpose.kind == "root" or context.production_sha256 is None:
        return []
    if production is None:
        return [
            f"the production targets this request builds on ({context.production_sha256[:16]}…) "
            "were never signed by this appliance"
        ]
    if production.get("version") != context.production_version:
        return [
            f"context says production version {context.production_version}, "
            f"but that payload has version {production.get('version')}"
        ]
    return []


def warn_missing_production(request: SigningRequest, signed_versions: Sequence[int]) -> list[str]:
    """Warnings (not refusals) for a targets request that names no production although
    this appliance signed targets for the tag before.

    Not a refusal: a first wave that was canceled leaves signed versions in the journal
    while the tag still has no production, and the next first wave looks exactly like
    this. But after a *completed* wave it means the broker hides the production it
    replaces, so the officer must know.
    """
    if request.purpose.kind == "root" or request.context.production_sha256 is not None:
        return []
    if not signed_versions:
        return []
    versions = ", ".join(str(v) for v in sorted(set(signed_versions)))
    return [
        f"the request says tag {request.purpose.tag} has no production targets, but this "
        f"appliance signed targets for it before (versions {versions}): unless every earlier "
        "wave of the tag was canceled, the broker is hiding the production it replaces"
    ]


def check_keys_held(payloads: Iterable[Payload], held: Mapping[str, frozenset[str]]) -> list[str]:
    """Every key a payload asks for must be one this appliance holds for that role."""
    reasons = []
    for payload in payloads:
        mine = held.get(payload.role, frozenset())
        if not payload.keyids and payload.role == "targets":
            reasons.append(f"payload {payload.name} names no key to sign with")
        for keyid in payload.keyids:
            if keyid not in mine:
                reasons.append(
                    f"payload {payload.name} asks for {payload.role} key {keyid[:16]}, "
                    "which this appliance does not hold"
                )
        if payload.role == "root" and not mine:
            reasons.append("this appliance holds no root key")
    return reasons


#: The role each payload name must have: a wave can never smuggle in a root payload.
PAYLOAD_ROLES = {"wave": "targets", "revert": "targets", "renew": "targets", "root": "root"}
#: The fields of a targets payload that a wave, revert or renewal may change.
CHANGEABLE_FIELDS = {"version", "expires", "targets"}


def check_payload_roles(payloads: Iterable[Payload]) -> list[str]:
    """Each payload has the role its name implies, and ``signed._type`` says the same."""
    reasons = []
    for payload in payloads:
        expected = PAYLOAD_ROLES.get(payload.name)
        if payload.role != expected:
            reasons.append(f"payload {payload.name} has role {payload.role}, not {expected}")
        elif payload.full().get("_type") != expected:
            reasons.append(f"payload {payload.name} is not {expected} metadata")
    return reasons


def check_unchanged_fields(
    name: str, signed: Mapping[str, Any], production: Mapping[str, Any] | None
) -> list[str]:
    """Only version, expiry and targets may differ from production (no new delegations)."""
    if production is None:
        if signed.get("delegations"):
            return [f"payload {name} adds delegations; production targets have none"]
        return []
    reasons = []
    for field in sorted((set(signed) | set(production)) - CHANGEABLE_FIELDS):
        if signed.get(field) != production.get(field):
            reasons.append(f"payload {name} changes {field!r}, which only a new root may change")
    return reasons


def check_target_tags(name: str, signed: Mapping[str, Any], tag: str | None) -> list[str]:
    """Every target of a tag's production file must carry that tag, as fioctl writes them.

    Devices install only targets tagged with their own tag, so a target tagged for
    another tag would slip past the review as "added" while doing something else.
    """
    if tag is None:
        return []
    reasons = []
    for target_name, entry in sorted(_targets_of(signed).items()):
        custom = entry.get("custom") if isinstance(entry, Mapping) else None
        tags = custom.get("tags") if isinstance(custom, Mapping) else None
        if not isinstance(tags, list) or tag not in tags:
            reasons.append(
                f"payload {name}: target {target_name!r} is not tagged {tag!r} (tags: {tags!r})"
            )
    return reasons


def check_already_signed(already_signed: bool, again: bool) -> list[str]:
    if already_signed and not again:
        return ["this request was already signed (see the journal); use --again to sign it again"]
    return []


def evaluate(policy: PolicyInput) -> list[str]:
    """All reasons to refuse ``policy.request``; empty when it may be signed."""
    request = policy.request
    reasons: list[str] = []
    reasons += check_already_signed(policy.already_signed, policy.again)
    reasons += check_payload_roles(request.payloads)
    reasons += check_keys_held(request.payloads, policy.held_keys)
    reasons += check_production_base(request, policy.production)
    for payload in request.payloads:
        signed = payload.full()
        reasons += check_expiry(payload.name, signed, policy.now, policy.max_expiry_days)
        if payload.role == "targets":
            reasons += check_target_entries(payload.name, signed)
            reasons += check_target_tags(payload.name, signed, request.purpose.tag)
            reasons += check_unchanged_fields(payload.name, signed, policy.production)
    if request.purpose.kind != "root":
        reasons += check_versions(request.payloads, policy.signed_versions, request.purpose.tag)
        prod_version = request.context.production_version or 0
        for payload in request.payloads:
            version = payload.full().get("version")
            if isinstance(version, int) and version <= prod_version:
                reasons.append(
                    f"payload {payload.name}: version {version} is not above "
                    f"production version {prod_version}"
                )
    if request.purpose.kind == "wave":
        reasons += check_revert(
            request.payload("wave").full(), request.payload("revert").full(), policy.production
        )
    if request.purpose.kind == "renew":
        reasons += check_renew(request.payload("renew").full(), policy.production)
    return reasons
