"""The QR air-gap transport: what the command-line tools call.

Writing::

    frames = export_qr(bundle_bytes, png_dir="out/", html="out/slideshow.html")

Reading, from image files or from the text lines of ``zbarcam --raw`` or a USB
scanner typing like a keyboard::

    bundle_bytes = read_qr_images(["IMG_0001.jpg", "IMG_0002.jpg"])
    bundle_bytes = read_qr_lines(sys.stdin, on_progress=lambda p: print(p, file=sys.stderr))

Every failure is a one-line :class:`~wavesign.shared.qrcodec.QRError`. The frame
format lives in :mod:`~wavesign.shared.qrcodec`, the pictures in
:mod:`~wavesign.shared.qrimages`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TextIO

from . import qrcodec
from .fileio import atomic_write
from .qrcodec import (
    MAX_FRAME_CHARS,
    Density,
    Frame,
    FrameCollector,
    Progress,
    QRError,
    QRIncompleteError,
    QRSizeError,
    encode_frames,
)
from .qrimages import (
    contact_sheet_name,
    contact_sheet_pages,
    frame_pngs,
    png_bytes,
    read_image_frames,
    slideshow_html,
    terminal_text,
)

__all__ = ["DENSITIES", "Progress", "QRError", "export_qr", "read_qr_images", "read_qr_lines"]

#: The names accepted by ``--density``.
DENSITIES: tuple[str, ...] = tuple(qrcodec.DENSITIES)

ProgressCallback = Callable[[Progress], None]


def _is_export_file(name: str) -> bool:
    return name.endswith(".png") and (name.startswith("frame-") or name.startswith("contact-sheet"))


def _write_png_dir(frames: list[str], png_dir: Path, chosen: Density, title: str) -> list[Path]:
    # Draw everything first: a failure while drawing leaves the directory untouched.
    files = frame_pngs(frames, chosen)
    pages = contact_sheet_pages(frames, chosen, title)
    for number, page in enumerate(pages, start=1):
        files[contact_sheet_name(number, len(pages))] = png_bytes(page)
    if png_dir.exists():
        stale = sorted(
            entry.name
            for entry in png_dir.iterdir()
            if _is_export_file(entry.name) and entry.name not in files
        )
        if stale:
            raise QRError(
                f"{png_dir} already holds QR frames of another export ({stale[0]}, ...); "
                "choose an empty directory so that the sessions cannot be mixed"
            )
    png_dir.mkdir(parents=True, exist_ok=True)
    return [atomic_write(png_dir / name, data) for name, data in files.items()]


def export_qr(
    data: bytes,
    *,
    png_dir: str | os.PathLike[str] | None = None,
    html: str | os.PathLike[str] | None = None,
    terminal: bool = False,
    density: str = "normal",
    title: str = "",
    out: TextIO | None = None,
    invert_terminal: bool = False,
    delay_ms: int = 500,
) -> list[str]:
    """Encode ``data`` as QR frames and write them where asked; returns the frame strings.

    ``png_dir`` gets ``frame-01-of-12.png`` ... and ``contact-sheet.png`` (one page per
    12 frames); ``html`` a self-contained slideshow; ``terminal`` prints each frame in
    Unicode half blocks to ``out`` (standard output by default).
    """
    chosen = qrcodec.density(density)
    frames = encode_frames(data, chosen.name)
    page = slideshow_html(frames, chosen, title, delay_ms) if html is not None else None
    if png_dir is not None:
        _write_png_dir(frames, Path(png_dir), chosen, title)
    if page is not None and html is not None:
        atomic_write(html, page.encode("utf-8"))
    if terminal:
        stream = out if out is not None else sys.stdout
        for text in frames:
            frame = Frame.parse(text)
            caption = f"{title}: " if title else ""
            stream.write(f"{caption}QR {frame.label}, session {frame.session}\n")
            stream.write(terminal_text(text, chosen, invert=invert_terminal) + "\n\n")
        stream.flush()
    return frames


def read_qr_images(
    paths: Iterable[str | os.PathLike[str]], on_progress: ProgressCallback | None = None
) -> bytes:
    """Rebuild a bundle from image files (PNG, JPEG, photos of a screen or printout).

    One image may hold several frames (a contact sheet); the images may come in any
    order and repeat frames.
    """
    collector = FrameCollector(on_progress)
    without_code: list[str] = []
    for path in paths:
        texts = read_image_frames(path)
        if not texts:
            without_code.append(str(path))
        for text in texts:
            collector.add(text, str(path))
    try:
        return collector.bundle()
    except QRIncompleteError as exc:
        if without_code:
            shown = ", ".join(without_code[:5]) + (", ..." if len(without_code) > 5 else "")
            raise QRIncompleteError(f"{exc}; no QR code was found in {shown}") from None
        raise


def _bounded_lines(lines: Iterable[str] | TextIO) -> Iterator[str]:
    """Lines, never reading more of one than a frame can be (a stream of junk is cut off)."""
    readline = getattr(lines, "readline", None)
    if readline is None:
        yield from lines
        return
    limit = MAX_FRAME_CHARS + 64  # room for a "QR-Code:" prefix and a CR LF
    number = 0
    while True:
        line = readline(limit)
        if not line:
            return
        number += 1
        if len(line) >= limit and not line.endswith("\n"):
            raise QRSizeError(
                f"line {number}: longer than any QR frame ({MAX_FRAME_CHARS} characters)"
            )
        yield line


def read_qr_lines(
    lines: Iterable[str] | TextIO, on_progress: ProgressCallback | None = None
) -> bytes:
    """Rebuild a bundle from text lines, one frame per line, as ``zbarcam --raw`` prints.

    Blank lines and surrounding whitespace are ignored, and so is a ``QR-Code:`` prefix
    (``zbarcam`` without ``--raw``). Reading stops as soon as the session is complete,
    so a camera left running does not keep the command waiting.
    """
    collector = FrameCollector(on_progress)
    for number, raw in enumerate(_bounded_lines(lines), start=1):
        line = raw.strip()
        if not line:
            continue
        line = line.removeprefix("QR-Code:")
        collector.add(line, f"line {number}")
        if collector.complete:
            break
    return collector.bundle()
