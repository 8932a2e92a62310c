"""Polling a simulated fleet: real ngclient devices, or a lightweight poller for large N.

``wavesign fleet simulate`` registers devices and then polls them as a fleet would:

- **full** (the default up to :data:`FULL_VERIFY_LIMIT` devices): each device is the
  reference agent (:func:`wavesign.online.device_agent.poll_once`, python-tuf ngclient)
  with its own state folder: every signature, version and expiry is verified.
- **light** (the default above it): a load generator. It fetches what a device would
  (``timestamp.json`` with ``If-None-Match``, then the snapshot and targets it names),
  picks a target with the agent's own :func:`choose_target` and reports the install
  events, over one pooled HTTP/1.1 client, but verifies no signature. It measures the
  broker under a big fleet; it proves nothing about the metadata.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from wavesign.shared.errors import WavesignError
from wavesign.shared.timefmt import utc_now_text

from .device_agent import (
    EVENTS_PATH,
    REPO_PATH,
    DeviceAgentError,
    choose_target,
    install_events,
    poll_once,
)

__all__ = [
    "FULL_VERIFY_LIMIT",
    "FleetPollReport",
    "LightDevice",
    "SimulatedDevice",
    "choose_mode",
    "fleet_progress",
    "poll_full",
    "poll_light",
    "wait_until_served",
]

#: Above this many devices ``--verify auto`` switches to the lightweight poller.
FULL_VERIFY_LIMIT = 300
Mode = Literal["full", "light"]
Done = Callable[[], None]


@dataclass(frozen=True)
class SimulatedDevice:
    name: str
    uuid: str
    token: str
    hardware_id: str
    tag: str


@dataclass
class FleetPollReport:
    """One round of polls: how many devices updated, what they run, what failed."""

    polled: int = 0
    updated: int = 0
    running: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        running = ", ".join(f"{n} on {t}" for t, n in sorted(self.running.items())) or "none"
        text = f"polled {self.polled} devices: {self.updated} updated; running: {running}"
        return text + (f"; {len(self.errors)} failed" if self.errors else "")


class LightPollError(WavesignError):
    """A lightweight poll got an answer a device would not accept."""


def fleet_progress(console: Console, description: str = "{task.description}") -> Progress:
    """The progress bar of a fleet's polls (and registrations): done / total, elapsed."""
    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def choose_mode(count: int, requested: str) -> Mode:
    """``auto`` -> full ngclient verification up to :data:`FULL_VERIFY_LIMIT` devices."""
    if requested == "full" or (requested == "auto" and count <= FULL_VERIFY_LIMIT):
        return "full"
    return "light"


def wait_until_served(url: str, device: SimulatedDevice, timeout: float = 60.0) -> None:
    """Wait until the broker's device API knows ``device`` (it republishes after a
    registration within a poll or two of its serving loop)."""
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {device.token}"}
    with httpx.Client(base_url=url, timeout=10) as client:
        while True:
            answer = client.get(REPO_PATH + "1.root.json", headers=headers)
            if answer.status_code != 401:
                return
            if time.monotonic() > deadline:
                raise LightPollError(
                    f"the broker did not serve the new devices within {timeout:.0f} s"
                )
            time.sleep(0.1)


def poll_full(
    url: str,
    devices: Sequence[SimulatedDevice],
    state_root: Path,
    *,
    bootstrap_root: bytes | None,
    workers: int = 8,
    on_done: Done | None = None,
) -> FleetPollReport:
    """Poll every device once with the reference agent (ngclient), ``workers`` at a time."""
    report = FleetPollReport()

    def poll(device: SimulatedDevice) -> tuple[SimulatedDevice, Any]:
        try:
            result: Any = poll_once(
                url,
                device.token,
                state_root / device.name,
                hardware_id=device.hardware_id,
                tag=device.tag,
                bootstrap_root=bootstrap_root,
            )
        except DeviceAgentError as exc:
            result = exc
        if on_done is not None:
            on_done()
        return device, result

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for device, result in pool.map(poll, devices):
            report.polled += 1
            if isinstance(result, DeviceAgentError):
                report.errors.append(f"{device.name}: {result}")
                continue
            report.updated += int(result.updated)
            if result.target is not None:
                report.running[result.target] += 1
    return report


@dataclass
class LightDevice:
    """What the lightweight poller remembers of a device between rounds."""

    device: SimulatedDevice
    etag: str | None = None
    target: str | None = None
    version: int | None = None


async def _poll_light_one(client: httpx.AsyncClient, state: LightDevice) -> bool:
    """One poll of one device; True if it "installed" something."""
    device = state.device
    auth = {"Authorization": f"Bearer {device.token}"}
    headers = dict(auth)
    if state.etag is not None:
        headers["If-None-Match"] = state.etag
    answer = await client.get(REPO_PATH + "timestamp.json", headers=headers)
    if answer.status_code == 304:
        return False
    if answer.status_code != 200:
        raise LightPollError(f"timestamp.json: HTTP {answer.status_code}")
    etag = answer.headers.get("etag")
    timestamp = json.loads(answer.content)["signed"]
    snapshot_version = timestamp["meta"]["snapshot.json"]["version"]
    answer = await client.get(f"{REPO_PATH}{snapshot_version}.snapshot.json", headers=auth)
    answer.raise_for_status()
    targets_version = json.loads(answer.content)["signed"]["meta"]["targets.json"]["version"]
    answer = await client.get(f"{REPO_PATH}{targets_version}.targets.json", headers=auth)
    answer.raise_for_status()
    targets = json.loads(answer.content)["signed"]["targets"]
    customs = {name: entry.get("custom", {}) for name, entry in targets.items()}
    chosen = choose_target(customs, device.hardware_id, device.tag, state.version)
    if chosen is not None:
        name, version = chosen
        now = utc_now_text()
        events = install_events(name, version, uuidlib.uuid4().hex, [now] * 4)
        reported = await client.post(EVENTS_PATH, json=events, headers=auth)
        if reported.status_code != 204:
            raise LightPollError(f"events: HTTP {reported.status_code}")
        state.target, state.version = name, version
    # Remembered only now: a poll that failed half-way is done again next round.
    state.etag = etag
    return chosen is not None


async def _poll_light(
    url: str, states: Sequence[LightDevice], concurrency: int, on_done: Done | None
) -> FleetPollReport:
    report = FleetPollReport()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def one(state: LightDevice) -> None:
            async with semaphore:
                try:
                    # Awaited first: ``x += await f()`` reads x before the await.
                    updated = await _poll_light_one(client, state)
                    report.updated += int(updated)
                except (httpx.HTTPError, LightPollError, KeyError, ValueError) as exc:
                    report.errors.append(f"{state.device.name}: {exc}")
                report.polled += 1
                if state.target is not None:
                    report.running[state.target] += 1
                if on_done is not None:
                    on_done()

        await asyncio.gather(*(one(state) for state in states))
    return report


def poll_light(
    url: str,
    states: Sequence[LightDevice],
    *,
    concurrency: int = 64,
    on_done: Done | None = None,
) -> FleetPollReport:
    """Poll every device once with the lightweight poller (no verification)."""
    return asyncio.run(_poll_light(url, states, concurrency, on_done))
