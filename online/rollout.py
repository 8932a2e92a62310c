"""Rollout device selection: which devices ``wave rollout`` reaches (pure).

fioctl's rules (``reference/foundries-fioctl.md``, fioctl ``subcommands/waves/rollout.go``):

- At least one of ``--group``, ``--limit`` or ``--uuids`` is required.
- Only devices on the wave's tag are selected. ``--uuids`` names devices that must exist,
  be on the wave's tag and, with ``--group``, be in that group.
- Devices the wave was already rolled out to are skipped.
- ``--limit N`` takes at most N devices; ``--limit N%`` takes N percent (rounded down,
  like fioctl) of the matching devices: the tag's devices, narrowed by ``--group`` and
  ``--uuids``, counting those already rolled out to, so that repeating ``--limit 10%``
  reaches 10 % more of the group each time.
- The most recently seen devices are taken first (fioctl's API favours recently active
  devices), then by uuid: the same inputs always give the same selection.
- A *full-group* rollout is a group with neither ``--limit`` nor ``--uuids``: the store
  records the group, and devices that join it later are included. It may reach any
  number of devices. Any other rollout reaches at most 10,000 devices per call.

Parsing ``--uuids`` (a list, or ``@FILE`` whose text the caller reads) and ``--limit``
is here too, so that the CLI and the API refuse the same inputs with the same words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wavesign.shared.errors import WavesignError

__all__ = [
    "MAX_DEVICES_PER_ROLLOUT",
    "MAX_UUID_LENGTH",
    "DeviceRef",
    "RolloutError",
    "RolloutLimit",
    "RolloutSelection",
    "ensure_rollout_allowed",
    "parse_limit",
    "parse_uuids",
    "parse_uuids_option",
    "select_rollout",
]

MAX_DEVICES_PER_ROLLOUT = 10_000
MAX_UUID_LENGTH = 60
# fioctl's separators: comma, semicolon, pipe, and any white space (line breaks included).
_UUID_SEPARATORS = re.compile(r"[,;|\s]+")
_LIMIT = re.compile(r"^([0-9]+)(%?)$")


class RolloutError(WavesignError):
    """A rollout cannot be made as asked."""


@dataclass(frozen=True)
class DeviceRef:
    """The facts about a device that rollouts and views depend on.

    ``last_seen`` is the broker's ``YYYY-MM-DDTHH:MM:SSZ`` string (fixed width, so
    string order is time order), or None for a device never seen.
    """

    uuid: str
    tag: str
    group: str | None = None
    last_seen: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "uuid": self.uuid,
            "tag": self.tag,
            "group": self.group,
            "last_seen": self.last_seen,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeviceRef:
        return cls(
            uuid=data["uuid"],
            tag=data["tag"],
            group=data.get("group"),
            last_seen=data.get("last_seen"),
        )


@dataclass(frozen=True)
class RolloutLimit:
    """``--limit``: exactly one of ``count`` (N) or ``percent`` (N%)."""

    count: int | None = None
    percent: int | None = None

    def __str__(self) -> str:
        return f"{self.percent}%" if self.percent is not None else str(self.count)


@dataclass(frozen=True)
class RolloutSelection:
    """The devices a rollout reaches now, and what to tell the operator.

    ``uuids`` are the devices newly rolled out to (never one already in the wave), in
    selection order. ``full_group`` asks the store to record ``group`` as rolled out
    whole, which also covers devices that join it later. ``note`` is fioctl's second
    line for a full-group rollout, else None.
    """

    uuids: tuple[str, ...]
    group: str | None
    full_group: bool
    message: str
    note: str | None = None

    @property
    def device_count(self) -> int:
        return len(self.uuids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "uuids": list(self.uuids),
            "group": self.group,
            "full_group": self.full_group,
            "device_count": self.device_count,
            "message": self.message,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutSelection:
        return cls(
            uuids=tuple(data["uuids"]),
            group=data.get("group"),
            full_group=bool(data["full_group"]),
            message=data["message"],
            note=data.get("note"),
        )


# --------------------------------------------------------------------------- parsing


def parse_limit(text: str) -> RolloutLimit:
    """Parse ``--limit``: ``N`` (1..10000 devices) or ``N%`` (1..100 percent)."""
    match = _LIMIT.match(text.strip())
    if not match:
        raise RolloutError(f'A "limit" must be either a number or a percentage: {text}')
    number = int(match.group(1))
    if match.group(2):
        if not 1 <= number <= 100:
            raise RolloutError(f"A percentage limit must be between 1% and 100%: {text}")
        return RolloutLimit(percent=number)
    if number < 1:
        raise RolloutError(f"A limit must be at least 1 device: {text}")
    if number > MAX_DEVICES_PER_ROLLOUT:
        raise RolloutError(
            f"A limit cannot exceed {MAX_DEVICES_PER_ROLLOUT} devices per rollout: {text}"
        )
    return RolloutLimit(count=number)


def parse_uuids(text: str) -> tuple[str, ...]:
    """Split a ``--uuids`` list (or a ``@FILE``'s text) into device uuids, duplicates dropped.

    Separators are fioctl's: ``,`` ``;`` ``|`` and any white space or line break.
    """
    result: list[str] = []
    seen: set[str] = set()
    for value in _UUID_SEPARATORS.split(text):
        if not value:
            continue
        if len(value) > MAX_UUID_LENGTH:
            shown = value if len(value) <= 100 else value[:100] + "... (cropped)"
            raise RolloutError(
                f"Device uuid value is too long, limit is {MAX_UUID_LENGTH}: {shown}"
            )
        if value not in seen:
            seen.add(value)
            result.append(value)
    if len(result) > MAX_DEVICES_PER_ROLLOUT:
        raise RolloutError(
            f"Device uuids list contains {len(result)} items, limit is {MAX_DEVICES_PER_ROLLOUT}"
        )
    if not result:
        raise RolloutError("The device uuids list is empty")
    return tuple(result)


def parse_uuids_option(value: str, read_file: Callable[[str], str]) -> tuple[str, ...]:
    """Parse ``--uuids LIST`` or ``--uuids @FILE``; ``read_file(path)`` returns the text.

    The reading is the caller's (the CLI reads the operator's file; the API never does).
    """
    if value.startswith("@"):
        path = value[1:]
        if not path:
            raise RolloutError("--uuids @FILE needs a file name after '@'")
        text = read_file(path)
        if not text.strip():
            raise RolloutError("Devices UUIDs file cannot be empty")
        return parse_uuids(text)
    return parse_uuids(value)


# --------------------------------------------------------------------------- selection


def ensure_rollout_allowed(wave: str, status: str) -> None:
    """Only an ``active`` wave (signed to threshold) can be rolled out."""
    if status == "active":
        return
    if status == "awaiting-signatures":
        raise RolloutError(
            f"Wave {wave} is awaiting signatures: import the offline signatures "
            "(wavesign requests import) before rolling it out"
        )
    raise RolloutError(f"Wave {wave} is {status}: only an active wave can be rolled out")


def _in_selection_order(devices: Iterable[DeviceRef]) -> list[DeviceRef]:
    # Most recently seen first, never-seen last; ties by uuid. Two stable sorts: by uuid,
    # then by last_seen descending (reverse=True keeps the uuid order among equals).
    by_uuid = sorted(devices, key=lambda d: d.uuid)
    return sorted(by_uuid, key=lambda d: (d.last_seen is not None, d.last_seen or ""), reverse=True)


def _messages(
    count: int, group: str | None, full_group: bool, dry_run: bool
) -> tuple[str, str | None]:
    verb = "would be" if dry_run else "is being"
    where = f" in group {group}" if group is not None else ""
    message = f"A Wave {verb} rolled out to {count} devices{where}."
    note = None
    if full_group:
        also = "would also be" if dry_run else "will also be"
        note = f"It {also} rolled out to all new devices in group {group}."
    return message, note


def _matching_by_uuid(
    uuids: Sequence[str], candidates: Iterable[DeviceRef], tag: str, group: str | None
) -> list[DeviceRef]:
    by_uuid = {device.uuid: device for device in candidates}
    matching: list[DeviceRef] = []
    seen: set[str] = set()
    for uuid in uuids:
        if uuid in seen:
            continue
        seen.add(uuid)
        device = by_uuid.get(uuid)
        if device is None:
            raise RolloutError(f"Device {uuid} not found")
        if device.tag != tag:
            raise RolloutError(f"Device {uuid} is on tag {device.tag}, not on the wave's tag {tag}")
        if group is not None and device.group != group:
            raise RolloutError(f"Device {uuid} is not in group {group}")
        matching.append(device)
    return matching


def select_rollout(
    candidates: Iterable[DeviceRef],
    *,
    tag: str,
    already_in_wave: Collection[str],
    group: str | None = None,
    limit: str | RolloutLimit | None = None,
    uuids: Sequence[str] | None = None,
    max_devices: int = MAX_DEVICES_PER_ROLLOUT,
    dry_run: bool = False,
) -> RolloutSelection:
    """Select the devices that ``wave rollout`` reaches.

    ``candidates`` must hold every device the selection may draw from: the devices on
    the wave's ``tag`` (in ``group`` if one is given), and every device named by
    ``uuids`` whatever its tag (so that a wrong one is reported). Others are ignored.
    ``already_in_wave`` holds the uuids the wave was already rolled out to.
    """
    if group is not None and not group:
        group = None
    if uuids is not None and len(uuids) == 0:
        raise RolloutError("The device uuids list is empty")
    if group is None and limit is None and uuids is None:
        raise RolloutError("One of the following flags must be set: group, limit, uuids")
    if uuids is not None and len(set(uuids)) > max_devices:
        raise RolloutError(
            f"Device uuids list contains {len(set(uuids))} items, limit is {max_devices}"
        )
    parsed_limit = parse_limit(limit) if isinstance(limit, str) else limit
    full_group = group is not None and parsed_limit is None and uuids is None

    if uuids is not None:
        matching = _matching_by_uuid(uuids, candidates, tag, group)
    else:
        matching = [d for d in candidates if d.tag == tag and (group is None or d.group == group)]
    eligible = _in_selection_order(d for d in matching if d.uuid not in already_in_wave)

    selected = eligible
    if parsed_limit is not None:
        if parsed_limit.count is not None:
            wanted = parsed_limit.count
        else:
            wanted = len(matching) * (parsed_limit.percent or 0) // 100
        selected = eligible[:wanted]

    if not full_group:
        where = f" in group {group}" if group is not None else ""
        if not matching:
            raise RolloutError(f"No devices on tag {tag}{where} match this rollout")
        if not eligible:
            raise RolloutError(
                f"The wave was already rolled out to all {len(matching)} matching devices"
            )
        if not selected:
            raise RolloutError(
                f"--limit {parsed_limit} of {len(matching)} matching devices selects no device"
            )
        if len(selected) > max_devices:
            raise RolloutError(
                f"This rollout would reach {len(selected)} devices, more than the {max_devices} "
                f"allowed per call: use --limit {max_devices} (or a smaller percentage) and "
                "roll out in several steps"
            )

    message, note = _messages(len(selected), group, full_group, dry_run)
    return RolloutSelection(
        uuids=tuple(d.uuid for d in selected),
        group=group,
        full_group=full_group,
        message=message,
        note=note,
    )
