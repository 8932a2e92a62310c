"""Other programs read what wavesign writes, and wavesign reads what they write.

Reader: Debian's ``zbarimg`` (zbar-tools). Writer: Debian's ``qrencode``. Neither
shares code with wavesign's drawing.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from wavesign.shared.qrcodec import encode_frames
from wavesign.shared.qrtransport import export_qr, read_qr_images, read_qr_lines

from tests.test_qr_codec import request_bytes


def zbarimg(paths: list[Path]) -> list[str]:
    result = subprocess.run(
        ["zbarimg", "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable", *map(str, paths)],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.splitlines()


def test_zbarimg_reads_every_frame_wavesign_writes(tmp_path: Path) -> None:
    for name in ("low", "normal", "high"):
        data = request_bytes(100 if name != "low" else 8)
        folder = tmp_path / name
        frames = export_qr(data, png_dir=folder, density=name)
        paths = sorted(folder.glob("frame-*.png"))
        lines = zbarimg(paths)
        assert lines == frames  # one line per file, in file (= frame) order
        shuffled = lines * 2
        random.Random(1).shuffle(shuffled)
        assert read_qr_lines(shuffled) == data


def test_zbarimg_reads_the_contact_sheet(tmp_path: Path) -> None:
    data = request_bytes(20)
    frames = export_qr(data, png_dir=tmp_path, density="normal")
    assert len(frames) <= 12
    lines = zbarimg([tmp_path / "contact-sheet.png"])
    assert sorted(lines) == sorted(frames)
    assert read_qr_lines(lines) == data


def test_frames_drawn_by_qrencode_decode(tmp_path: Path) -> None:
    for name in ("low", "normal", "high"):
        data = request_bytes(60)
        frames = encode_frames(data, name)
        paths = []
        for number, frame in enumerate(frames, start=1):
            path = tmp_path / f"{name}-{number}.png"
            subprocess.run(["qrencode", "-o", str(path), "-l", "L", frame], check=True)
            paths.append(path)
        assert read_qr_images(paths[::-1]) == data
