"""What the demo's steps share: the context, and the moves several steps make.

A move is one exchange of the story, printed as the commands people type: CI
registering a build, a request carried to the appliance and back by USB file or by
QR codes, the fleet polling and being checked, the status reports.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from wavesign.shared.fileio import atomic_write

from .client import ApiClient
from .demo_actors import DemoError, Narrator, OfficerShell, OperatorShell
from .demo_broker import EmbeddedBroker
from .demo_fleet import TAG, Expectation, Fleet, target_name
from .demo_outdir import DemoLayout

__all__ = [
    "FLEET",
    "HARDWARE_IDS",
    "DemoContext",
    "by_group",
    "ci_build",
    "ci_targets",
    "poll_and_check",
    "request_id_of",
    "show_status",
    "sign_by_qr",
    "sign_by_usb",
    "wave_init",
]

#: (hardware id, device name prefix, devices, groups) of the simulated fleet.
FLEET = (
    ("intel-corei7-64", "gw", 10, "canary:20%,us-east-1:50%"),
    ("raspberrypi4-64", "pi", 8, "canary:25%,us-east-1:50%"),
)
HARDWARE_IDS = tuple(hw for hw, _prefix, _count, _groups in FLEET)


@dataclass
class DemoContext:
    """What the steps share: the folder, the people, the broker and the fleet."""

    layout: DemoLayout
    narrator: Narrator
    console: Console
    stack: contextlib.ExitStack
    operator: OperatorShell | None = None
    officer: OfficerShell | None = None
    broker: EmbeddedBroker | None = None
    api: ApiClient | None = None
    fleet: Fleet | None = None
    root_file: Path | None = None
    polled_once: bool = False

    # Typed accessors: each is set by step 1 before any later use.
    @property
    def op(self) -> OperatorShell:
        assert self.operator is not None
        return self.operator

    @property
    def off(self) -> OfficerShell:
        assert self.officer is not None
        return self.officer

    @property
    def devices(self) -> Fleet:
        assert self.fleet is not None
        return self.fleet


def request_id_of(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("request: "):
            return line.removeprefix("request: ").strip()
    raise DemoError("the command printed no `request: ID` line")


def ci_targets(build: int) -> dict[str, Any]:
    """The targets.json a CI build publishes: one OSTree target per hardware id."""
    targets = {}
    for hardware_id in HARDWARE_IDS:
        name = target_name(hardware_id, build)
        content = f"{name}: the OSTree commit of CI build {build} (demo)".encode()
        targets[name] = {
            "length": len(content),
            "hashes": {"sha256": hashlib.sha256(content).hexdigest()},
            "custom": {
                "version": str(build),
                "hardwareIds": [hardware_id],
                "targetFormat": "OSTREE",
                "name": f"{hardware_id}-lmp",
            },
        }
    return {"signed": {"_type": "targets", "version": build, "targets": targets}}


# --- moves that several steps make ------------------------------------------------------------


def ci_build(ctx: DemoContext, build: int) -> None:
    """CI registers build ``build``."""
    ci_file = ctx.layout.ci / f"build-{build}.targets.json"
    ci_file.parent.mkdir(exist_ok=True)
    atomic_write(ci_file, json.dumps(ci_targets(build), indent=2).encode() + b"\n")
    ctx.op.run("targets", "add", "--from-json", str(ci_file), who="CI")


def sign_by_usb(ctx: DemoContext, request_id: str, confirm: str, stem: str) -> None:
    """Request out on a USB file, review and sign on the appliance, response back."""
    usb = ctx.layout.usb
    request, response = usb / f"{stem}.request.json", usb / f"{stem}.response.json"
    ctx.op.run("requests", "export", request_id, "--out", str(request))
    ctx.narrator.say(
        "The USB stick goes to the air-gapped appliance. The officer reviews, then signs:"
    )
    ctx.off.run("review", str(request))
    ctx.off.run("sign", str(request), "--confirm", confirm, "--out", str(response))
    ctx.narrator.say("The stick comes back; the operator imports the signatures:")
    ctx.op.run("requests", "import", str(response))


def sign_by_qr(ctx: DemoContext, request_id: str, confirm: str, stem: str) -> None:
    """Request out as QR frames (PNG + HTML slideshow), response back as one QR frame."""
    qr = ctx.layout.qr
    frames, slideshow = qr / f"{stem}-request", qr / f"{stem}-request.html"
    answer = qr / f"{stem}-response"
    ctx.op.run(
        "requests", "export", request_id, "--qr-png", str(frames), "--qr-html", str(slideshow)
    )
    images = sorted(str(p) for p in frames.glob("frame-*.png"))
    if not images:
        raise DemoError(f"requests export wrote no QR frames into {frames}")
    pattern = shlex.quote(str(frames)) + "/frame-*.png"
    ctx.narrator.say(
        f"The officer scans the {len(images)} frame(s) shown on the operator's screen "
        "(here: the PNG files, decoded by zbar):"
    )
    ctx.off.run(
        "review", "--qr-images", *images, display=f"wavesign-offline review --qr-images {pattern}"
    )
    ctx.off.run(
        "sign", "--qr-images", *images, "--confirm", confirm, "--qr-png", str(answer),
        display=f"wavesign-offline sign --qr-images {pattern} --confirm {shlex.quote(confirm)} "
        f"--qr-png {shlex.quote(str(answer))}",
    )  # fmt: skip
    answers = sorted(str(p) for p in answer.glob("frame-*.png"))
    if len(answers) != 1:
        raise DemoError(f"the response took {len(answers)} QR frames; it must fit in one")
    ctx.narrator.say("The operator scans the one response frame off the appliance's screen:")
    ctx.op.run("requests", "import", "--qr-images", answers[0])


def wave_init(ctx: DemoContext, name: str, build: int) -> str:
    return request_id_of(ctx.op.run("wave", "init", name, str(build), TAG))


def poll_and_check(ctx: DemoContext, expected: Expectation, when: str) -> None:
    """Every device polls once; each must run its expected build afterwards."""
    assert ctx.broker is not None and ctx.root_file is not None
    ctx.broker.wait_published()
    fleet = ctx.devices
    state = shlex.quote(str(ctx.layout.devices)) + "/$NAME"
    line = f'wavesign-device poll --url {ctx.broker.url} --token "$DEVICE_TOKEN" --state {state}'
    if not ctx.polled_once:
        line += f" --hardware-id $HW --tag {TAG} --bootstrap-root {shlex.quote(str(ctx.root_file))}"
    ctx.narrator.command("device", f"{line}   # each of the {len(fleet.devices)} devices")
    before = dict(fleet.running)
    fleet.poll_all(ctx.broker.url, ctx.console, f"{len(fleet.devices)} devices poll")
    ctx.polled_once = True
    changed = sum(1 for name, target in fleet.running.items() if before.get(name) != target)
    ctx.narrator.say(f"{changed} device(s) installed a new target.")
    ctx.console.print(fleet.table(f"Devices {when}"))
    described = fleet.verify(expected)
    ctx.narrator.ok(f"devices as expected {when}: {described}")


def show_status(ctx: DemoContext, wave: str | None = None) -> dict[str, Any]:
    """``wavesign status`` (and ``wave status``); returns the status report (JSON)."""
    assert ctx.broker is not None and ctx.api is not None
    ctx.broker.settle()
    ctx.op.run("status")
    if wave is not None:
        ctx.op.run("wave", "status", wave)
    report: dict[str, Any] = ctx.api.get("/status")["report"]
    return report


def by_group(
    canary: int | None, us_east: int | None, rest: int | None
) -> dict[str | None, int | None]:
    return {"canary": canary, "us-east-1": us_east, None: rest}
