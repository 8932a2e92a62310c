"""``wavesign demo``: the seed story, played for real, as a tutorial.

Everything is real: an embedded broker on SQLite (the app ``wavesign server run``
serves), an appliance home driven by ``wavesign-offline`` subprocesses, GnuPG keys for
the operator and the officer, QR frames written as PNG and read back through zbar, a
fleet of device agents verifying with python-tuf's ngclient, and ``wavesign-audit`` over
the evidence export. Each step prints the commands a person would type, who types
them, and checks what the devices run afterwards; a check that fails stops the demo
with ``error: step N (...): ...``.

The steps (the seed's story, ``production-targets.rst``):

1. the root ceremony, and a simulated fleet registers;
2. ``populate-targets`` 12, completed: every device installs build 12;
3. ``v2.0-update`` 42 (signed over QR): rollout to canary, status, rollout to
   us-east-1, complete;
4. ``v2.1-update`` 43, rolled out to canary and canceled: the canary devices keep the
   orphan build 43 and ``status`` counts them ON ORPHAN;
5. the auditor: evidence export, the appliance journal, ``wavesign-audit verify``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from wavesign.shared.errors import WavesignError
from wavesign.shared.fileio import atomic_write

from .client import ApiClient
from .demo_actors import (
    DemoError,
    GpgIdentity,
    Narrator,
    OfficerShell,
    OperatorShell,
    export_public_key,
    find_tool,
    gnupg_identities,
    kill_agents,
)
from .demo_broker import EmbeddedBroker
from .demo_fleet import TAG, Fleet, SimDevice
from .demo_moves import (
    FLEET,
    DemoContext,
    by_group,
    ci_build,
    poll_and_check,
    request_id_of,
    show_status,
    sign_by_qr,
    sign_by_usb,
    wave_init,
)
from .demo_outdir import DemoLayout, prepare_out_dir

__all__ = ["STEPS", "run_demo"]

OPERATOR_UID = "Olivia Operator <operator@demo.example>"
OFFICER_UID = "Sam Officer <officer@demo.example>"
#: The appliance's key passphrase. The demo's keys are throwaway; an officer types a
#: real passphrase at the prompt instead of setting WAVESIGN_OFFLINE_PASSPHRASE.
DEMO_PASSPHRASE = "wavesign demo: throwaway keys"


# --- the five steps ---------------------------------------------------------------------------


def step_root_ceremony(ctx: DemoContext) -> None:
    n, layout = ctx.narrator, ctx.layout
    n.say(
        "Two people, two machines. The operator runs the online broker (`wavesign`); the "
        "security officer runs an air-gapped appliance (`wavesign-offline`). Each has a "
        "GnuPG key: the operator signs the requests, the officer attests the responses."
    )
    n.command("operator", f"gpg --quick-gen-key {shlex.quote(OPERATOR_UID)} ed25519 sign 1y")
    n.command("officer", f"gpg --quick-gen-key {shlex.quote(OFFICER_UID)} ed25519 sign 1y")
    operator_id, officer_id = ctx.stack.enter_context(gnupg_identities(OPERATOR_UID, OFFICER_UID))
    operator_key = layout.usb / "operator.asc"
    layout.usb.mkdir()
    n.command("operator", f"gpg --armor --export {operator_id.fingerprint} > {operator_key}")
    atomic_write(operator_key, export_public_key(operator_id))

    officer_key = layout.usb / "officer.asc"
    n.command("officer", f"gpg --armor --export {officer_id.fingerprint} > {officer_key}")
    atomic_write(officer_key, export_public_key(officer_id))

    _start_broker(ctx, operator_id)
    n.say("The broker learns whose GnuPG signatures to accept on requests and responses:")
    ctx.op.run("evidence", "add-gpg-key", "--role", "operator", str(operator_key))
    ctx.op.run("evidence", "add-gpg-key", "--role", "officer", str(officer_key))
    _set_up_appliance(ctx, officer_id, operator_key)

    n.say("The root ceremony: the broker proposes its online keys; the appliance adds its "
          "root and offline targets keys and signs root v1.")  # fmt: skip
    request_id = request_id_of(ctx.op.run("root", "propose"))
    sign_by_usb(ctx, request_id, "root-v1", "root-v1")
    ctx.root_file = layout.devices / "1.root.json"
    layout.devices.mkdir()
    root_json = ctx.op.run(
        "root", "show", "--version", "1", "--json",
        display=f"wavesign root show --version 1 --json > {ctx.root_file}", show_output=False,
    )  # fmt: skip
    atomic_write(ctx.root_file, root_json.encode())
    n.say("That root is flashed into every device's factory image: devices pin it.")
    _register_fleet(ctx)


def _start_broker(ctx: DemoContext, operator_id: GpgIdentity) -> None:
    n, layout = ctx.narrator, ctx.layout
    ctx.operator = OperatorShell(
        n,
        {
            "GNUPGHOME": str(operator_id.home),
            "WAVESIGN_OPERATOR_GPG_KEY": operator_id.fingerprint,
            "WAVESIGN_URL": None,
            "WAVESIGN_TOKEN": None,
            "WAVESIGN_DATA": None,
        },
    )
    out = ctx.op.run(
        "server", "init", "--data", str(layout.broker), "--factory", "demo", show_output=False
    )
    token = (layout.broker / "admin.token").read_text().strip()
    n.output(out.replace(token, token[:8] + "… (printed once)"))
    ctx.broker = ctx.stack.enter_context(EmbeddedBroker(layout.broker))
    port = ctx.broker.url.rsplit(":", 1)[1]
    n.command("operator", f"wavesign server run --data {layout.broker} --port {port} &")
    n.say(f"(the demo serves that same app in-process, at {ctx.broker.url})")
    n.command("operator", f"export WAVESIGN_URL={ctx.broker.url}")
    n.command("operator", f"export WAVESIGN_TOKEN=$(cat {layout.broker / 'admin.token'})")
    n.command("operator", f"export WAVESIGN_OPERATOR_GPG_KEY={operator_id.fingerprint}")
    ctx.op.env.update({"WAVESIGN_URL": ctx.broker.url, "WAVESIGN_TOKEN": token})
    ctx.api = ApiClient(ctx.broker.url, token)
    ctx.stack.callback(ctx.api.close)


def _set_up_appliance(ctx: DemoContext, officer_id: GpgIdentity, operator_key: Path) -> None:
    n, layout = ctx.narrator, ctx.layout
    env = {name: value for name, value in os.environ.items() if not name.startswith("WAVESIGN")}
    env.update(
        GNUPGHOME=str(officer_id.home),
        WAVESIGN_OFFLINE_HOME=str(layout.appliance),
        WAVESIGN_OFFLINE_PASSPHRASE=DEMO_PASSPHRASE,
    )
    ctx.officer = OfficerShell(n, env)
    # The appliance's keyring of trusted operators starts a gpg-agent of its own.
    ctx.stack.callback(_kill_agents_under, layout.appliance)
    n.say("On the appliance (the operator's public key came over on the USB stick):")
    n.command("officer", f"export WAVESIGN_OFFLINE_HOME={layout.appliance}")
    n.say("(the demo passes the key passphrase in WAVESIGN_OFFLINE_PASSPHRASE; an officer "
          "types it when asked)")  # fmt: skip
    ctx.off.run("init", "--officer-gpg-key", officer_id.fingerprint)
    ctx.off.run("keys", "generate", "--role", "root")
    ctx.off.run("keys", "generate", "--role", "targets")
    ctx.off.run("operators", "add", str(operator_key))


def _kill_agents_under(root: Path) -> None:
    for socket_file in root.rglob("S.gpg-agent"):
        kill_agents(socket_file.parent)


def _register_fleet(ctx: DemoContext) -> None:
    assert ctx.api is not None and ctx.root_file is not None
    ctx.narrator.say("A fleet of simulated devices registers (each gets a device token):")
    csv_files = []
    for hardware_id, prefix, count, groups in FLEET:
        tokens = ctx.layout.devices / f"{prefix}-tokens.csv"
        ctx.op.run(
            "fleet", "simulate", "--devices", str(count), "--groups", groups, "--tag", TAG,
            "--hardware-id", hardware_id, "--prefix", prefix, "--tokens-out", str(tokens),
            "--polls", "0",
        )  # fmt: skip
        csv_files.append((tokens, hardware_id))
    groups_of = {d["uuid"]: d.get("group") for d in ctx.api.get("/devices", tag=TAG)}
    devices: list[SimDevice] = []
    for tokens, hardware_id in csv_files:
        devices += Fleet.read_tokens(tokens, hardware_id, groups_of)
    ctx.fleet = Fleet(devices, ctx.root_file, ctx.layout.devices)


def step_populate(ctx: DemoContext) -> None:
    ctx.narrator.say("CI build 12 exists; the first production targets for tag "
                     f"`{TAG}` come from a dummy wave (fioctl's recipe):")  # fmt: skip
    ci_build(ctx, 12)
    request_id = wave_init(ctx, "populate-targets", 12)
    sign_by_usb(ctx, request_id, "populate-targets", "populate-targets")
    ctx.op.run("wave", "complete", "populate-targets")
    poll_and_check(ctx, by_group(12, 12, 12), "after populate-targets")
    show_status(ctx)


def step_update(ctx: DemoContext) -> None:
    n = ctx.narrator
    n.say("CI build 42 is ready for production. This time the request crosses the air gap "
          "as QR codes.")  # fmt: skip
    ci_build(ctx, 42)
    request_id = wave_init(ctx, "v2.0-update", 42)
    sign_by_qr(ctx, request_id, "v2.0-update", "v2.0-update")
    ctx.op.run("wave", "rollout", "v2.0-update", "canary")
    poll_and_check(ctx, by_group(42, 12, 12), "after the canary rollout")
    show_status(ctx, "v2.0-update")
    n.say("The canary is healthy: on to us-east-1.")
    ctx.op.run("wave", "rollout", "v2.0-update", "us-east-1")
    poll_and_check(ctx, by_group(42, 42, 12), "after the us-east-1 rollout")
    n.say("Everyone else gets build 42 when the wave completes:")
    ctx.op.run("wave", "complete", "v2.0-update")
    poll_and_check(ctx, by_group(42, 42, 42), "after v2.0-update is complete")
    show_status(ctx)


def step_cancel(ctx: DemoContext) -> None:
    n = ctx.narrator
    n.say(
        "A second wave, build 43, reaches the canary and goes badly: the operator cancels "
        "it. No key ceremony is needed: the officer signed the revert payload with it."
    )
    ci_build(ctx, 43)
    request_id = wave_init(ctx, "v2.1-update", 43)
    sign_by_usb(ctx, request_id, "v2.1-update", "v2.1-update")
    ctx.op.run("wave", "rollout", "v2.1-update", "canary")
    poll_and_check(ctx, by_group(43, 42, 42), "after the v2.1-update canary rollout")
    ctx.op.run("wave", "cancel", "v2.1-update")
    n.say("Devices that installed 43 keep it (TUF clients never downgrade); nobody else gets it:")
    poll_and_check(ctx, by_group(43, 42, 42), "after v2.1-update is canceled")
    report = show_status(ctx, "v2.1-update")
    canary = sum(1 for device in ctx.devices.devices if device.group == "canary")
    orphans = sum(row["on_orphan"] for row in report["tags"] if row["tag"] == TAG)
    if orphans != canary:
        raise DemoError(f"status shows {orphans} device(s) ON ORPHAN, expected the {canary} canary")
    n.ok(f"status shows the {canary} canary devices ON ORPHAN (running the canceled build 43)")


def step_audit(ctx: DemoContext) -> None:
    n, layout = ctx.narrator, ctx.layout
    assert ctx.root_file is not None
    n.say("The auditor gets a read-only token and the broker's evidence export, the officer "
          "exports the signed journal, and everything is verified offline:")  # fmt: skip
    out = ctx.op.run(
        "tokens", "create", "--role", "auditor", "--name", "demo-auditor", show_output=False
    )
    auditor_token = out.strip().splitlines()[-1]
    n.output(f"token demo-auditor (auditor):\n{auditor_token[:8]}… (printed once)")
    ctx.op.run(
        "evidence", "export", "--out", str(layout.evidence),
        display=f"WAVESIGN_TOKEN=$AUDITOR_TOKEN wavesign evidence export --out {layout.evidence}",
        env={"WAVESIGN_TOKEN": auditor_token}, who="auditor",
    )  # fmt: skip
    journal = layout.usb / "journal.jsonl"
    ctx.off.run("journal", "verify")
    ctx.off.run("journal", "export", "--out", str(journal))
    args = [str(layout.evidence), "--offline-journal", str(journal),
            "--trusted-root", str(ctx.root_file)]  # fmt: skip
    n.command("auditor", "wavesign-audit verify " + shlex.join(args))
    proc = subprocess.run(
        [find_tool("wavesign-audit"), "verify", *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300, check=False,
    )  # fmt: skip
    n.output(proc.stdout + proc.stderr)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    failed = [line for line in lines if not line.startswith("PASS ")]
    if proc.returncode != 0 or not lines or failed:
        detail = failed[0] if failed else (proc.stderr.strip() or f"exit {proc.returncode}")
        raise DemoError(f"wavesign-audit verify: {detail}")
    n.ok(f"wavesign-audit verify: all {len(lines)} checks PASS")


Step = tuple[int, str, Callable[[DemoContext], None]]
STEPS: tuple[Step, ...] = (
    (1, "root ceremony", step_root_ceremony),
    (2, "populate-targets 12", step_populate),
    (3, "v2.0-update 42", step_update),
    (4, "v2.1-update 43, canceled", step_cancel),
    (5, "audit", step_audit),
)


def _artifacts(layout: DemoLayout) -> list[tuple[str, Path]]:
    return [
        ("broker (SQLite, online keys)", layout.broker),
        ("appliance home (offline keys, journal)", layout.appliance),
        ("CI targets files", layout.ci),
        ("requests, responses, journal export (USB)", layout.usb),
        ("QR frames (PNG) and HTML slideshow", layout.qr),
        ("device state folders (ngclient metadata)", layout.devices),
        ("evidence export", layout.evidence),
        ("every command, in order", layout.commands),
    ]


def run_demo(out: Path, console: Console) -> None:
    """Play the story into ``out``; raise :class:`DemoError` naming the failed step."""
    started = time.monotonic()
    layout = prepare_out_dir(out)
    narrator = Narrator(console)
    console.print(f"[bold]wavesign demo[/]: the seed story, for real, into {escape(str(out))}/")
    with contextlib.ExitStack() as stack:
        ctx = DemoContext(layout, narrator, console, stack)
        try:
            for number, title, play in STEPS:
                narrator.step(number, title)
                step_started = time.monotonic()
                try:
                    play(ctx)
                except WavesignError as exc:
                    raise DemoError(f"step {number} ({title}): {exc}") from None
                except OSError as exc:
                    where = f" ({exc.filename})" if exc.filename else ""
                    raise DemoError(
                        f"step {number} ({title}): {exc.strerror or exc}{where}"
                    ) from None
                elapsed = time.monotonic() - step_started
                narrator.ok(f"step {number} verified in {elapsed:.1f} s")
        finally:
            with contextlib.suppress(OSError):  # never hide why the demo stopped
                script = "\n".join(narrator.script) + "\n"
                atomic_write(layout.commands, script.encode(), 0o755)
    console.print()
    console.rule("[bold green]Done")
    elapsed = time.monotonic() - started
    console.print(f"Every step verified in {elapsed:.0f} s. Left in {escape(str(out))}/:")
    for what, path in _artifacts(layout):
        if path.exists():
            console.print(f"  {escape(str(path))}  [dim]{what}[/]", soft_wrap=True)
