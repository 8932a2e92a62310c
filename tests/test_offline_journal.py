"""The journal's hash chain: edits, removals and reorders are caught and located."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from wavesign.shared.canonical import canonical_bytes, digest_bytes
from wavesign.shared.journal_format import GENESIS, verify_lines

from tests.test_offline_support import Rig, make_rig, run_cli


def _rig_with_three_lines(tmp_path: Path, officer: bool = False) -> Rig:
    rig = make_rig(tmp_path, officer=officer)
    path = rig.write_request(rig.signed_wave(rig.production()))
    for number in range(3):
        extra = ["--again"] if number else []
        code, _, err = run_cli(
            [
                "sign",
                str(path),
                "--confirm",
                "v2.0-update",
                "--out",
                str(tmp_path / f"r{number}"),
                *extra,
            ],
            rig.env,
        )
        assert code == 0, err
    return rig


def _lines(rig: Rig) -> list[bytes]:
    return rig.appliance.home.journal_path.read_bytes().splitlines()


def _write(rig: Rig, lines: list[bytes]) -> None:
    rig.appliance.home.journal_path.write_bytes(b"".join(line + b"\n" for line in lines))


def _verify(rig: Rig) -> tuple[int, str]:
    code, _, err = run_cli(["journal", "verify"], rig.env)
    return code, err


def test_intact_journal_verifies_and_chains_by_hand(tmp_path: Path) -> None:
    rig = _rig_with_three_lines(tmp_path)
    code, out, err = run_cli(["journal", "verify"], rig.env)
    assert code == 0, err
    assert "3 line(s)" in out
    lines = _lines(rig)
    # Recompute the chain independently of the journal module.
    prev = GENESIS
    for number, line in enumerate(lines, start=1):
        entry = json.loads(line)
        assert canonical_bytes(entry) == line
        assert entry["index"] == number and entry["prev"] == prev
        for field in ("time", "request_sha256", "payloads", "keyids", "confirmation"):
            assert entry[field]
        assert entry["response_sha256"] != entry["request_sha256"]
        prev = digest_bytes(line)
    code, out, _ = run_cli(["journal", "show", "--json"], rig.env)
    shown = json.loads(out)
    assert [e["index"] for e in shown] == [1, 2, 3] and shown[-1]["hash"] == prev


def test_edited_line_is_named(tmp_path: Path) -> None:
    rig = _rig_with_three_lines(tmp_path)
    lines = _lines(rig)
    entry = json.loads(lines[1])
    entry["confirmation"] = "something else"
    lines[1] = canonical_bytes(entry)  # still canonical: only the chain can tell
    _write(rig, lines)
    code, err = _verify(rig)
    assert code == 1 and err.startswith("error: journal broken at line 2:")
    assert "line 2 was changed" in err


def test_hand_reformatted_line_is_named(tmp_path: Path) -> None:
    rig = _rig_with_three_lines(tmp_path)
    lines = _lines(rig)
    lines[0] = json.dumps(json.loads(lines[0]), indent=None).encode()
    _write(rig, lines)
    code, err = _verify(rig)
    assert code == 1 and "line 1 is not in canonical form" in err


def test_removed_line_is_named(tmp_path: Path) -> None:
    rig = _rig_with_three_lines(tmp_path)
    lines = _lines(rig)
    _write(rig, [lines[0], lines[2]])
    code, err = _verify(rig)
    assert code == 1 and "broken at line 2" in err and "removed" in err


def test_reordered_lines_are_named(tmp_path: Path) -> None:
    rig = _rig_with_three_lines(tmp_path)
    lines = _lines(rig)
    _write(rig, [lines[0], lines[2], lines[1]])
    code, err = _verify(rig)
    assert code == 1 and "broken at line 2" in err


def test_cut_off_last_line_is_caught_by_the_head(tmp_path: Path) -> None:
    rig = _rig_with_three_lines(tmp_path)
    _write(rig, _lines(rig)[:2])
    code, err = _verify(rig)
    assert code == 1 and "broken at line 3" in err and "removed" in err


def test_edited_last_line_is_caught_by_the_head(tmp_path: Path) -> None:
    rig = _rig_with_three_lines(tmp_path)
    lines = _lines(rig)
    entry = json.loads(lines[2])
    entry["time"] = "2020-01-01T00:00:00Z"
    lines[2] = canonical_bytes(entry)
    _write(rig, lines)
    code, err = _verify(rig)
    assert code == 1 and "broken at line 3" in err


def test_broken_journal_stops_signing(tmp_path: Path) -> None:
    rig = _rig_with_three_lines(tmp_path)
    lines = _lines(rig)
    _write(rig, [lines[1], lines[0], lines[2]])
    path = rig.root / "request.json"
    code, _, err = run_cli(
        ["sign", str(path), "--confirm", "v2.0-update", "--again", "--out", str(tmp_path / "x")],
        rig.env,
    )
    assert code == 1 and "journal is broken" in err
    assert not (tmp_path / "x").exists()


def test_export_is_signed_by_the_officer(tmp_path: Path) -> None:
    rig = _rig_with_three_lines(tmp_path, officer=True)
    out = tmp_path / "export" / "journal.jsonl"
    out.parent.mkdir()
    code, _, err = run_cli(["journal", "export", "--out", str(out)], rig.env)
    assert code == 0, err
    assert out.read_bytes() == rig.appliance.home.journal_path.read_bytes()
    signature = base64.b64decode(out.with_name("journal.jsonl.sig").read_text().strip())
    sig_file = tmp_path / "journal.sig.bin"
    sig_file.write_bytes(signature)
    verify_home = tmp_path / "auditor.gnupg"
    verify_home.mkdir(mode=0o700)
    env = {"GNUPGHOME": str(verify_home), "PATH": "/usr/bin:/bin"}
    subprocess.run(
        ["gpg", "--batch", "--import", str(out.with_name("journal.jsonl.officer.asc"))],
        env=env,
        check=True,
        capture_output=True,
    )
    status = subprocess.run(
        ["gpg", "--batch", "--status-fd", "1", "--verify", str(sig_file), str(out)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert f"VALIDSIG {rig.officer_fpr}" in status.stdout


@pytest.mark.parametrize("count", [0, 1, 5])
def test_verify_lines_accepts_any_chain_it_builds(count: int) -> None:
    prev, lines = GENESIS, []
    for index in range(1, count + 1):
        entry = {
            "index": index,
            "time": "2026-01-01T00:00:00Z",
            "kind": "sign",
            "request_id": f"r{index}",
            "request_sha256": "a" * 64,
            "purpose": {"kind": "renew", "tag": "t"},
            "tag": "t",
            "payloads": [
                {"name": "renew", "role": "targets", "sha256": "b" * 64, "version": index}
            ],
            "keyids": ["c" * 64],
            "confirmation": "renew-t",
            "response_sha256": "d" * 64,
            "prev": prev,
        }
        line = canonical_bytes(entry)
        lines.append(line)
        prev = digest_bytes(line)
    result = verify_lines(lines, (count, prev) if count else None)
    assert result.ok and result.lines == count and result.head == prev
