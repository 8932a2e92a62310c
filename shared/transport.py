"""The USB file transport: bundle file names, atomic writes, bounded reads."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .bundles import MAX_BUNDLE_BYTES, BundleError, SigningRequest, SigningResponse
from .fileio import atomic_write

__all__ = ["bundle_filename", "read_bundle_file", "write_bundle_file"]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def bundle_filename(request: SigningRequest, kind: str = "request") -> str:
    """A name that says what the file is: ``wave-v2.0-update.request.json``.

    ``kind`` is ``request`` or ``response``; a response is named after its request.
    """
    purpose = request.purpose
    if purpose.kind == "wave":
        stem = f"wave-{purpose.wave}"
    elif purpose.kind == "renew":
        stem = f"renew-{purpose.tag}"
    else:
        stem = f"root-v{purpose.root_version}"
    return f"{_safe(stem)}.{kind}.json"


def write_bundle_file(
    path: str | os.PathLike[str], bundle: SigningRequest | SigningResponse
) -> Path:
    """Write a bundle atomically (temp file, fsync, rename): never half a file."""
    return atomic_write(path, bundle.to_bytes() + b"\n", mode=0o644)


def read_bundle_file(path: str | os.PathLike[str], max_size: int = MAX_BUNDLE_BYTES) -> bytes:
    """Read a bundle file, refusing anything larger than a bundle can be before reading it."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(max_size + 1)
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BundleError(f"{path}: is a folder, not a bundle file") from None
    if len(data) > max_size:
        raise BundleError(f"{path}: larger than the {max_size}-byte limit for a bundle")
    return data
