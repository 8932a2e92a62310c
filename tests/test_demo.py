"""``wavesign demo``: the seed story played once, for real, then checked from the outside.

One run per module (it takes ~20-30 s): ``wavesign demo --out out`` as a subprocess, in
an empty working folder, with HOME, GNUPGHOME and TMPDIR pointing at folders of the
test's own. The assertions read its output and the artifacts it left: the devices'
own records (``device.json``), the broker's SQLite database, QR frames decoded by
``zbarimg`` (an independent reader), the audit lines.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.test_guides_commands import commands_in, problems_of

WAVESIGN = str(Path(sys.executable).with_name("wavesign"))


@dataclass(frozen=True)
class DemoRun:
    returncode: int
    stdout: str
    stderr: str
    out: Path
    cwd: Path
    home: Path
    gnupghome: Path
    tmpdir: Path
    gnupg_before: dict[str, bytes]


def _demo_env(home: Path, gnupghome: Path, tmpdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAVESIGN")}
    env.update(HOME=str(home), GNUPGHOME=str(gnupghome), TMPDIR=str(tmpdir), COLUMNS="120")
    return env


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    base = tmp_path_factory.mktemp("demo")
    cwd, home, gnupghome, tmpdir = (base / n for n in ("cwd", "home", "gnupg", "tmp"))
    for folder in (cwd, home, gnupghome, tmpdir):
        folder.mkdir(mode=0o700)
    (gnupghome / "pubring.kbx").write_bytes(b"the caller's keyring, not to be touched")
    before = _files(gnupghome)
    result = subprocess.run(
        [WAVESIGN, "demo", "--out", "out"],
        cwd=cwd,
        env=_demo_env(home, gnupghome, tmpdir),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return DemoRun(
        result.returncode, result.stdout, result.stderr, cwd / "out", cwd, home, gnupghome,
        tmpdir, before,
    )  # fmt: skip


def test_the_demo_exits_0_with_every_step_verified(run: DemoRun) -> None:
    assert run.returncode == 0, run.stderr
    assert run.stderr.strip() == ""
    steps = re.findall(r"Step (\d): ", run.stdout)
    assert steps == ["1", "2", "3", "4", "5"]
    assert "Every step verified in" in run.stdout


def test_the_device_table_after_each_step(run: DemoRun) -> None:
    """The fleet table printed after each poll: (group, running target, devices)."""
    tables = re.findall(r"^Devices (after [^\n]*?)\s*\n(.*?)\n✔", run.stdout, re.S | re.M)
    seen = {}
    for title, body in tables:
        rows = set()
        for line in body.splitlines():
            cells = [c.strip() for c in line.split("│")]
            if len(cells) == 4:
                rows.add((cells[0], cells[2], int(cells[3])))
        seen[title] = rows

    def fleet(canary: int, us_east: int, rest: int) -> set[tuple[str, str, int]]:
        return {
            ("canary", f"intel-corei7-64-lmp-{canary}", 2),
            ("canary", f"raspberrypi4-64-lmp-{canary}", 2),
            ("us-east-1", f"intel-corei7-64-lmp-{us_east}", 5),
            ("us-east-1", f"raspberrypi4-64-lmp-{us_east}", 4),
            ("(no group)", f"intel-corei7-64-lmp-{rest}", 3),
            ("(no group)", f"raspberrypi4-64-lmp-{rest}", 2),
        }

    assert seen == {
        "after populate-targets": fleet(12, 12, 12),
        "after the canary rollout": fleet(42, 12, 12),
        "after the us-east-1 rollout": fleet(42, 42, 12),
        "after v2.0-update is complete": fleet(42, 42, 42),
        "after the v2.1-update canary rollout": fleet(43, 42, 42),
        "after v2.1-update is canceled": fleet(43, 42, 42),
    }


def test_each_device_recorded_the_installs_of_the_story(run: DemoRun) -> None:
    """From the devices' own state and the broker's database, not the demo's output."""
    db = sqlite3.connect(run.out / "broker" / "wavesign.db")
    try:
        rows = db.execute(
            "SELECT d.name, d.hardware_id, g.name, d.current_target FROM devices d "
            "LEFT JOIN device_groups g ON g.id = d.group_id"
        ).fetchall()
    finally:
        db.close()
    assert len(rows) == 18
    by_group: dict[str | None, int] = {}
    for name, hardware_id, group, reported in rows:
        by_group[group] = by_group.get(group, 0) + 1
        state = json.loads((run.out / "devices" / name / "device.json").read_text())
        builds = [entry["version"] for entry in state["history"]]
        expected = [12, 42, 43] if group == "canary" else [12, 42]
        assert builds == expected, name
        assert state["current_target"] == f"{hardware_id}-lmp-{expected[-1]}"
        assert reported == state["current_target"]  # the broker heard the events
        assert state["pending_events"] == []
    assert by_group == {"canary": 4, "us-east-1": 9, None: 5}


def test_status_shows_the_canary_on_the_orphan(run: DemoRun) -> None:
    statuses = run.stdout.split("operator $ wavesign status\n")
    last = statuses[-1]
    # TAG, LATEST TARGET, DEVICES, ON LATEST, ON ORPHAN, ONLINE
    assert re.search(r"^\s+production\s+42\s+18\s+14\s+4\s+18\s*$", last, re.M), last[:600]
    assert "Wave 'v2.1-update' for tag 'production' version 43 is canceled" in run.stdout
    assert re.search(r"^\s+us-east-1\s+9\s+0\s+9\s+0\s+9\s+Never \(Wave Canceled\)", last, re.M)


def test_qr_frames_and_slideshow_are_left_and_decode(run: DemoRun) -> None:
    qr = run.out / "qr"
    frames = sorted((qr / "v2.0-update-request").glob("frame-*.png"))
    assert 1 <= len(frames) <= 3  # a delta request: a few frames
    assert (qr / "v2.0-update-request.html").read_text().lstrip().lower().startswith("<!doctype")
    answer = qr / "v2.0-update-response" / "frame-01-of-01.png"
    for image in [*frames, answer]:
        decoded = subprocess.run(
            ["zbarimg", "--raw", "-q", str(image)], capture_output=True, text=True, check=False
        )
        assert decoded.returncode == 0 and decoded.stdout.strip(), image
    assert "--qr-images" in run.stdout and "frame-*.png" in run.stdout


def test_requests_and_responses_are_left_on_the_usb_folder(run: DemoRun) -> None:
    usb = run.out / "usb"
    for stem in ("root-v1", "populate-targets", "v2.1-update"):
        request = json.loads((usb / f"{stem}.request.json").read_text())
        response = json.loads((usb / f"{stem}.response.json").read_text())
        assert request and response
    assert (usb / "operator.asc").read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK")
    assert (run.out / "devices" / "1.root.json").is_file()
    script = (run.out / "commands.sh").read_text()
    assert "wavesign wave rollout v2.0-update canary" in script
    assert "wavesign-offline sign" in script


def test_the_audit_passes_on_the_evidence_export(run: DemoRun) -> None:
    evidence = run.out / "evidence"
    assert (evidence / "MANIFEST.json").is_file()
    assert (run.out / "usb" / "journal.jsonl").is_file()
    names = re.findall(r"^\s+(PASS|FAIL) ([\w-]+): ", run.stdout, re.M)
    assert names == [
        ("PASS", name)
        for name in ("manifest", "root-chain", "targets-signatures", "versions", "waves",
                     "requests", "journal", "log", "current")
    ]  # fmt: skip


def test_every_command_the_demo_prints_exists(run: DemoRun) -> None:
    lines = [
        (f"stdout:{n}", line.split("$ ", 1)[1])
        for n, line in enumerate(run.stdout.splitlines(), start=1)
        if re.match(r"^\w+\s+\$ ", line)
    ]
    shown = commands_in(lines)
    tools = {item.tool for item in shown}
    assert tools == {"wavesign", "wavesign-offline", "wavesign-device", "wavesign-audit"}
    assert len(shown) > 40
    assert problems_of(shown) == []


def test_nothing_is_written_outside_out(run: DemoRun) -> None:
    assert sorted(p.name for p in run.cwd.iterdir()) == ["out"]
    assert list(run.home.iterdir()) == []
    assert list(run.tmpdir.iterdir()) == []  # the temporary GnuPG home is gone
    assert _files(run.gnupghome) == run.gnupg_before
    # No process (a gpg-agent, the broker) outlives the demo in its folders.
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # the process ended meanwhile
        assert str(run.out) not in args and str(run.tmpdir) not in args, args


# --- refusals: fast, nothing is played ------------------------------------------------------


def _refused(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    result = subprocess.run(
        [WAVESIGN, "demo", *args], cwd=cwd, env=_demo_env(home, home, home),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: ")
    return result


def test_an_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a user's file")
    result = _refused(["--out", "taken"], tmp_path)
    assert "taken: is not a folder" in result.stderr
    assert (tmp_path / "taken").read_text() == "a user's file"


def test_an_out_below_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a user's file")
    result = _refused(["--out", "taken/demo"], tmp_path)
    assert "cannot create the folder" in result.stderr


def test_someone_elses_folder_of_the_same_name_is_refused_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "broker").mkdir(parents=True)
    (out / "broker" / "mine.txt").write_text("not the demo's")
    (out / "notes.txt").write_text("notes")
    before = _files(out)
    result = _refused(["--out", "out"], tmp_path)
    assert "out/broker exists and was not made by wavesign demo" in result.stderr
    assert _files(out) == before


def test_a_second_run_clears_only_what_the_demo_made(tmp_path: Path) -> None:
    from wavesign.online.demo_outdir import DEMO_ENTRIES, MARKER, prepare_out_dir

    out = tmp_path / "out"
    prepare_out_dir(out)
    (out / "broker").mkdir()
    (out / "broker" / "wavesign.db").write_bytes(b"an earlier run's database")
    (out / "commands.sh").write_text("# an earlier run's commands")
    (out / "notes.txt").write_text("the user's notes")
    (out / "mine").mkdir()
    (out / "mine" / "file").write_text("the user's folder")
    prepare_out_dir(out)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "mine", "notes.txt"]
    assert (out / "mine" / "file").read_text() == "the user's folder"
    assert set(DEMO_ENTRIES) >= {"broker", "appliance", "usb", "qr", "evidence", "devices"}


def test_the_fleet_check_names_each_device_off_its_expected_build() -> None:
    from wavesign.online.demo_fleet import SimDevice, check_fleet, describe_expectation

    devices = [
        SimDevice("gw-1", "u1", "t1", "intel-corei7-64", "canary"),
        SimDevice("pi-1", "u2", "t2", "raspberrypi4-64", None),
    ]
    expected = {"canary": 43, None: 42}
    good = {"gw-1": "intel-corei7-64-lmp-43", "pi-1": "raspberrypi4-64-lmp-42"}
    assert check_fleet(devices, good, expected) == []
    stale = {"gw-1": "intel-corei7-64-lmp-42", "pi-1": None}
    assert check_fleet(devices, stale, expected) == [
        "gw-1 (canary) runs intel-corei7-64-lmp-42, expected intel-corei7-64-lmp-43",
        "pi-1 ((no group)) runs nothing, expected raspberrypi4-64-lmp-42",
    ]
    assert describe_expectation(devices, expected) == (
        "canary: 1 on build 43, (no group): 1 on build 42"
    )
