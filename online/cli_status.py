"""``wavesign status``, ``wavesign wave status`` and ``wavesign fleet simulate`` (click).

Thin commands over the operator API (``online/status_api.py``, ``/api/v1/devices``).
Register them on the main group::

    cli.add_command(status)
    wave.add_command(wave_status)
    cli.add_command(fleet)
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from wavesign.shared.errors import WavesignError
from wavesign.shared.fileio import atomic_write

from .cli_common import CONTEXT, client_for
from .fleet_poll import (
    FULL_VERIFY_LIMIT,
    LightDevice,
    SimulatedDevice,
    choose_mode,
    fleet_progress,
    poll_full,
    poll_light,
    wait_until_served,
)
from .status import DEFAULT_OFFLINE_THRESHOLD_HOURS

__all__ = ["fleet", "parse_group_shares", "split_counts", "status", "wave_status"]

_BATCH = 5000


class SimulateError(WavesignError):
    """``fleet simulate`` was given a bad --groups list."""


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


THRESHOLD = click.option(
    "--offline-threshold",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_OFFLINE_THRESHOLD_HOURS,
    show_default=True,
    help="Hours: a device seen within them counts as online.",
)


@click.command("status", context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@THRESHOLD
@click.pass_context
def status(ctx: click.Context, as_json: bool, offline_threshold: float) -> None:
    """The fleet: per tag, devices on the latest target, on an orphan, online.

    An orphan is a target a device runs that its view no longer lists (a canary
    device that installed a canceled wave). Warns about published targets that
    expire within 30 days.

    \b
    Example:
      wavesign status
      wavesign status --json --offline-threshold 24
    """
    answer = client_for(ctx).get("/status", offline_threshold=offline_threshold)
    if as_json:
        _echo_json(answer["report"])
    else:
        click.echo(answer["text"])


@click.command("status", context_settings=CONTEXT)
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@THRESHOLD
@click.pass_context
def wave_status(
    ctx: click.Context, name: str | None, as_json: bool, offline_threshold: float
) -> None:
    """A wave's progress per device group (default: the newest active wave).

    Columns: GROUP, TOTAL, UPDATED (on the wave's version or newer), NEED UPDATE,
    SCHEDULED (rolled out to, not updated yet), ONLINE, ROLLOUT AT.

    \b
    Example:
      wavesign wave status v2.0-update
    """
    answer = client_for(ctx).get("/status/wave", name=name, offline_threshold=offline_threshold)
    if as_json:
        _echo_json(answer["report"])
    else:
        click.echo(answer["text"])


# --- fleet simulate ---------------------------------------------------------------------------

_SHARE = re.compile(r"^([^:,\s]+):(\d+(?:\.\d+)?)%$")


def parse_group_shares(text: str) -> list[tuple[str, float]]:
    """``canary:5%,us-east-1:45%`` -> [("canary", 5.0), ("us-east-1", 45.0)] (at most 100%)."""
    shares: list[tuple[str, float]] = []
    for item in text.split(","):
        item = item.strip()
        match = _SHARE.match(item)
        if match is None:
            raise SimulateError(f"--groups: {item!r} is not GROUP:PERCENT% (e.g. canary:5%)")
        if any(name == match.group(1) for name, _ in shares):
            raise SimulateError(f"--groups: group {match.group(1)} is given twice")
        shares.append((match.group(1), float(match.group(2))))
    if sum(share for _, share in shares) > 100.0 + 1e-9:
        raise SimulateError("--groups: the shares add up to more than 100%")
    return shares


def split_counts(total: int, shares: list[tuple[str, float]]) -> list[tuple[str | None, int]]:
    """How many of ``total`` devices go to each group (largest remainders); the rest
    (if the shares are below 100%) get no group."""
    exact = [(name, total * share / 100.0) for name, share in shares]
    counts = {name: int(value) for name, value in exact}
    assigned = sum(counts.values())
    target = min(total, round(sum(value for _, value in exact)))
    by_remainder = sorted(exact, key=lambda kv: (-(kv[1] - int(kv[1])), kv[0]))
    for name, _ in by_remainder[: max(0, target - assigned)]:
        counts[name] += 1
    result: list[tuple[str | None, int]] = [(name, counts[name]) for name, _ in shares]
    rest = total - sum(counts.values())
    if rest:
        result.append((None, rest))
    return result


@click.group("fleet", context_settings=CONTEXT)
def fleet() -> None:
    """Simulated fleets, for demos and load tests."""


@fleet.command("simulate")
@click.option("--devices", "count", type=click.IntRange(1, 10_000_000), required=True)
@click.option("--groups", required=True, help="GROUP:PERCENT% list, e.g. canary:5%,eu:95%.")
@click.option("--tag", required=True)
@click.option("--hardware-id", required=True)
@click.option("--prefix", default="sim", show_default=True, help="Device name prefix.")
@click.option(
    "--tokens-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write name,uuid,token CSV here (0600); otherwise tokens are discarded.",
)
@click.option(
    "--polls",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="Rounds of polls after registering (0: register only).",
)
@click.option(
    "--interval",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="Seconds between two rounds of polls.",
)
@click.option(
    "--verify",
    type=click.Choice(["auto", "full", "light"]),
    default="auto",
    show_default=True,
    help="full: each device is an ngclient agent that verifies everything; light: a load "
    f"generator that verifies nothing; auto: full up to {FULL_VERIFY_LIMIT} devices.",
)
@click.option(
    "--state",
    "state_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder of the devices' TUF state (full mode; default: a temporary folder).",
)
@click.option(
    "--trusted-root",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="The root the devices pin (full mode; default: the broker's 1.root.json, "
    "trusted on first use).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1024),
    default=None,
    help="Devices polled at once (default: 8 full, 64 light).",
)
@click.pass_context
def simulate(
    ctx: click.Context,
    count: int,
    groups: str,
    tag: str,
    hardware_id: str,
    prefix: str,
    tokens_out: str | None,
    polls: int,
    interval: float,
    verify: str,
    state_dir: str | None,
    trusted_root: str | None,
    concurrency: int | None,
) -> None:
    """Register COUNT devices of TAG spread over groups (created if missing), then poll.

    Up to 300 devices, every device is the reference agent (python-tuf ngclient) with
    its own state folder, and installs what its view offers; above that a lightweight
    poller fetches the same files and reports the same events, verifying nothing.
    Progress goes to stderr; a summary line per round to stdout.

    \b
    Example:
      wavesign fleet simulate --devices 1000 --groups canary:5%,us-east-1:45%,eu:50% \\
          --tag production --hardware-id intel-corei7-64
    """
    shares = parse_group_shares(groups)
    client = client_for(ctx)
    existing = {g["name"] for g in client.get("/groups")}
    for name, _ in shares:
        if name not in existing:
            client.post("/groups", {"name": name})
    specs: list[dict[str, Any]] = []
    index = 0
    for group, n in split_counts(count, shares):
        for _ in range(n):
            index += 1
            spec = {"name": f"{prefix}-{index:07d}", "hardware_id": hardware_id, "tag": tag}
            if group is not None:
                spec["group"] = group
            specs.append(spec)
    issued: list[dict[str, Any]] = []
    with fleet_progress(Console(stderr=True)) as progress:
        task = progress.add_task("registering", total=len(specs))
        for start in range(0, len(specs), _BATCH):
            issued += client.post("/devices", {"devices": specs[start : start + _BATCH]})
            progress.update(task, completed=len(issued))
    if tokens_out is not None:
        lines = [f"{d['name']},{d['uuid']},{d['token']}" for d in issued]
        atomic_write(
            Path(tokens_out), ("\n".join(["name,uuid,token", *lines]) + "\n").encode(), mode=0o600
        )
    summary = ", ".join(f"{g or '(no group)'}: {n}" for g, n in split_counts(count, shares))
    click.echo(f"registered {len(issued)} devices on tag {tag} ({summary})")
    if polls == 0:
        return
    devices = [SimulatedDevice(d["name"], d["uuid"], d["token"], hardware_id, tag) for d in issued]
    mode = choose_mode(len(devices), verify)
    root = Path(trusted_root).read_bytes() if trusted_root is not None else None
    if mode == "full" and root is None:
        click.echo("warning: the devices trust the broker's 1.root.json on first use", err=True)
    wait_until_served(client.url, devices[-1])
    with contextlib.ExitStack() as stack:
        folder = (
            Path(state_dir)
            if state_dir
            else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wavesign-fleet-")))
        )
        lights = [LightDevice(device) for device in devices]
        failed = False
        for round_number in range(1, polls + 1):
            if round_number > 1:
                time.sleep(interval)
            with fleet_progress(Console(stderr=True)) as progress:
                task = progress.add_task(
                    f"poll {round_number}/{polls} ({mode})", total=len(devices)
                )

                def done() -> None:
                    progress.advance(task)  # noqa: B023 (called within this round)

                if mode == "full":
                    report = poll_full(
                        client.url,
                        devices,
                        folder,
                        bootstrap_root=root,
                        workers=concurrency or 8,
                        on_done=done,
                    )
                else:
                    report = poll_light(
                        client.url, lights, concurrency=concurrency or 64, on_done=done
                    )
            click.echo(f"round {round_number}: {report.summary()}")
            for error in report.errors[:5]:
                click.echo(f"warning: {error}", err=True)
            failed = failed or bool(report.errors)
    if failed:
        raise SimulateError("some devices failed to poll (see the warnings above)")
