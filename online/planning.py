"""Wave planning: the unsigned payloads of ``wave init`` and ``production renew`` (pure).

``plan_wave`` follows fioctl's ``wave init`` rule for rule (see
``reference/foundries-fioctl.md``) and adds the one thing wavesign needs on top: a second
payload, the *revert* R, signed in the same offline ceremony as the wave W, so that a
cancel can be published at once without the offline key::

    W = production targets of the tag            (none for the very first wave)
        + every CI target of build N, one per hardware id, custom.tags = [tag]
        - every target whose custom.version is listed in --prune
        at TUF version v = highest version ever planned for the tag + 1
    R = production targets of the tag, exactly, at TUF version v + 1, same expiry as W

The TUF targets ``version`` is a per-tag counter, not the CI build number: every payload
planned for a tag (waves, reverts, renewals) takes a version strictly above every version
planned before it, so that whichever of them a device is shown later, it never has to go
back (TUF clients refuse a lower version). The plan carries the new high-water mark
(``highest_planned``) for the store to persist in the same transaction as the wave.

The very first wave of a tag (the seed's ``populate-targets 12 production``) has no
production targets: W holds only the new targets, and R is a valid, empty targets object
(``"targets": {}``). Published after a cancel, R tells the devices that were rolled out
to "no production target yet", which is exactly the state before the wave.

Nothing here reads a clock, a file or a database: ``now`` and every input are arguments,
and the payloads are plain dicts that ``tuf.api.metadata.Targets.from_dict`` accepts.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from wavesign.shared.canonical import canonical_bytes, digest
from wavesign.shared.errors import WavesignError
from wavesign.shared.timefmt import format_utc

__all__ = [
    "DEFAULT_EXPIRES_DAYS",
    "SPEC_VERSION",
    "CITarget",
    "PlanningError",
    "ProductionState",
    "RenewalPlan",
    "RevertPayload",
    "WavePlan",
    "compute_expiry",
    "format_expires",
    "parse_ci_version",
    "parse_expires_at",
    "plan_renewal",
    "plan_wave",
    "production_ci_version",
]

#: The TUF specification version written into every planned payload (python-tuf 7's).
SPEC_VERSION = "1.0.31"
DEFAULT_EXPIRES_DAYS = 365
_WAVE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")


class PlanningError(WavesignError):
    """A wave or renewal cannot be planned as asked (fioctl's message where it has one)."""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class CITarget:
    """One target built by CI: a TUF target entry with its name.

    ``custom`` is kept whole (``hardwareIds``, ``version``, ``tags``, ``uri``,
    ``docker_compose_apps``, ``delta-stats``, ...): a wave rewrites only ``tags``.
    """

    name: str
    sha256: str
    length: int
    custom: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def ci_version(self) -> str:
        """The CI build number as CI writes it (a string), or "" when missing."""
        version = self.custom.get("version")
        return "" if version is None else str(version)

    @property
    def hardware_ids(self) -> tuple[str, ...]:
        ids = self.custom.get("hardwareIds")
        return tuple(i for i in ids if isinstance(i, str)) if isinstance(ids, list) else ()

    @property
    def tags(self) -> tuple[str, ...]:
        tags = self.custom.get("tags")
        return tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else ()

    def to_entry(self) -> dict[str, Any]:
        """The TUF target entry ``{length, hashes: {sha256}, custom}`` (a fresh copy)."""
        return {
            "length": self.length,
            "hashes": {"sha256": self.sha256},
            "custom": copy.deepcopy(dict(self.custom)),
        }

    @classmethod
    def from_entry(cls, name: str, entry: Mapping[str, Any]) -> CITarget:
        """Build from a TUF target entry, e.g. a row of the broker's ``ci_targets``."""
        try:
            sha256 = entry["hashes"]["sha256"]
            length = entry["length"]
        except (KeyError, TypeError):
            raise PlanningError(f"CI target {name}: needs length and hashes.sha256") from None
        custom = entry.get("custom") or {}
        if not isinstance(custom, Mapping):
            raise PlanningError(f"CI target {name}: custom must be an object")
        return cls(name=name, sha256=sha256, length=length, custom=dict(custom))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "length": self.length,
            "custom": copy.deepcopy(dict(self.custom)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CITarget:
        return cls(
            name=data["name"],
            sha256=data["sha256"],
            length=data["length"],
            custom=dict(data.get("custom") or {}),
        )


@dataclass(frozen=True)
class ProductionState:
    """What the planner needs to know about one tag.

    ``signed`` is the ``signed`` part of the tag's published production targets (None
    before the first wave completes); ``highest_planned`` is the highest TUF targets
    version ever planned for the tag in any payload (0 when nothing was ever planned).
    """

    tag: str
    signed: Mapping[str, Any] | None = field(default=None, hash=False)
    highest_planned: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.highest_planned, int) or self.highest_planned < 0:
            raise ValueError("highest_planned must be an integer >= 0")
        if self.signed is not None:
            version = self.signed.get("version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise ValueError("production targets need an integer version >= 1")
            if not isinstance(self.signed.get("targets"), Mapping):
                raise ValueError("production targets need a 'targets' object")
            if version > self.highest_planned:
                # The counter covers every payload ever planned, production included.
                raise ValueError(
                    f"highest_planned {self.highest_planned} is below the production "
                    f"version {version} of tag {self.tag}"
                )

    @property
    def version(self) -> int | None:
        """The TUF version of the published production targets, if any."""
        return None if self.signed is None else int(self.signed["version"])

    @property
    def targets(self) -> dict[str, Any]:
        """The production target entries (a fresh copy; empty before the first wave)."""
        return {} if self.signed is None else copy.deepcopy(dict(self.signed["targets"]))

    @property
    def ci_version(self) -> int | None:
        """The highest CI build number (``custom.version``) in production, if any."""
        return production_ci_version(self.targets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "signed": None if self.signed is None else copy.deepcopy(dict(self.signed)),
            "highest_planned": self.highest_planned,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProductionState:
        signed = data.get("signed")
        return cls(
            tag=data["tag"],
            signed=None if signed is None else dict(signed),
            highest_planned=int(data.get("highest_planned", 0)),
        )


@dataclass(frozen=True)
class RevertPayload:
    """R: the production targets at init, re-versioned to v + 1 (published on cancel)."""

    signed: dict[str, Any] = field(hash=False)
    version: int

    @property
    def sha256(self) -> str:
        """sha256 of the canonical bytes of ``signed`` (what the signatures cover)."""
        return digest(self.signed)

    def to_dict(self) -> dict[str, Any]:
        return {"signed": copy.deepcopy(self.signed), "version": self.version}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RevertPayload:
        return cls(signed=dict(data["signed"]), version=int(data["version"]))


@dataclass(frozen=True)
class WavePlan:
    """The result of ``plan_wave``: W, R and what the operator should be told."""

    name: str
    tag: str
    ci_version: int
    version: int
    wave: dict[str, Any] = field(hash=False)
    revert: RevertPayload
    new_targets: tuple[str, ...]
    pruned: tuple[str, ...]
    expires: str
    warnings: tuple[str, ...]
    #: The tag's new high-water mark (= revert.version): persist it with the wave.
    highest_planned: int

    @property
    def wave_sha256(self) -> str:
        return digest(self.wave)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "tag": self.tag,
            "ci_version": self.ci_version,
            "version": self.version,
            "wave": copy.deepcopy(self.wave),
            "revert": self.revert.to_dict(),
            "new_targets": list(self.new_targets),
            "pruned": list(self.pruned),
            "expires": self.expires,
            "warnings": list(self.warnings),
            "highest_planned": self.highest_planned,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WavePlan:
        return cls(
            name=data["name"],
            tag=data["tag"],
            ci_version=int(data["ci_version"]),
            version=int(data["version"]),
            wave=dict(data["wave"]),
            revert=RevertPayload.from_dict(data["revert"]),
            new_targets=tuple(data["new_targets"]),
            pruned=tuple(data.get("pruned", ())),
            expires=data["expires"],
            warnings=tuple(data.get("warnings", ())),
            highest_planned=int(data["highest_planned"]),
        )


@dataclass(frozen=True)
class RenewalPlan:
    """The result of ``plan_renewal``: the same production targets, re-versioned."""

    tag: str
    version: int
    signed: dict[str, Any] = field(hash=False)
    expires: str
    warnings: tuple[str, ...]
    #: The tag's new high-water mark (= version): persist it with the request.
    highest_planned: int

    @property
    def sha256(self) -> str:
        return digest(self.signed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "version": self.version,
            "signed": copy.deepcopy(self.signed),
            "expires": self.expires,
            "warnings": list(self.warnings),
            "highest_planned": self.highest_planned,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RenewalPlan:
        return cls(
            tag=data["tag"],
            version=int(data["version"]),
            signed=dict(data["signed"]),
            expires=data["expires"],
            warnings=tuple(data.get("warnings", ())),
            highest_planned=int(data["highest_planned"]),
        )


# --------------------------------------------------------------------------- expiry


def _require_aware(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise PlanningError(f"{what} must carry a time zone (UTC), got {moment.isoformat()}")
    return moment.astimezone(UTC)


def _round_to_second(moment: datetime) -> datetime:
    # Go's time.Round(time.Second), as fioctl does: halves round up.
    whole = moment.replace(microsecond=0)
    return whole + timedelta(seconds=1) if moment.microsecond >= 500_000 else whole


def parse_expires_at(text: str) -> datetime:
    """Parse ``--expires-at`` (RFC 3339, e.g. ``2027-01-01T00:00:00Z``) to an aware UTC time."""
    value = text.strip()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or "T" not in value.upper() or moment.tzinfo is None:
        raise PlanningError(
            f"Invalid expires-at value: {text!r} (RFC 3339 with a time zone, "
            "e.g. 2027-01-01T00:00:00Z)"
        )
    return moment.astimezone(UTC)


def compute_expiry(
    now: datetime, expires_days: int = DEFAULT_EXPIRES_DAYS, expires_at: datetime | None = None
) -> datetime:
    """fioctl's expiry: ``expires_at`` if given, else now + days; UTC, whole seconds.

    An expiry that is not in the future is refused: nothing signed with it would verify.
    """
    now = _require_aware(now, "now")
    if expires_at is not None:
        expires = _round_to_second(_require_aware(expires_at, "--expires-at"))
    else:
        if not isinstance(expires_days, int) or isinstance(expires_days, bool):
            raise PlanningError(f"--expires-days must be a whole number, got {expires_days!r}")
        if expires_days < 1:
            raise PlanningError(f"--expires-days must be at least 1, got {expires_days}")
        try:
            expires = _round_to_second(now + timedelta(days=expires_days))
        except OverflowError:
            raise PlanningError(f"--expires-days {expires_days} is too far ahead") from None
    if expires <= now:
        raise PlanningError(f"Expiry {format_expires(expires)} is in the past")
    return expires


def format_expires(moment: datetime) -> str:
    """TUF's ``expires`` string ``YYYY-MM-DDTHH:MM:SSZ`` of an aware time."""
    return format_utc(moment)


# --------------------------------------------------------------------------- helpers


def parse_ci_version(value: Any) -> int | None:
    """A CI build number as an integer (fioctl writes ``custom.version`` as a string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def production_ci_version(targets: Mapping[str, Any]) -> int | None:
    """The highest CI build number (``custom.version``) among target entries, if any."""
    numbers = []
    for entry in targets.values():
        custom = entry.get("custom") if isinstance(entry, Mapping) else None
        if isinstance(custom, Mapping):
            number = parse_ci_version(custom.get("version"))
            if number is not None:
                numbers.append(number)
    return max(numbers) if numbers else None


def _entry_version(entry: Any) -> str | None:
    custom = entry.get("custom") if isinstance(entry, Mapping) else None
    if not isinstance(custom, Mapping) or custom.get("version") is None:
        return None
    return str(custom["version"])


def _targets_signed(version: int, expires: str, targets: dict[str, Any]) -> dict[str, Any]:
    # Exactly the fields python-tuf's Targets requires; no delegations in production.
    return {
        "_type": "targets",
        "spec_version": SPEC_VERSION,
        "version": version,
        "expires": expires,
        "targets": targets,
    }


def _check_signable(signed: dict[str, Any], what: str) -> None:
    # A float (or a non-string key) in a CI custom field would only fail at signing
    # time on the offline machine: refuse it here, before anything is stored.
    try:
        canonical_bytes(signed)
    except WavesignError as exc:
        raise PlanningError(f"{what} cannot be signed: {exc}") from None


def _check_open_wave(tag: str, open_wave: str | None, doing: str) -> None:
    if open_wave is not None:
        raise PlanningError(
            f"Cannot {doing} for tag {tag}: wave {open_wave} is still open "
            "(awaiting signatures or active); complete or cancel it first"
        )


def _select_new_targets(
    ci_version: int, ci_targets: Iterable[CITarget], source_tag: str | None
) -> list[CITarget]:
    wanted = str(ci_version)
    selected: dict[str, CITarget] = {}
    for target in ci_targets:
        if target.ci_version != wanted:
            continue
        if source_tag is not None and source_tag not in target.tags:
            continue
        if target.name in selected:
            raise PlanningError(f"CI target {target.name} is listed twice")
        selected[target.name] = target
    if not selected:
        suffix = f" with source tag {source_tag}" if source_tag is not None else ""
        raise PlanningError(f"No targets found for version {ci_version}{suffix}")
    # One target per hardware id: a device installs the one target for its hardware id.
    by_hardware: dict[str, str] = {}
    for name in sorted(selected):
        target = selected[name]
        if not target.hardware_ids:
            raise PlanningError(f"CI target {name} has no custom.hardwareIds")
        for hardware_id in target.hardware_ids:
            other = by_hardware.setdefault(hardware_id, name)
            if other != name:
                raise PlanningError(
                    f"Targets {other} and {name} of version {ci_version} are both for "
                    f"hardware id {hardware_id}: a wave takes one target per hardware id "
                    "(use --source-tag to choose)"
                )
    return [selected[name] for name in sorted(selected)]


def _normalize_prune(prune: Iterable[str | int]) -> list[str]:
    versions: list[str] = []
    for item in prune:
        value = str(item).strip()
        if value and value not in versions:
            versions.append(value)
    return versions


def _delta_warning(name: str) -> str:
    return (
        f"Target {name} has no static delta (custom.delta-stats): it is recommended to "
        "generate OSTree static deltas before rolling a wave out to production devices"
    )


# --------------------------------------------------------------------------- planning


def plan_wave(
    name: str,
    ci_version: int,
    tag: str,
    ci_targets: Iterable[CITarget],
    production: ProductionState,
    *,
    now: datetime,
    expires_days: int = DEFAULT_EXPIRES_DAYS,
    expires_at: datetime | None = None,
    prune: Iterable[str | int] = (),
    source_tag: str | None = None,
    open_wave: str | None = None,
) -> WavePlan:
    """Plan ``wave init NAME CI_VERSION TAG``: the unsigned W and R and the new counter.

    ``ci_targets`` may hold CI targets of any build; those of ``ci_version`` are taken.
    ``open_wave``, if given, names the tag's wave that is still awaiting signatures or
    active: a second one is refused. Raises :class:`PlanningError` with fioctl's
    message (or a precise one where fioctl has none); on success nothing else happens.
    """
    if not isinstance(name, str) or not _WAVE_NAME.match(name):
        raise PlanningError(
            f"Invalid wave name {name!r}: use letters, digits, '.', '_', '+' and '-' "
            "(at most 200 characters, starting with a letter or digit)"
        )
    if not isinstance(tag, str) or not tag.strip():
        raise PlanningError("A wave needs a tag")
    if production.tag != tag:
        raise PlanningError(f"Production state is for tag {production.tag}, not {tag}")
    if not isinstance(ci_version, int) or isinstance(ci_version, bool) or ci_version < 0:
        raise PlanningError(f"Version must be an integer, got {ci_version!r}")
    if source_tag is not None and not source_tag:
        source_tag = None
    _check_open_wave(tag, open_wave, f"create wave {name}")
    expires = format_expires(compute_expiry(now, expires_days, expires_at))

    new_targets = _select_new_targets(ci_version, ci_targets, source_tag)

    current_ci = production.ci_version
    if current_ci is not None and ci_version <= current_ci:
        raise PlanningError(
            "Cannot create a Wave for a version lower than or equal to production "
            "Targets for the same tag"
        )

    targets = production.targets
    for target in new_targets:
        if target.name in targets:
            raise PlanningError(
                f"Target {target.name} already exists in production Targets for tag {tag}"
            )
    for target in new_targets:
        entry = target.to_entry()
        entry["custom"]["tags"] = [tag]  # fioctl: original tags are ignored
        targets[target.name] = entry

    pruned: list[str] = []
    prune_versions = _normalize_prune(prune)
    if prune_versions:
        if str(ci_version) in prune_versions:
            raise PlanningError("Cannot prune current version")
        missing = []
        for prune_version in prune_versions:
            names = sorted(n for n, e in targets.items() if _entry_version(e) == prune_version)
            if not names:
                missing.append(prune_version)
            pruned.extend(names)
        if missing:
            raise PlanningError(f"Unable to prune the following versions: {','.join(missing)}")
        for target_name in pruned:
            del targets[target_name]

    version = production.highest_planned + 1
    wave = _targets_signed(version, expires, targets)
    revert = RevertPayload(
        signed=_targets_signed(version + 1, expires, production.targets), version=version + 1
    )
    _check_signable(wave, f"Wave {name}")
    _check_signable(revert.signed, f"The revert payload of wave {name}")

    warnings = tuple(_delta_warning(t.name) for t in new_targets if "delta-stats" not in t.custom)
    return WavePlan(
        name=name,
        tag=tag,
        ci_version=ci_version,
        version=version,
        wave=wave,
        revert=revert,
        new_targets=tuple(t.name for t in new_targets),
        pruned=tuple(sorted(pruned)),
        expires=expires,
        warnings=warnings,
        highest_planned=version + 1,
    )


def plan_renewal(
    tag: str,
    production: ProductionState,
    *,
    now: datetime,
    expires_days: int = DEFAULT_EXPIRES_DAYS,
    expires_at: datetime | None = None,
    open_wave: str | None = None,
) -> RenewalPlan:
    """Plan ``production renew TAG``: the same targets, a higher version, a new expiry.

    Refused while a wave of the tag is open (``open_wave``): the renewal's version would
    be above the wave's, and completing the wave would then move production backwards.
    """
    if production.tag != tag:
        raise PlanningError(f"Production state is for tag {production.tag}, not {tag}")
    if production.signed is None:
        raise PlanningError(f"No production Targets for tag {tag}: nothing to renew")
    _check_open_wave(tag, open_wave, "renew production Targets")
    expires = format_expires(compute_expiry(now, expires_days, expires_at))
    version = production.highest_planned + 1
    signed = _targets_signed(version, expires, production.targets)
    _check_signable(signed, f"Production Targets for tag {tag}")
    warnings: list[str] = []
    current = production.signed.get("expires")
    if isinstance(current, str) and current > expires:
        # Same fixed-width format: string order is time order.
        warnings.append(f"The new expiry {expires} is earlier than the current one {current}")
    return RenewalPlan(
        tag=tag,
        version=version,
        signed=signed,
        expires=expires,
        warnings=tuple(warnings),
        highest_planned=version,
    )
