"""Requests in and responses out as QR codes: PNG images and zbarimg --raw lines."""

from __future__ import annotations

import subprocess
from pathlib import Path

from wavesign.shared.bundles import SigningResponse
from wavesign.shared.qrtransport import export_qr, read_qr_images

from tests.test_offline_support import make_rig, run_cli, state_of, verify_with_tuf


def _request_pngs(tmp_path: Path, data: bytes) -> list[Path]:
    folder = tmp_path / "request-qr"
    export_qr(data, png_dir=folder, density="normal", title="request")
    frames = sorted(folder.glob("frame-*.png"))
    assert frames
    return frames


def test_qr_png_in_and_out(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    production = rig.production()
    request = rig.signed_wave(production)
    delta = request.with_payloads(
        [p.as_delta_against(production) if p.name == "wave" else p for p in request.payloads]
    )
    frames = _request_pngs(tmp_path, delta.to_bytes())
    code, out, err = run_cli(["review", "--qr-images", *map(str, reversed(frames))], rig.env)
    assert code == 0, err
    assert "board0-lmp-42" in out
    out_dir = tmp_path / "response-qr"
    code, out, err = run_cli(
        [
            "sign",
            "--qr-images",
            *map(str, frames),
            "--confirm",
            "v2.0-update",
            "--qr-png",
            str(out_dir),
        ],
        rig.env,
    )
    assert code == 0, err
    response_frames = sorted(out_dir.glob("frame-*.png"))
    assert len(response_frames) == 1  # a response fits in one QR code
    response = SigningResponse.from_bytes(read_qr_images([str(p) for p in response_frames]))
    assert response.request_sha256 == request.digest()
    key = rig.appliance.keystore.find(rig.targets_keyid)
    assert key is not None
    verify_with_tuf(
        request.payload("wave").full(), response, "wave", key.public, rig.online_targets
    )


def test_zbarimg_raw_lines_on_stdin(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    production = rig.production()
    request = rig.signed_wave(production)
    frames = _request_pngs(tmp_path, request.to_bytes())
    scanned = subprocess.run(
        ["zbarimg", "--raw", "--quiet", *map(str, frames)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert len(scanned.strip().splitlines()) == len(frames)
    response_file = tmp_path / "response.json"
    code, _, err = run_cli(
        ["sign", "--qr-stdin", "--confirm", "v2.0-update", "--out", str(response_file)],
        rig.env,
        stdin=scanned,
    )
    assert code == 0, err
    response = SigningResponse.from_bytes(response_file.read_bytes().strip())
    key = rig.appliance.keystore.find(rig.targets_keyid)
    assert key is not None
    verify_with_tuf(
        request.payload("revert").full(), response, "revert", key.public, rig.online_targets
    )


def test_response_as_html_slideshow(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    path = rig.write_request(rig.signed_wave(rig.production()))
    html = tmp_path / "response.html"
    code, _, err = run_cli(
        ["sign", str(path), "--confirm", "v2.0-update", "--qr-html", str(html)], rig.env
    )
    assert code == 0, err
    assert html.read_text().lstrip().lower().startswith("<!doctype html")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".wavesign-qr")] == []


def test_truncated_qr_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    production = rig.production()
    request = rig.signed_wave(production)  # full form: several frames
    frames = _request_pngs(tmp_path, request.to_bytes())
    assert len(frames) > 1
    out_dir = tmp_path / "response-qr"
    before = state_of(rig.appliance.home.root)
    code, _, err = run_cli(
        [
            "sign",
            "--qr-images",
            *map(str, frames[:-1]),
            "--confirm",
            "v2.0-update",
            "--qr-png",
            str(out_dir),
        ],
        rig.env,
    )
    assert code == 1
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "missing" in err
    assert state_of(rig.appliance.home.root) == before
    assert not out_dir.exists()
    # The same frames as scanner lines, one cut short, are refused too.
    scanned = subprocess.run(
        ["zbarimg", "--raw", "--quiet", *map(str, frames)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    scanned[0] = scanned[0][: len(scanned[0]) // 2]
    code, _, err = run_cli(["review", "--qr-stdin"], rig.env, stdin="\n".join(scanned) + "\n")
    assert code == 1 and err.startswith("error: ")
    assert state_of(rig.appliance.home.root) == before


def test_response_on_the_terminal(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    path = rig.write_request(rig.signed_wave(rig.production()))
    code, out, err = run_cli(
        ["sign", str(path), "--confirm", "v2.0-update", "--qr-terminal"], rig.env
    )
    assert code == 0, err
    assert "session" in out
    assert any(block in out for block in "█▀▄")
    assert "signed request req-v2.0-update" in err
