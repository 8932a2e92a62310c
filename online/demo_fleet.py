"""The demo's simulated fleet: real device agents (python-tuf ngclient) polling the broker.

Each device has its own state folder under ``DIR/devices/NAME`` and polls with
:func:`wavesign.online.fleet_poll.poll_full`, that is the reference agent
(:func:`wavesign.online.device_agent.poll_once`, what ``wavesign-device poll`` runs):
verify the TUF metadata from the pinned root, pick the highest build for its hardware
id and tag, "install" it and report the events. The fleet polls concurrently in a
small thread pool behind a rich progress bar; afterwards each device's own
``device.json`` says what it runs.

What the fleet should run after a step is an :data:`Expectation` (group -> CI build);
:func:`check_fleet` compares it with what each device reports it runs (pure).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .demo_actors import DemoError
from .device_agent import STATE_FILE
from .fleet_poll import SimulatedDevice, fleet_progress, poll_full

__all__ = [
    "Expectation",
    "Fleet",
    "SimDevice",
    "check_fleet",
    "describe_expectation",
    "fleet_rows",
    "target_name",
]

TAG = "production"
NO_GROUP_LABEL = "(no group)"
#: group (None: no group) -> the CI build its devices must run (None: nothing yet).
Expectation = Mapping[str | None, int | None]


def target_name(hardware_id: str, build: int) -> str:
    """The name CI gives build ``build`` for ``hardware_id`` (as in the demo's CI files)."""
    return f"{hardware_id}-lmp-{build}"


@dataclass(frozen=True)
class SimDevice:
    name: str
    uuid: str
    token: str
    hardware_id: str
    group: str | None


def _label(group: str | None) -> str:
    return NO_GROUP_LABEL if group is None else group


def check_fleet(
    devices: Sequence[SimDevice], running: Mapping[str, str | None], expected: Expectation
) -> list[str]:
    """Every device whose running target is not the expected build for its group."""
    problems = []
    for device in devices:
        build = expected[device.group]
        wanted = None if build is None else target_name(device.hardware_id, build)
        actual = running.get(device.name)
        if actual != wanted:
            problems.append(
                f"{device.name} ({_label(device.group)}) runs {actual or 'nothing'}, "
                f"expected {wanted or 'nothing'}"
            )
    return problems


def describe_expectation(devices: Sequence[SimDevice], expected: Expectation) -> str:
    """``canary: 4 on build 42, us-east-1: 9 on build 12, (no group): 5 on build 12``."""
    counts = Counter(device.group for device in devices)
    order = sorted(counts, key=lambda g: (g is None, g or ""))
    parts = []
    for group in order:
        build = expected[group]
        what = "nothing installed" if build is None else f"on build {build}"
        parts.append(f"{_label(group)}: {counts[group]} {what}")
    return ", ".join(parts)


def fleet_rows(
    devices: Sequence[SimDevice], running: Mapping[str, str | None]
) -> list[tuple[str, str, str, int]]:
    """(group, hardware id, running target, devices), grouped, for the table."""
    counts = Counter(
        (device.group, device.hardware_id, running.get(device.name) or "-") for device in devices
    )
    ordered = sorted(counts, key=lambda k: (k[0] is None, k[0] or "", k[1], k[2]))
    return [(_label(g), hw, target, counts[(g, hw, target)]) for g, hw, target in ordered]


class Fleet:
    """The simulated devices and how they poll."""

    def __init__(
        self, devices: Sequence[SimDevice], root_file: Path, state_root: Path, workers: int = 6
    ) -> None:
        self.devices = list(devices)
        self.root_file = root_file
        self.state_root = state_root
        self.workers = workers
        self.running: dict[str, str | None] = {d.name: None for d in self.devices}

    @staticmethod
    def read_tokens(
        tokens_csv: Path, hardware_id: str, groups: Mapping[str, str | None]
    ) -> list[SimDevice]:
        """Devices from a ``fleet simulate --tokens-out`` file; ``groups``: uuid -> group."""
        with tokens_csv.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        return [
            SimDevice(
                name=row["name"],
                uuid=row["uuid"],
                token=row["token"],
                hardware_id=hardware_id,
                group=groups.get(row["uuid"]),
            )
            for row in rows
        ]

    def poll_all(self, url: str, console: Console, label: str) -> None:
        """Every device polls once (concurrently); ``running`` is re-read from each
        device's ``device.json``. Raises DemoError if any poll failed."""
        progress = fleet_progress(console, "    [cyan]{task.description}")
        simulated = [
            SimulatedDevice(d.name, d.uuid, d.token, d.hardware_id, TAG) for d in self.devices
        ]
        with progress:
            task = progress.add_task(label, total=len(simulated))
            report = poll_full(
                url,
                simulated,
                self.state_root,
                bootstrap_root=self.root_file.read_bytes(),
                workers=self.workers,
                on_done=lambda: progress.advance(task),
            )
        if report.errors:
            raise DemoError(
                f"{len(report.errors)} device poll(s) failed; first: {report.errors[0]}"
            )
        for device in self.devices:
            state = json.loads((self.state_root / device.name / STATE_FILE).read_text())
            self.running[device.name] = state.get("current_target")

    def table(self, title: str) -> Table:
        table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        for header in ("GROUP", "HARDWARE ID", "RUNNING", "DEVICES"):
            table.add_column(header, justify="right" if header == "DEVICES" else "left")
        for group, hardware_id, target, count in fleet_rows(self.devices, self.running):
            table.add_row(group, hardware_id, target, str(count))
        return table

    def verify(self, expected: Expectation) -> str:
        """Raise DemoError unless every device runs its expected build; else describe it."""
        problems = check_fleet(self.devices, self.running, expected)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise DemoError(f"device {problems[0]}{more}")
        return describe_expectation(self.devices, expected)
