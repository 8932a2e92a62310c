"""QR frames as pictures: PNG files, a contact sheet, an HTML slideshow, the terminal.

Drawing: the symbol is the one the qrcode library makes for the frame as a single
alphanumeric segment at the smallest version that holds it, with qrcode's own
choice of mask, and Pillow draws the pixels. qrcode does all of it in pure Python
per module, which takes about 0.15 s for a version-27 frame; a full export can be
hundreds of frames. So the three hot steps are done here with qrcode's tables
(Reed-Solomon blocks, generator polynomials, function patterns, mask formulas):
codewords as an integer shift register, data placement as a cached index walk, and
the eight-mask penalty with numpy. Tests hold the result module for module equal
to ``qrcode.QRCode.make()`` across versions and levels.

Reading: zbar (zbar-py) on a grey-scale copy of the image, with a few gentle
retries (contrast, scale, sharpening, threshold) for photos of a screen or paper.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import qrcode
import zbar
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps
from qrcode import LUT as qr_lut
from qrcode import base as qr_base
from qrcode import constants as qr_constants
from qrcode import util as qr_util

from .fileio import atomic_write
from .qrcodec import Density, Frame, QRError, QRSizeError

__all__ = [
    "QUIET_ZONE",
    "contact_sheet_name",
    "contact_sheet_pages",
    "frame_filename",
    "frame_image",
    "frame_pngs",
    "module_matrix",
    "png_bytes",
    "read_image_frames",
    "slideshow_html",
    "terminal_text",
    "write_frame_pngs",
]

#: Light modules around the symbol, as ISO/IEC 18004 asks for.
QUIET_ZONE = 4
#: Smallest pixels per module of a PNG (scanners need at least 2).
MIN_MODULE_PIXELS = 4
#: PNG frames are drawn about this wide, never below MIN_MODULE_PIXELS per module.
TARGET_IMAGE_PIXELS = 600
#: Frames per contact-sheet page (3 columns, 4 rows: an A4 or Letter page).
SHEET_COLUMNS, SHEET_ROWS = 3, 4
#: An image larger than this is refused before it is decoded.
MAX_IMAGE_PIXELS = 64_000_000

_ECC_LEVELS = {
    "L": qr_constants.ERROR_CORRECT_L,
    "M": qr_constants.ERROR_CORRECT_M,
    "Q": qr_constants.ERROR_CORRECT_Q,
    "H": qr_constants.ERROR_CORRECT_H,
}
# Mask penalty rule 3: a finder-like run 1:1:3:1:1 with four light modules beside it.
_FINDER_LIKE = np.array(
    [[1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 1, 1, 1, 0, 1]], dtype=bool
)


# --- drawing ------------------------------------------------------------------------


def _function_patterns(version: int, ecc: int, mask: int, test: bool) -> list[list[bool | None]]:
    """The modules qrcode draws before the data: None where data goes."""
    probe = qrcode.QRCode(version=version, error_correction=ecc, border=0)
    count = version * 4 + 17
    probe.modules_count = count
    probe.modules = [[None] * count for _ in range(count)]
    probe.setup_position_probe_pattern(0, 0)
    probe.setup_position_probe_pattern(count - 7, 0)
    probe.setup_position_probe_pattern(0, count - 7)
    probe.setup_position_adjust_pattern()
    probe.setup_timing_pattern()
    probe.setup_type_info(test, mask)
    if version >= 7:
        probe.setup_type_number(test)
    return probe.modules


@functools.cache
def _layout(version: int) -> tuple[np.ndarray, np.ndarray]:
    """The data region of a version, and the function modules as qrcode scores them.

    qrcode scores masks on ``makeImpl(test=True, mask)``: function patterns drawn,
    format and version information left light. The same probe is built here.
    """
    modules = _function_patterns(version, qr_constants.ERROR_CORRECT_L, 0, test=True)
    region = np.array([[cell is None for cell in row] for row in modules])
    function = np.array([[bool(cell) for cell in row] for row in modules])
    return region, function


@functools.cache
def _placement(version: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the data modules in bit order.

    The walk of ``qrcode.QRCode.map_data``: two-module-wide columns from the right,
    upwards then downwards, skipping the vertical timing pattern.
    """
    region, _ = _layout(version)
    count = region.shape[0]
    rows: list[int] = []
    cols: list[int] = []
    row, step = count - 1, -1
    for right in range(count - 1, 0, -2):
        column = right - 1 if right <= 6 else right
        while True:
            for col in (column, column - 1):
                if region[row, col]:
                    rows.append(row)
                    cols.append(col)
            row += step
            if row < 0 or row >= count:
                row -= step
                step = -step
                break
    return np.array(rows), np.array(cols)


@functools.cache
def _final_function_modules(version: int, ecc: str, mask: int) -> np.ndarray:
    """Function modules with the real format and version information of a mask."""
    modules = _function_patterns(version, _ECC_LEVELS[ecc], mask, test=False)
    return np.array([[bool(cell) for cell in row] for row in modules])


@functools.cache
def _mask_patterns(version: int) -> np.ndarray:
    """The eight QR mask patterns of a version (True where a data module is flipped)."""
    count = version * 4 + 17
    rows, cols = np.indices((count, count))
    return np.stack(
        [
            np.vectorize(qr_util.mask_func(pattern), otypes=[bool])(rows, cols)
            for pattern in range(8)
        ]
    )


def _run_penalty(lines: np.ndarray) -> int:
    """Rule 1: every run of 5 or more same-coloured modules costs (length - 2)."""
    count = lines.shape[1]
    # A separator value between lines keeps runs from continuing onto the next line.
    flat = np.hstack([lines.astype(np.int8), np.full((lines.shape[0], 1), 2, np.int8)]).ravel()
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    lengths = np.diff(np.append(starts, flat.size))
    lengths = lengths[(flat[starts] != 2) & (lengths >= 5) & (lengths <= count)]
    return int((lengths - 2).sum())


def mask_penalty(modules: np.ndarray) -> int:
    """The ISO/IEC 18004 mask penalty, computed exactly as ``qrcode.util.lost_point``."""
    count = modules.shape[0]
    penalty = _run_penalty(modules) + _run_penalty(modules.T)
    top, bottom = modules[:-1], modules[1:]
    same_block = (
        (top[:, :-1] == top[:, 1:])
        & (top[:, :-1] == bottom[:, :-1])
        & (top[:, :-1] == bottom[:, 1:])
    )
    penalty += 3 * int(same_block.sum())
    span = count - 10
    for lines in (modules, modules.T):
        for pattern in _FINDER_LIKE:
            match = np.ones((count, span), dtype=bool)
            for offset, dark in enumerate(pattern):
                window = lines[:, offset : offset + span]
                match &= window if dark else ~window
            penalty += 40 * int(match.sum())
    percent = float(modules.sum()) / (count**2)
    penalty += int(abs(percent * 100 - 50) / 5) * 10
    return penalty


def alphanumeric_bits(version: int, length: int) -> int:
    """Bits of one alphanumeric segment of ``length`` characters (mode, count, data)."""
    count_bits = qr_util.length_in_bits(qr_util.MODE_ALPHA_NUM, version)
    return 4 + count_bits + 11 * (length // 2) + 6 * (length % 2)


def alphanumeric_capacity(version: int, ecc: str) -> int:
    """Characters one alphanumeric segment may hold at a version and ECC level."""
    data_bits = qr_util.BIT_LIMIT_TABLE[_ECC_LEVELS[ecc]][version]
    length = 0
    while alphanumeric_bits(version, length + 1) <= data_bits:
        length += 1
    return length


def smallest_version(length: int, ecc: str) -> int:
    """The smallest QR version holding ``length`` alphanumeric characters.

    What ``QRCode.best_fit`` computes, without writing the data once more to count it.
    """
    limits = qr_util.BIT_LIMIT_TABLE[_ECC_LEVELS[ecc]]
    for version in range(1, 41):
        if alphanumeric_bits(version, length) <= limits[version]:
            return version
    raise QRSizeError(f"{length} characters do not fit in any QR code")


_ALPHANUMERIC_VALUES = {char: value for value, char in enumerate(qr_util.ALPHA_NUM.decode())}


@functools.cache
def _ec_table(ec_count: int) -> tuple[int, ...]:
    """For each byte f, f times the Reed-Solomon generator (without its leading 1),
    as one big-endian integer of ``ec_count`` bytes."""
    exp, log = qr_base.EXP_TABLE, qr_base.LOG_TABLE
    generator = [log[c] for c in qr_lut.rsPoly_LUT[ec_count][1:]]
    table = [0]
    for factor in range(1, 256):
        product = bytes(exp[(log[factor] + g) % 255] for g in generator)
        table.append(int.from_bytes(product, "big"))
    return tuple(table)


def _ec_codewords(data: list[int], ec_count: int) -> list[int]:
    """The Reed-Solomon remainder of one block: a shift register held in one integer."""
    table = _ec_table(ec_count)
    top = 8 * (ec_count - 1)
    mask = (1 << (8 * ec_count)) - 1
    remainder = 0
    for byte in data:
        remainder = ((remainder << 8) & mask) ^ table[byte ^ (remainder >> top)]
    return list(remainder.to_bytes(ec_count, "big"))


def alphanumeric_codewords(text: str, version: int, ecc: str) -> list[int]:
    """The final codeword sequence of one alphanumeric segment (data, then error correction).

    Equal to ``qrcode.util.create_data`` for the same segment (a test holds them
    equal); qrcode's Reed-Solomon arithmetic on Python lists is several times slower,
    which matters for sessions of hundreds of frames.
    """
    blocks = qr_base.rs_blocks(version, _ECC_LEVELS[ecc])
    data_bytes = sum(block.data_count for block in blocks)
    bits = [f"{qr_util.MODE_ALPHA_NUM:04b}"]
    bits.append(f"{len(text):0{qr_util.length_in_bits(qr_util.MODE_ALPHA_NUM, version)}b}")
    values = [_ALPHANUMERIC_VALUES[char] for char in text]
    bits.extend(f"{45 * a + b:011b}" for a, b in zip(values[0::2], values[1::2], strict=False))
    if len(values) % 2:
        bits.append(f"{values[-1]:06b}")
    stream = "".join(bits)
    stream += "0" * min(4, data_bytes * 8 - len(stream))  # terminator
    stream += "0" * (-len(stream) % 8)
    data = list(int(stream, 2).to_bytes(len(stream) // 8, "big")) if stream else []
    data += [qr_util.PAD0, qr_util.PAD1] * ((data_bytes - len(data)) // 2 + 1)
    data = data[:data_bytes]
    data_blocks, ec_blocks = [], []
    offset = 0
    for block in blocks:
        chunk = data[offset : offset + block.data_count]
        offset += block.data_count
        data_blocks.append(chunk)
        ec_blocks.append(_ec_codewords(chunk, block.total_count - block.data_count))
    interleaved: list[int] = []
    for group in (data_blocks, ec_blocks):
        for position in range(max(len(block) for block in group)):
            interleaved.extend(block[position] for block in group if position < len(block))
    return interleaved


def module_matrix(text: str, ecc: str = "L", max_version: int = 40) -> np.ndarray:
    """The QR symbol of ``text`` (one alphanumeric segment), smallest version, no border.

    Identical to ``qrcode.QRCode(error_correction=ecc).make()`` on the same segment.
    """
    version = smallest_version(len(text), ecc)
    if version > max_version:
        raise QRSizeError(
            f"{len(text)} characters need QR version {version}, above the cap {max_version}"
        )
    region, function = _layout(version)
    rows, cols = _placement(version)
    bits = np.unpackbits(np.array(alphanumeric_codewords(text, version, ecc), dtype=np.uint8))
    used = min(bits.size, rows.size)  # modules past the last codeword stay light
    data_bits = np.zeros_like(region)
    data_bits[rows[:used], cols[:used]] = bits[:used].astype(bool)
    patterns = _mask_patterns(version)
    scores = [
        mask_penalty(np.where(region, data_bits ^ patterns[mask], function)) for mask in range(8)
    ]
    best = scores.index(min(scores))  # the first of equals, as qrcode does
    return np.where(region, data_bits ^ patterns[best], _final_function_modules(version, ecc, best))


def module_pixels(modules_across: int) -> int:
    """Pixels per module for a PNG: about TARGET_IMAGE_PIXELS wide, at least 4."""
    return max(MIN_MODULE_PIXELS, TARGET_IMAGE_PIXELS // (modules_across + 2 * QUIET_ZONE))


def frame_image(text: str, density: Density, scale: int | None = None) -> Image.Image:
    """A black-on-white picture of one frame, quiet zone included (Pillow mode "L")."""
    modules = module_matrix(text, density.ecc, density.version)
    bordered = np.pad(modules, QUIET_ZONE, constant_values=False)
    pixels = scale or module_pixels(modules.shape[0])
    grey = np.where(bordered, 0, 255).astype(np.uint8)
    grey = np.repeat(np.repeat(grey, pixels, axis=0), pixels, axis=1)
    return Image.fromarray(grey, mode="L")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("1", dither=Image.Dither.NONE).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def frame_filename(index: int, total: int) -> str:
    """``frame-01-of-12.png``: names that sort in frame order."""
    width = max(2, len(str(total)))
    return f"frame-{index:0{width}d}-of-{total:0{width}d}.png"


def frame_pngs(frames: Sequence[str], density: Density) -> dict[str, bytes]:
    """The PNG file of each frame, by file name, in frame order."""
    files = {}
    for text in frames:
        frame = Frame.parse(text)
        files[frame_filename(frame.index, frame.total)] = png_bytes(frame_image(text, density))
    return files


def write_frame_pngs(
    frames: Sequence[str], density: Density, directory: str | os.PathLike[str]
) -> list[Path]:
    """One PNG per frame in ``directory`` (created if needed), each written atomically.

    Every picture is drawn before the first file is written.
    """
    files = frame_pngs(frames, density)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    return [atomic_write(folder / name, data) for name, data in files.items()]


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, ImportError, TypeError):  # Pillow built without FreeType
        return ImageFont.load_default()


def contact_sheet_pages(
    frames: Sequence[str], density: Density, title: str = ""
) -> list[Image.Image]:
    """Printable pages of up to 12 frames, each code labelled with its number."""
    parsed = [Frame.parse(text) for text in frames]
    per_page = SHEET_COLUMNS * SHEET_ROWS
    page_count = -(-len(frames) // per_page)
    pages = []
    label_font, title_font = _font(28), _font(32)
    for page_index in range(page_count):
        chunk = list(range(page_index * per_page, min(len(frames), (page_index + 1) * per_page)))
        images = [frame_image(frames[i], density) for i in chunk]
        cell = max(image.width for image in images)
        label_height, header_height = 44, 70
        width = SHEET_COLUMNS * cell
        height = header_height + SHEET_ROWS * (cell + label_height)
        page = Image.new("L", (width, height), 255)
        draw = ImageDraw.Draw(page)
        session = parsed[0].session
        heading = f"{title}  " if title else ""
        heading += f"wavesign QR session {session}, {len(frames)} frames"
        if page_count > 1:
            heading += f", page {page_index + 1}/{page_count}"
        draw.text((16, 18), heading, fill=0, font=title_font)
        for slot, (frame_index, image) in enumerate(zip(chunk, images, strict=True)):
            x = (slot % SHEET_COLUMNS) * cell
            y = header_height + (slot // SHEET_COLUMNS) * (cell + label_height)
            page.paste(image, (x + (cell - image.width) // 2, y))
            frame = parsed[frame_index]
            draw.text(
                (x + cell // 2, y + image.height + 4),
                f"frame {frame.index} / {frame.total}",
                fill=0,
                font=label_font,
                anchor="mt",
            )
        pages.append(page)
    return pages


def contact_sheet_name(number: int, pages: int) -> str:
    """``contact-sheet.png``, or ``contact-sheet-01-of-03.png`` ... for several pages."""
    return "contact-sheet.png" if pages == 1 else f"contact-sheet-{number:02d}-of-{pages:02d}.png"


_SLIDESHOW = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
 body { margin: 0; background: #fff; color: #000; font: 18px sans-serif; text-align: center; }
 #frame { width: min(92vw, 82vh); height: auto; image-rendering: pixelated; margin-top: 1vh; }
 #bar { margin: 1vh; } button { font-size: 18px; margin: 0 4px; }
 #counter { font-weight: bold; display: inline-block; min-width: 9em; }
</style>
</head>
<body>
<div id="bar">
 <strong>__TITLE__</strong> &middot; session __SESSION__ &middot;
 <span id="counter">frame 1 / __TOTAL__</span>
 <button id="prev" title="previous frame (left arrow)">&#9664;</button>
 <button id="pause" title="pause or play (space)">pause</button>
 <button id="next" title="next frame (right arrow)">&#9654;</button>
 <label>ms per frame <input id="speed" type="range" min="100" max="3000" step="100"
  value="__DELAY__"> <span id="delay">__DELAY__</span></label>
</div>
<img id="frame" alt="QR frame" src="">
<div id="frames" hidden>
__IMAGES__
</div>
<script>
(function () {
  var sources = Array.prototype.map.call(
    document.querySelectorAll("#frames img"), function (img) { return img.src; });
  var img = document.getElementById("frame"), counter = document.getElementById("counter");
  var pause = document.getElementById("pause"), speed = document.getElementById("speed");
  var delayText = document.getElementById("delay");
  var index = 0, playing = sources.length > 1, timer = null;
  function show(i) {
    index = (i + sources.length) % sources.length;
    img.src = sources[index];
    counter.textContent = "frame " + (index + 1) + " / " + sources.length;
  }
  function schedule() {
    if (timer) { clearInterval(timer); timer = null; }
    if (playing) { timer = setInterval(function () { show(index + 1); }, +speed.value); }
    pause.textContent = playing ? "pause" : "play";
  }
  function toggle() { playing = !playing; schedule(); }
  pause.onclick = toggle;
  function step(by) { playing = false; schedule(); show(index + by); }
  document.getElementById("prev").onclick = function () { step(-1); };
  document.getElementById("next").onclick = function () { step(1); };
  speed.oninput = function () { delayText.textContent = speed.value; schedule(); };
  document.onkeydown = function (event) {
    if (event.key === " ") { toggle(); event.preventDefault(); }
    else if (event.key === "ArrowLeft") { step(-1); }
    else if (event.key === "ArrowRight") { step(1); }
  };
  show(0);
  schedule();
})();
</script>
</body>
</html>
"""


def slideshow_html(
    frames: Sequence[str], density: Density, title: str = "", delay_ms: int = 500
) -> str:
    """A self-contained HTML page cycling through the frames (no network requests).

    Images are inlined as ``data:`` URIs and a Content-Security-Policy forbids every
    other source, so the page works, and leaks nothing, on an offline machine.
    """
    parsed = [Frame.parse(text) for text in frames]
    images = []
    for frame, text in zip(parsed, frames, strict=True):
        encoded = base64.b64encode(png_bytes(frame_image(text, density))).decode("ascii")
        alt = f"frame {frame.index} of {frame.total}"
        images.append(f'<img alt="{alt}" src="data:image/png;base64,{encoded}">')
    replacements = {
        "__TITLE__": html.escape(title or "wavesign QR"),
        "__SESSION__": html.escape(parsed[0].session),
        "__TOTAL__": str(len(frames)),
        "__DELAY__": str(int(delay_ms)),
        "__IMAGES__": "\n".join(images),
    }
    page = _SLIDESHOW
    for marker, value in replacements.items():
        page = page.replace(marker, value)
    return page


# Upper and lower halves of a character cell: (top light, bottom light) -> glyph.
_HALF_BLOCKS = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}


def terminal_text(text: str, density: Density, invert: bool = False) -> str:
    """One frame in Unicode half blocks, two modules per character cell vertically.

    By default the glyphs draw the *light* modules, which suits the usual light text
    on a dark terminal; ``invert=True`` draws the dark ones for dark-on-light terminals.
    """
    modules = np.pad(module_matrix(text, density.ecc, density.version), QUIET_ZONE)
    drawn = modules if invert else ~modules  # True where a glyph half is drawn
    if drawn.shape[0] % 2:  # one more quiet-zone row to fill the last character cells
        drawn = np.vstack([drawn, np.full((1, drawn.shape[1]), not invert)])
    lines = []
    for top, bottom in zip(drawn[0::2], drawn[1::2], strict=True):
        lines.append(
            "".join(_HALF_BLOCKS[(bool(a), bool(b))] for a, b in zip(top, bottom, strict=True))
        )
    return "\n".join(lines)


# --- reading ------------------------------------------------------------------------


@functools.cache
def _scanner(line_step: int) -> zbar.Scanner:
    # QR codes only: scanning every 1-D symbology too halves the speed, and a noise
    # pattern misread as a barcode would only produce a confusing error.
    return zbar.Scanner(
        [
            ("ZBAR_NONE", "ZBAR_CFG_ENABLE", 0),
            ("ZBAR_QRCODE", "ZBAR_CFG_ENABLE", 1),
            ("ZBAR_NONE", "ZBAR_CFG_X_DENSITY", line_step),
            ("ZBAR_NONE", "ZBAR_CFG_Y_DENSITY", line_step),
        ]
    )


def _scan(grey: Image.Image, line_step: int = 1) -> list[str]:
    array = np.ascontiguousarray(np.asarray(grey, dtype=np.uint8))
    return [
        symbol.data.decode("ascii", errors="replace")
        for symbol in _scanner(line_step).scan(array)
        if symbol.type == "QR-Code"
    ]


def _resized(grey: Image.Image, factor: float) -> Image.Image:
    size = (max(1, round(grey.width * factor)), max(1, round(grey.height * factor)))
    return grey.resize(size, Image.Resampling.LANCZOS)


def _retries(grey: Image.Image) -> Iterator[Image.Image]:
    """Other versions of a photo, tried in turn only while nothing decodes.

    A blurred photo taken up close decodes once scaled down; a small one with modules
    under 3 pixels once scaled up; soft edges once sharpened; JPEG speckle once
    median-filtered; a dim screen once stretched or thresholded.
    """
    yield ImageOps.autocontrast(grey, cutoff=1)
    longest = max(grey.size)
    for divisor in (2, 3, 4, 6):
        if longest / divisor >= 400:
            yield _resized(grey, 1 / divisor)
    if longest < 1000:
        yield _resized(grey, 2)
    yield grey.filter(ImageFilter.UnsharpMask(radius=3, percent=200, threshold=2))
    yield grey.filter(ImageFilter.MedianFilter(3))
    threshold = int(np.asarray(grey).mean())
    yield grey.point(lambda value: 255 if value > threshold else 0)


def read_image_frames(path: str | os.PathLike[str]) -> list[str]:
    """The QR texts zbar finds in one image file (PNG, JPEG, ...), possibly none."""
    try:
        with Image.open(path) as opened:
            if opened.width * opened.height > MAX_IMAGE_PIXELS:
                raise QRSizeError(
                    f"{path}: {opened.width}x{opened.height} pixels is larger than the "
                    f"{MAX_IMAGE_PIXELS} pixels wavesign reads"
                )
            image = ImageOps.exif_transpose(opened)
            if image.mode in ("P", "PA", "LA", "RGBA") or "transparency" in image.info:
                # Transparent pixels (qrencode's background, for one) count as white.
                rgba = image.convert("RGBA")
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
            grey = image.convert("L")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise QRError(f"{path}: no such image file") from None
        raise QRError(f"{path}: not an image wavesign can read ({exc})") from None
    # A clean picture decodes scanning every other line, nearly three times faster;
    # anything harder gets every line, then the retries.
    texts = _scan(grey, line_step=2) or _scan(grey)
    if texts:
        return texts
    for candidate in _retries(grey):
        texts = _scan(candidate)
        if texts:
            return texts
    return []
