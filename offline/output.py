"""Where a response goes, and where a request comes from: a USB file or QR codes.

Every output is prepared next to its destination and moved into place only when it
is complete, so a failed ceremony leaves the output folder as it was. Inputs are
read through :mod:`wavesign.shared.transport` (files, size-bounded) and
:mod:`wavesign.shared.qrtransport` (QR images or scanner lines).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from wavesign.shared.errors import WavesignError
from wavesign.shared.fileio import atomic_write
from wavesign.shared.transport import read_bundle_file

__all__ = ["OutputError", "ResponseTarget", "read_request_input", "response_writer"]


class OutputError(WavesignError):
    """The response cannot be written where it was asked to go."""


@dataclass(frozen=True)
class ResponseTarget:
    """Exactly one of: a file, a PNG folder, an HTML file, the terminal."""

    out: Path | None = None
    qr_png: Path | None = None
    qr_html: Path | None = None
    qr_terminal: bool = False
    density: str = "normal"

    def check(self) -> None:
        """Refuse a destination that cannot work, before anything is signed."""
        chosen = [self.out, self.qr_png, self.qr_html, self.qr_terminal or None]
        if sum(c is not None for c in chosen) != 1:
            raise OutputError("choose exactly one of --out, --qr-png, --qr-html and --qr-terminal")
        for path in (self.out, self.qr_html):
            if path is not None:
                if path.is_dir():
                    raise OutputError(f"{path} is a folder; give a file name")
                if not path.parent.resolve().is_dir():
                    raise OutputError(f"folder {path.parent} does not exist")
        if self.qr_png is not None and self.qr_png.exists() and not self.qr_png.is_dir():
            raise OutputError(f"{self.qr_png} exists and is not a folder")


def read_request_input(
    file: Path | None, qr_images: Iterable[Path], qr_stdin: bool, stdin_lines: Iterable[str]
) -> bytes:
    """The request bytes from exactly one source."""
    images = list(qr_images)
    if sum([file is not None, bool(images), qr_stdin]) != 1:
        raise OutputError("give exactly one of FILE, --qr-images and --qr-stdin")
    if file is not None:
        return read_bundle_file(file)
    from wavesign.shared.qrtransport import read_qr_images, read_qr_lines

    if images:
        return read_qr_images([str(p) for p in images])
    return read_qr_lines(stdin_lines)


def _move_png_frames(tmp: Path, destination: Path) -> None:
    created_dir = not destination.exists()
    destination.mkdir(parents=True, exist_ok=True)
    moved: list[Path] = []
    try:
        for path in sorted(tmp.iterdir()):
            target = destination / path.name
            if target.exists():
                raise OutputError(f"{target} already exists: give an empty or new folder")
        for path in sorted(tmp.iterdir()):
            target = destination / path.name
            os.replace(path, target)
            moved.append(target)
    except BaseException:
        for target in moved:
            with contextlib.suppress(OSError):
                target.unlink()
        if created_dir:
            with contextlib.suppress(OSError):
                destination.rmdir()
        raise


def response_writer(target: ResponseTarget, title: str) -> Callable[[bytes], None]:
    """A function that writes response bytes to ``target`` completely or not at all."""

    def write(data: bytes) -> None:
        if target.out is not None:
            atomic_write(target.out, data + b"\n", mode=0o644)
            return
        from wavesign.shared.qrtransport import export_qr

        if target.qr_png is not None:
            parent = target.qr_png.resolve().parent
            tmp = Path(tempfile.mkdtemp(prefix=".wavesign-qr-", dir=parent))
            try:
                export_qr(data, png_dir=str(tmp), density=target.density, title=title)
                _move_png_frames(tmp, target.qr_png)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        elif target.qr_html is not None:
            parent = target.qr_html.resolve().parent
            fd, tmp_name = tempfile.mkstemp(prefix=".wavesign-qr-", suffix=".html", dir=parent)
            os.close(fd)
            try:
                export_qr(data, html=tmp_name, density=target.density, title=title)
                os.chmod(tmp_name, 0o644)
                os.replace(tmp_name, target.qr_html)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp_name)
        else:
            export_qr(data, terminal=True, density=target.density, title=title)

    return write
