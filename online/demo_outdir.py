"""The demo's output folder: what ``wavesign demo`` writes, and how a second run clears it.

The demo writes only the entries named in :data:`DEMO_ENTRIES` inside ``--out``, plus
the marker file :data:`MARKER`. A second run into the same folder removes those
entries (and only those) when the marker shows that the demo made them. Without the
marker, an existing entry of the same name belongs to someone else: the demo refuses
and changes nothing. Files the demo never creates are never touched, marker or not.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from wavesign.shared.errors import WavesignError
from wavesign.shared.fileio import atomic_write

__all__ = ["DEMO_ENTRIES", "MARKER", "DemoLayout", "OutDirError", "prepare_out_dir"]

MARKER = ".wavesign-demo"
#: Everything the demo creates directly inside --out (folders, then files).
DEMO_ENTRIES = (
    "broker",
    "appliance",
    "ci",
    "devices",
    "usb",
    "qr",
    "evidence",
    "commands.sh",
)
_MARKER_TEXT = (
    "This folder holds the artifacts of `wavesign demo`.\n"
    "The next `wavesign demo --out` into this folder removes these entries, and only these:\n"
    + "".join(f"  {name}\n" for name in DEMO_ENTRIES)
)


class OutDirError(WavesignError):
    """--out cannot be used: not a folder, not writable, or holding someone else's files."""


@dataclass(frozen=True)
class DemoLayout:
    """Where each artifact goes (paths as given on the command line, for honest echoes)."""

    root: Path

    @property
    def broker(self) -> Path:
        return self.root / "broker"

    @property
    def appliance(self) -> Path:
        return self.root / "appliance"

    @property
    def ci(self) -> Path:
        return self.root / "ci"

    @property
    def devices(self) -> Path:
        return self.root / "devices"

    @property
    def usb(self) -> Path:
        return self.root / "usb"

    @property
    def qr(self) -> Path:
        return self.root / "qr"

    @property
    def evidence(self) -> Path:
        return self.root / "evidence"

    @property
    def commands(self) -> Path:
        return self.root / "commands.sh"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def prepare_out_dir(out: Path) -> DemoLayout:
    """Make ``out`` ready for a run; raise :class:`OutDirError` (changing nothing) if not."""
    if out.exists() and not out.is_dir():
        raise OutDirError(f"--out {out}: is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutDirError(f"--out {out}: cannot create the folder ({exc.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise OutDirError(f"--out {out}: the folder is not writable")
    present = [name for name in DEMO_ENTRIES if os.path.lexists(out / name)]
    if present and not (out / MARKER).is_file():
        raise OutDirError(
            f"--out {out}: {out / present[0]} exists and was not made by wavesign demo; "
            "choose another --out"
        )
    try:
        for name in present:
            _remove(out / name)
        atomic_write(out / MARKER, _MARKER_TEXT.encode())
    except OSError as exc:
        raise OutDirError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    return DemoLayout(out)
