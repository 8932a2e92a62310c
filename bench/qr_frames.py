"""Benchmark: QR frames per signing request, and the codec's speed.

Run from the repository root::

    .venv/bin/python bench/qr_frames.py

For wave requests over 1, 100, 1,000 and 5,000 production targets (fioctl-shaped
entries with random hashes) plus 10 new targets, each exported in full and as a
delta, at each density, it prints the bundle size, the frames wavesign needs, the
encode and decode times of the frame strings, and the drawing time per frame. The
anchor is the same bundle as plain JSON in binary-mode QR codes of the same version
and ECC level (what a naive exporter would do); the ratio is frames(anchor) /
frames(wavesign), higher is better. A signing response is measured last.

Not a test: it asserts nothing and prints its figures.
"""

from __future__ import annotations

import base64
import math
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wavesign.shared import qrcodec, qrimages
from wavesign.shared.bundles import (
    SignatureEntry,
    SigningRequest,
    SigningResponse,
)

from tests.bundle_builders import wave_request
from tests.test_qr_codec import fioctl_target

SIZES = (1, 100, 1000, 5000)
NEW_TARGETS = 10


def wave_bundles(production_count: int) -> tuple[bytes, bytes]:
    """(full request, delta request) bytes for a wave adding NEW_TARGETS builds."""
    rnd = random.Random(production_count)
    production = dict(fioctl_target(rnd, 1000 + i) for i in range(production_count))
    first_new = 1000 + production_count
    new = dict(fioctl_target(rnd, first_new + i) for i in range(NEW_TARGETS))
    keyids = (f"{rnd.getrandbits(256):064x}", f"{rnd.getrandbits(256):064x}")
    request, base = wave_request(production, new, version=57, keyids=keyids)
    # An operator's detached ed25519 GnuPG signature is 119 bytes, carried as base64.
    request = request.with_operator_signature(base64.b64encode(rnd.randbytes(119)).decode())
    delta = request.with_payloads(p.as_delta_against(base) for p in request.payloads)
    return request.to_bytes(), delta.to_bytes()


def response_bytes() -> bytes:
    rnd = random.Random(7)
    keyid = f"{rnd.getrandbits(256):064x}"

    def entry(name: str) -> SignatureEntry:
        return SignatureEntry(
            name, f"{rnd.getrandbits(256):064x}", keyid, f"{rnd.getrandbits(512):0128x}"
        )

    response = SigningResponse(
        request_sha256=f"{rnd.getrandbits(256):064x}",
        signatures=(entry("wave"), entry("revert")),
        journal_head=f"{rnd.getrandbits(256):064x}",
        attestation=base64.b64encode(rnd.randbytes(119)).decode(),
    )
    return response.to_bytes()


def timed(function: Any, *args: Any) -> tuple[Any, float]:
    # CPU time of this (single-threaded) process: on an idle machine it equals the
    # wall time, and it stays meaningful on a busy one.
    started = time.process_time()
    result = function(*args)
    return result, time.process_time() - started


def draw(frames: list[str], density: qrcodec.Density) -> None:
    for frame in frames:
        qrimages.frame_image(frame, density)


def measure(label: str, data: bytes) -> None:
    for name, density in qrcodec.DENSITIES.items():
        anchor = math.ceil(len(data) / density.binary_capacity)
        try:
            frames, encode_seconds = timed(qrcodec.encode_frames, data, name)
        except qrcodec.QRSizeError:
            chars = math.ceil(len(qrcodec.stream_for(data)) * 8 / 5)
            needed = math.ceil(chars / density.payload_chars)
            print(
                f"{label:<24} {name:<7} {len(data):>10,} {needed:>7,}*"
                f" {'':>9} {'':>9} {'':>8} {anchor:>8,} {anchor / needed:>6.2f}"
            )
            continue
        decoded, decode_seconds = timed(qrcodec.decode_frames, frames)
        if decoded != data:  # a benchmark of a broken codec would be meaningless
            raise SystemExit(f"{label}, {name}: frames did not decode to the bundle")
        sample = frames[:10]
        _, draw_seconds = timed(draw, sample, density)
        print(
            f"{label:<24} {name:<7} {len(data):>10,} {len(frames):>8,}"
            f" {encode_seconds * 1000:>9.1f} {decode_seconds * 1000:>9.1f}"
            f" {draw_seconds * 1000 / len(sample):>8.1f} {anchor:>8,}"
            f" {anchor / len(frames):>6.2f}"
        )


def main() -> None:
    print(f"python {platform.python_version()} on {platform.machine()}, {platform.system()}")
    print("density: " + "; ".join(
        f"{d.name} = version {d.version}-{d.ecc}, {d.payload_chars} base32 chars/frame"
        f" (binary anchor {d.binary_capacity} bytes/frame)"
        for d in qrcodec.DENSITIES.values()
    ))  # fmt: skip
    # Warm the per-version layout caches (built once per process) for every version a
    # frame may be drawn at, so that "draw ms" measures drawing only.
    for density in qrcodec.DENSITIES.values():
        for version in range(1, density.version + 1):
            length = qrimages.alphanumeric_capacity(version, density.ecc)
            qrimages.module_matrix("A" * length, density.ecc, density.version)
    print(
        f"{'bundle':<24} {'density':<7} {'bytes':>10} {'frames':>8} {'enc ms':>9}"
        f" {'dec ms':>9} {'draw ms':>8} {'anchor':>8} {'ratio':>6}"
    )
    for count in SIZES:
        full, delta = wave_bundles(count)
        SigningRequest.from_bytes(delta)  # the delta is a valid request
        measure(f"{count} targets, full", full)
        measure(f"{count} targets, delta", delta)
    measure("response, 2 signatures", response_bytes())
    print("* more than the 9,999 frames a session may have: export refuses it")
    print("enc/dec ms = CPU time to encode/decode the frame strings of the whole bundle")
    print("draw ms = CPU time to draw one frame's picture (mean of the first 10)")


if __name__ == "__main__":
    main()
