"""QR frames as real pictures: PNG files, contact sheet, slideshow, terminal, photos.

Every image here is decoded by zbar (zbar-py), never by wavesign's own drawing code.
"""

from __future__ import annotations

import base64
import io
import random
import re
from pathlib import Path

import numpy as np
import pytest
import zbar
from PIL import Image, ImageFilter
from qrcode import constants as qr_constants
from qrcode import util as qr_util
from qrcode.main import QRCode
from wavesign.shared import qrimages
from wavesign.shared.qrcodec import (
    DENSITIES,
    QRError,
    QRIncompleteError,
    QRSizeError,
    encode_frames,
)
from wavesign.shared.qrtransport import DENSITIES as DENSITY_NAMES
from wavesign.shared.qrtransport import export_qr, read_qr_images, read_qr_lines

from tests.test_qr_codec import request_bytes


def zbar_texts(image: Image.Image) -> list[str]:
    """What zbar reads in a picture (the test's own reader, not wavesign's)."""
    grey = np.ascontiguousarray(np.asarray(image.convert("L"), dtype=np.uint8))
    symbols = zbar.Scanner().scan(grey)
    return [symbol.data.decode("ascii") for symbol in symbols if symbol.type == "QR-Code"]


# --- the symbol is exactly what qrcode draws --------------------------------------


@pytest.mark.parametrize("name", ["low", "normal", "high"])
def test_symbols_equal_qrcode_output(name: str) -> None:
    chosen = DENSITIES[name]
    frames = encode_frames(random.Random(2).randbytes(6000), name)
    for text in frames[:4]:
        reference = QRCode(error_correction=getattr(qr_constants, f"ERROR_CORRECT_{chosen.ecc}"))
        reference.border = 0
        reference.add_data(qr_util.QRData(text.encode(), mode=qr_util.MODE_ALPHA_NUM))
        reference.make()
        assert reference.version <= chosen.version
        fast = qrimages.module_matrix(text, chosen.ecc, chosen.version)
        assert (fast == np.array(reference.modules, dtype=bool)).all()


@pytest.mark.parametrize("version", [1, 2, 6, 7, 10, 14, 21, 27, 33, 40])
def test_symbols_equal_qrcode_output_across_versions(version: int) -> None:
    rnd = random.Random(version)
    ecc = "LMQH"[version % 4]
    length = qrimages.alphanumeric_capacity(version, ecc) - rnd.randrange(3)
    text = "".join(rnd.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(length))
    reference = QRCode(error_correction=getattr(qr_constants, f"ERROR_CORRECT_{ecc}"), border=0)
    reference.add_data(qr_util.QRData(text.encode(), mode=qr_util.MODE_ALPHA_NUM))
    reference.make()
    assert reference.version == version
    assert (qrimages.module_matrix(text, ecc) == np.array(reference.modules, dtype=bool)).all()


def test_codewords_equal_qrcode_for_every_version_and_level() -> None:
    rnd = random.Random(4)
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for version in range(1, 41, 6):
        for ecc in "LMQH":
            capacity = qrimages.alphanumeric_capacity(version, ecc)
            for length in (1, capacity // 2, capacity):
                text = "".join(rnd.choice(alphabet) for _ in range(length))
                segment = qr_util.QRData(text.encode(), mode=qr_util.MODE_ALPHA_NUM)
                level = getattr(qr_constants, f"ERROR_CORRECT_{ecc}")
                assert qrimages.alphanumeric_codewords(text, version, ecc) == (
                    qr_util.create_data(version, level, [segment])
                )


def test_mask_penalty_equals_qrcode_lost_point() -> None:
    rng = np.random.default_rng(7)
    for size in (21, 45, 57):
        for density in (0.2, 0.5, 0.8):
            modules = rng.random((size, size)) < density
            assert qrimages.mask_penalty(modules) == qr_util.lost_point(modules.tolist())


# --- PNG files --------------------------------------------------------------------


def _finder_geometry(path: Path) -> tuple[int, int]:
    """(pixels per module, quiet-zone modules), measured on the top-left finder pattern."""
    grey = np.asarray(Image.open(path).convert("L"))
    dark_rows = np.flatnonzero((grey < 128).any(axis=1))
    first_row = grey[dark_rows[0]] < 128
    left = int(np.flatnonzero(first_row)[0])
    run = int(np.argmin(first_row[left:]))  # the finder's top edge: 7 modules
    assert run % 7 == 0
    pixels = run // 7
    assert dark_rows[0] == left  # the same margin at the top and at the left
    return pixels, left // pixels


@pytest.mark.parametrize(
    ("count", "name"), [(1, "low"), (1, "normal"), (1, "high"), (100, "normal"), (100, "high")]
)
def test_png_round_trip(tmp_path: Path, count: int, name: str) -> None:
    data = request_bytes(count)
    frames = export_qr(data, png_dir=tmp_path, density=name)
    total = len(frames)
    width = max(2, len(str(total)))
    names = sorted(path.name for path in tmp_path.glob("frame-*.png"))
    assert names == [f"frame-{i:0{width}d}-of-{total:0{width}d}.png" for i in range(1, total + 1)]
    assert (tmp_path / "contact-sheet.png").exists() == (total <= 12)
    paths = sorted(tmp_path.glob("frame-*.png"))
    for path in paths[:3]:
        pixels, quiet = _finder_geometry(path)
        assert pixels >= 4 and quiet >= 4
        assert zbar_texts(Image.open(path)) == [frames[paths.index(path)]]
    assert read_qr_images(paths) == data


def test_png_round_trip_shuffled_and_duplicated(tmp_path: Path) -> None:
    data = request_bytes(100)
    export_qr(data, png_dir=tmp_path, density="normal")
    paths = sorted(tmp_path.glob("frame-*.png")) * 2
    random.Random(3).shuffle(paths)
    progress: list[str] = []
    assert read_qr_images(paths, on_progress=lambda p: progress.append(str(p))) == data
    total = len(list(tmp_path.glob("frame-*.png")))
    assert progress == [f"frames {i}/{total}" for i in range(1, total + 1)]


def test_png_round_trip_5000_targets(tmp_path: Path) -> None:
    data = request_bytes(5000)
    frames = encode_frames(data, "high")
    paths = qrimages.write_frame_pngs(frames, DENSITIES["high"], tmp_path)
    assert len(paths) == len(frames) > 300
    assert read_qr_images(reversed(paths)) == data


def test_missing_png_is_named(tmp_path: Path) -> None:
    export_qr(request_bytes(100), png_dir=tmp_path, density="normal")
    paths = sorted(tmp_path.glob("frame-*.png"))
    total = len(paths)
    with pytest.raises(
        QRIncompleteError, match=f"read {total - 2} of {total} frames, missing 2, 5$"
    ):
        read_qr_images([p for i, p in enumerate(paths, start=1) if i not in (2, 5)])


def test_export_refuses_a_directory_with_another_session(tmp_path: Path) -> None:
    export_qr(request_bytes(100, seed=1), png_dir=tmp_path, density="normal")
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    with pytest.raises(QRError, match="already holds QR frames of another export"):
        export_qr(request_bytes(1, seed=2), png_dir=tmp_path, density="normal")
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    # The same export again is fine and changes nothing.
    export_qr(request_bytes(100, seed=1), png_dir=tmp_path, density="normal")
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


# --- contact sheet ----------------------------------------------------------------


def test_contact_sheet_pages_decode_to_the_bundle(tmp_path: Path) -> None:
    data = request_bytes(100)
    frames = export_qr(data, png_dir=tmp_path, density="normal", title="wave v2.0")
    sheets = sorted(tmp_path.glob("contact-sheet-*.png"))
    assert len(sheets) == -(-len(frames) // 12) > 1
    first_page = Image.open(sheets[0])
    assert first_page.height > first_page.width  # portrait, for printing
    assert sorted(zbar_texts(first_page)) == sorted(frames[:12])
    # One picture holds many frames: the pages alone rebuild the bundle.
    assert read_qr_images(sheets) == data


def test_contact_sheet_labels_every_code() -> None:
    frames = encode_frames(request_bytes(3), "low")
    page = qrimages.contact_sheet_pages(frames[:2], DENSITIES["low"], "title")[0]
    grey = np.asarray(page)
    code = qrimages.frame_image(frames[0], DENSITIES["low"])
    band = grey[70 + code.height : 70 + code.height + 44, : code.width]
    assert (band < 128).sum() > 50  # the "frame 1 / N" label under the first code


# --- HTML slideshow ---------------------------------------------------------------


def test_slideshow_is_self_contained_and_decodes(tmp_path: Path) -> None:
    data = request_bytes(100)
    html_path = tmp_path / "show.html"
    frames = export_qr(data, html=html_path, density="normal", title="wave <v2>")
    page = html_path.read_text()
    assert "wave &lt;v2&gt;" in page
    # Outside the inlined images, nothing that could name another resource.
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    for reference in ("//", "http:", "https:", "url(", "@import", "fetch(", "XMLHttpRequest"):
        assert reference not in text
    assert re.search(
        r"Content-Security-Policy\"\s+content=\"default-src 'none'; img-src data:", page
    )
    sources = re.findall(r'src="([^"]*)"', page)
    assert all(src.startswith("data:image/png;base64,") or src == "" for src in sources)
    for marker in ('id="counter"', 'id="pause"', 'id="speed"', "frame 1 / "):
        assert marker in page
    decoded = []
    for src in sources:
        if src:
            image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
            decoded.extend(zbar_texts(image))
    assert decoded == frames
    assert read_qr_lines(decoded) == data


# --- terminal ---------------------------------------------------------------------

_GLYPH_HALVES = {" ": (0, 0), "▀": (1, 0), "▄": (0, 1), "█": (1, 1)}


def _terminal_to_image(block: str, light_glyphs: bool = True) -> Image.Image:
    rows = []
    for line in block.splitlines():
        halves = [_GLYPH_HALVES[glyph] for glyph in line]
        rows.append([top for top, _ in halves])
        rows.append([bottom for _, bottom in halves])
    drawn = np.array(rows, dtype=bool)
    light = drawn if light_glyphs else ~drawn
    grey = np.where(light, 255, 0).astype(np.uint8)
    return Image.fromarray(np.kron(grey, np.ones((6, 6), dtype=np.uint8)))


def test_terminal_frames_decode(capsys: pytest.CaptureFixture[str]) -> None:
    data = request_bytes(1)
    frames = export_qr(data, terminal=True, density="low", title="response")
    printed = capsys.readouterr().out
    blocks = [chunk for chunk in printed.split("\n\n") if chunk.strip()]
    assert len(blocks) == len(frames)
    texts = []
    for number, chunk in enumerate(blocks, start=1):
        caption, block = chunk.split("\n", 1)
        assert caption.startswith(f"response: QR frame {number}/{len(frames)}")
        texts.extend(zbar_texts(_terminal_to_image(block)))
    assert texts == frames
    inverted = qrimages.terminal_text(frames[0], DENSITIES["low"], invert=True)
    assert zbar_texts(_terminal_to_image(inverted, light_glyphs=False)) == [frames[0]]


# --- photos and other inputs ------------------------------------------------------


def _photo(image: Image.Image, angle: float, scale: float, path: Path, seed: int) -> Path:
    """A rough photo of a screen: rotated, scaled, blurred, noisy, greyish, JPEG 70."""
    shot = image.convert("L").rotate(
        angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255
    )
    shot = shot.resize((round(shot.width * scale), round(shot.height * scale)))
    shot = shot.filter(ImageFilter.GaussianBlur(1.0))
    noise = np.random.default_rng(seed).normal(0, 8, (shot.height, shot.width))
    pixels = np.asarray(shot, dtype=np.float64) * 0.8 + 25 + noise
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, "JPEG", quality=70)
    return path


@pytest.mark.parametrize("name", ["low", "high"])
def test_photos_of_a_screen_decode(tmp_path: Path, name: str) -> None:
    data = request_bytes(12)
    frames = encode_frames(data, name)
    chosen = DENSITIES[name]
    photos = []
    for number, text in enumerate(frames):
        angle, scale = [(5, 0.7), (-5, 1.6), (3, 1.0)][number % 3]
        image = qrimages.frame_image(text, chosen)
        photos.append(_photo(image, angle, scale, tmp_path / f"IMG_{number:04d}.jpg", number))
    assert read_qr_images(photos) == data


def test_a_blurred_small_photo_needs_and_gets_a_retry(tmp_path: Path) -> None:
    text = encode_frames(random.Random(1).randbytes(1200), "high")[0]
    image = qrimages.frame_image(text, DENSITIES["high"])
    photo = _photo(image, 5, 0.7, tmp_path / "small.jpg", 1)
    assert zbar_texts(Image.open(photo)) == []  # zbar alone cannot read it
    assert qrimages.read_image_frames(photo) == [text]


def test_images_without_codes_are_named(tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.new("L", (300, 300), 255).save(blank)
    with pytest.raises(QRIncompleteError, match=r"no QR code was found in .*blank\.png"):
        read_qr_images([blank])
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    with pytest.raises(QRError, match=r"notes\.png: not an image wavesign can read"):
        read_qr_images([notes])
    with pytest.raises(QRError, match=r"missing\.png: no such image file"):
        read_qr_images([tmp_path / "missing.png"])


def test_foreign_qr_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "url.png"
    code = QRCode()
    code.add_data("https://example.test/")
    code.make_image().save(path)
    with pytest.raises(QRError, match=r"url\.png: not a wavesign QR frame"):
        read_qr_images([path])


# --- text lines (zbarcam --raw, keyboard-wedge scanners) ---------------------------


def test_lines_with_whitespace_blank_lines_and_prefix() -> None:
    data = request_bytes(30)
    frames = encode_frames(data, "low")
    lines = ["", "   "]
    for number, frame in enumerate(frames):
        lines.append(f"  {frame}\r" if number % 2 else f"QR-Code:{frame}")
        lines.append("\t")
    assert read_qr_lines(lines) == data


def test_reading_lines_stops_when_complete() -> None:
    data = request_bytes(5)
    frames = encode_frames(data, "low")

    def camera() -> object:
        yield from frames
        raise AssertionError("read past the end of the session")

    assert read_qr_lines(camera()) == data  # type: ignore[arg-type]


def test_stream_with_an_endless_line_is_cut_off() -> None:
    stream = io.StringIO("WS1" + "A" * 1_000_000 + "\n")
    with pytest.raises(QRSizeError, match="line 1: longer than any QR frame"):
        read_qr_lines(stream)


def test_lines_from_a_text_stream() -> None:
    data = request_bytes(10)
    frames = encode_frames(data, "low")
    assert read_qr_lines(io.StringIO("\n".join(reversed(frames)) + "\n")) == data


def test_densities_and_an_unknown_density(tmp_path: Path) -> None:
    assert DENSITY_NAMES == ("low", "normal", "high")
    with pytest.raises(QRError, match=r"unknown QR density 'ultra' \(choose low\|normal\|high\)"):
        export_qr(b"{}", png_dir=tmp_path / "out", density="ultra")
    assert not (tmp_path / "out").exists()
