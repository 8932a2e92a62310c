"""The QR frame codec (pure): frame layout, round trips, limits and refusals.

The builders at the top make realistic request-like bundles; the image and interop
tests and ``bench/qr_frames.py`` use them too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import pytest
from qrcode import constants as qr_constants
from qrcode import util as qr_util
from qrcode.main import QRCode
from wavesign.shared import qrcodec
from wavesign.shared.bundles import SignatureEntry, SigningResponse
from wavesign.shared.canonical import canonical_bytes, digest
from wavesign.shared.gpg import GnuPG
from wavesign.shared.qrcodec import (
    DENSITIES,
    FrameCollector,
    QRError,
    QRFrameError,
    QRIncompleteError,
    QRSessionError,
    QRSizeError,
    decode_frames,
    encode_frames,
)

from tests.gpghelpers import make_gpg_identity

# --- realistic bundles ------------------------------------------------------------


def _hex(rnd: random.Random, chars: int) -> str:
    return f"{rnd.getrandbits(4 * chars):0{chars}x}"


def fioctl_target(rnd: random.Random, build: int) -> tuple[str, dict[str, Any]]:
    """A target entry as Foundries CI publishes it, with random hashes.

    The containers repository and the apps change every few builds, as they do in a
    real factory, so neighbouring builds share those digests.
    """
    apps_rnd = random.Random(f"apps-{build // 3}")
    stamp = f"2026-{1 + build % 12:02d}-{1 + build % 28:02d}T{build % 24:02d}:{build % 60:02d}:07Z"
    name = "intel-corei7-64-lmp"
    return f"{name}-{build}", {
        "hashes": {"sha256": _hex(rnd, 64)},
        "length": rnd.randrange(10**8, 2 * 10**9),
        "custom": {
            "hardwareIds": ["intel-corei7-64"],
            "tags": ["main", "production"],
            "targetFormat": "OSTREE",
            "version": str(build),
            "name": name,
            "uri": f"https://ci.foundries.io/projects/acme/lmp/builds/{build}",
            "createdAt": stamp,
            "updatedAt": stamp,
            "containers-sha": _hex(apps_rnd, 40),
            "docker_compose_apps": {
                app: {"uri": f"hub.foundries.io/acme/{app}@sha256:{_hex(apps_rnd, 64)}"}
                for app in ("shellhttpd", "fluent-bit")
            },
        },
    }


def targets_payload(count: int, seed: int = 1, first_build: int = 1000) -> dict[str, Any]:
    rnd = random.Random(seed)
    return {
        "_type": "targets",
        "spec_version": "1.0.31",
        "version": 57,
        "expires": "2027-12-01T00:00:00Z",
        "targets": dict(fioctl_target(rnd, first_build + i) for i in range(count)),
    }


def request_bytes(count: int, seed: int = 1) -> bytes:
    """A signing request shaped like wavesign's, with ``count`` targets in its payload."""
    rnd = random.Random(seed + 1)
    signed = targets_payload(count, seed)
    request = {
        "format": "wavesign-signing-request",
        "version": 1,
        "id": f"req-{_hex(rnd, 12)}",
        "factory": "acme",
        "created": "2026-12-03T15:00:00Z",
        "purpose": {"kind": "wave", "wave": "v2.0-update", "tag": "production", "ci_version": 1042},
        "payloads": [
            {
                "name": "wave",
                "role": "targets",
                "signed": signed,
                "sha256": digest(signed),
                "keyids": [_hex(rnd, 64), _hex(rnd, 64)],
            }
        ],
        "context": {
            "production_version": 56,
            "production_sha256": _hex(rnd, 64),
            "root_version": 3,
        },
        "operator_signature": base64.b64encode(rnd.randbytes(119)).decode("ascii"),
    }
    return canonical_bytes(request)


FRAME_RE = re.compile(r"[0-9A-Z]+")


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- frame layout -----------------------------------------------------------------


def test_frame_header_follows_the_documented_layout() -> None:
    data = request_bytes(3)
    frames = encode_frames(data, "low")
    expected_session = base64.b32encode(_sha256(data)).decode()[:8]
    assert len(frames) > 1
    for number, frame in enumerate(frames, start=1):
        assert FRAME_RE.fullmatch(frame)
        assert frame[:3] == "WS1"
        assert frame[3:11] == expected_session
        assert frame[11:15] == f"{number:04d}"
        assert frame[15:19] == f"{len(frames):04d}"
        assert frame[19:27] == f"{zlib.crc32((frame[:19] + frame[27:]).encode()):08X}"
    # The payloads, joined and base32-decoded, are sha256(bundle) || zlib(bundle).
    chars = "".join(frame[27:] for frame in frames)
    stream = base64.b32decode(chars + "=" * (-len(chars) % 8))
    assert stream[:32] == _sha256(data)
    assert zlib.decompress(stream[32:]) == data


def test_crc_is_crc32_iso_hdlc() -> None:
    # The catalogue check value of CRC-32/ISO-HDLC.
    assert qrcodec.frame_crc("123456789") == "CBF43926"


def test_encoding_is_deterministic_and_depends_on_density() -> None:
    data = request_bytes(40)
    assert encode_frames(data, "normal") == encode_frames(bytes(data), "normal")
    assert encode_frames(data, "low") != encode_frames(data, "normal")


@pytest.mark.parametrize("name", ["low", "normal", "high"])
def test_density_capacity_matches_the_qr_standard(name: str) -> None:
    chosen = DENSITIES[name]
    ecc = getattr(qr_constants, f"ERROR_CORRECT_{chosen.ecc}")

    def version_for(length: int) -> int:
        code = QRCode(error_correction=ecc)
        code.add_data(qr_util.QRData(b"A" * length, mode=qr_util.MODE_ALPHA_NUM))
        return int(code.best_fit())

    # qrcode's own fitting agrees: the capacity fills the capped version exactly.
    assert version_for(chosen.capacity) == chosen.version
    assert version_for(chosen.capacity + 1) == chosen.version + 1
    binary = QRCode(error_correction=ecc)
    binary.add_data(qr_util.QRData(b"\xff" * chosen.binary_capacity))
    assert binary.best_fit() == chosen.version
    binary = QRCode(error_correction=ecc)
    binary.add_data(qr_util.QRData(b"\xff" * (chosen.binary_capacity + 1)))
    assert binary.best_fit() == chosen.version + 1


def test_capacity_table_values() -> None:
    # ISO/IEC 18004 table 7: alphanumeric capacity of 7-M, 21-L and 27-L.
    assert [(d.version, d.ecc, d.capacity) for d in DENSITIES.values()] == [
        (7, "M", 178),
        (21, "L", 1352),
        (27, "L", 2132),
    ]


@pytest.mark.parametrize("name", ["low", "normal", "high"])
def test_frames_are_filled_to_the_cap_and_evenly(name: str) -> None:
    chosen = DENSITIES[name]
    frames = encode_frames(request_bytes(60), name)
    payloads = [len(frame) - 27 for frame in frames]
    assert max(len(frame) for frame in frames) <= chosen.capacity
    assert max(payloads) - min(payloads) <= 1
    # No fewer frames could carry it: the frame count is the minimum.
    assert sum(payloads) > (len(frames) - 1) * (chosen.capacity - 27)


# --- round trips ------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 100])
@pytest.mark.parametrize("name", ["low", "normal", "high"])
def test_round_trip(count: int, name: str) -> None:
    data = request_bytes(count)
    assert decode_frames(encode_frames(data, name)) == data


def test_round_trip_5000_targets() -> None:
    data = request_bytes(5000)
    assert decode_frames(encode_frames(data, "high")) == data


def test_any_order_and_duplicates() -> None:
    data = request_bytes(100)
    frames = encode_frames(data, "normal")
    shuffled = frames * 2
    random.Random(5).shuffle(shuffled)
    assert decode_frames(shuffled) == data


def test_progress_is_reported_for_new_frames_only() -> None:
    frames = encode_frames(request_bytes(20), "low")
    seen: list[str] = []
    collector = FrameCollector(lambda progress: seen.append(str(progress)))
    collector.add(frames[2])
    collector.add(frames[2])
    collector.add(frames[0])
    total = len(frames)
    assert seen == [f"frames 1/{total}", f"frames 2/{total}"]
    assert collector.missing() == [2, *range(4, total + 1)]


def test_empty_bundle_round_trips() -> None:
    assert decode_frames(encode_frames(b"", "low")) == b""


# --- refusals ---------------------------------------------------------------------


def _flip(frame: str, position: int) -> str:
    replacement = "B" if frame[position] != "B" else "C"
    return frame[:position] + replacement + frame[position + 1 :]


@pytest.mark.parametrize("position", [5, 12, 22, 40, -1])
def test_one_flipped_character_is_caught_and_the_frame_named(position: int) -> None:
    frames = encode_frames(request_bytes(10), "low")
    bad = list(frames)
    bad[2] = _flip(frames[2], position)
    with pytest.raises(QRFrameError) as caught:
        decode_frames(bad)
    message = str(caught.value)
    assert "\n" not in message
    assert "frame string 3" in message and "CRC" in message
    if position != 12:  # the index field is intact
        assert f"frame 3/{len(frames)}" in message


def test_every_single_character_flip_is_caught() -> None:
    frame = encode_frames(b"x" * 50, "low")[0]
    for position in range(len(frame)):
        with pytest.raises(QRError):
            decode_frames([_flip(frame, position)])


@pytest.mark.parametrize("char", ["a", "$", " ", "é", "="])
def test_characters_outside_the_alphabet_are_refused(char: str) -> None:
    frame = encode_frames(b"payload" * 10, "low")[0]
    bad = frame[:30] + char + frame[31:]
    with pytest.raises(QRFrameError, match=r"position 31 is not in \[0-9A-Z\]"):
        decode_frames([bad])


def test_frame_of_another_session_is_refused() -> None:
    first = encode_frames(request_bytes(10, seed=1), "low")
    second = encode_frames(request_bytes(10, seed=2), "low")
    with pytest.raises(QRSessionError, match=r"belongs to QR session .* frames of two bundles"):
        decode_frames([first[0], first[1], second[2]])


def test_same_bundle_at_two_densities_is_refused() -> None:
    data = request_bytes(10)
    with pytest.raises(QRSessionError, match="different densities"):
        decode_frames([encode_frames(data, "low")[0], encode_frames(data, "normal")[0]])


def test_missing_frames_are_listed() -> None:
    frames = encode_frames(request_bytes(30), "low")
    total = len(frames)
    kept = [frame for number, frame in enumerate(frames, start=1) if number not in (2, 3, 4, 9)]
    with pytest.raises(QRIncompleteError) as caught:
        decode_frames(kept)
    assert str(caught.value).endswith(f"read {total - 4} of {total} frames, missing 2-4, 9")


def test_no_frames_at_all() -> None:
    with pytest.raises(QRIncompleteError, match="no wavesign QR frames"):
        decode_frames([])


def test_unknown_protocol_tag_and_version() -> None:
    frame = encode_frames(b"data" * 20, "low")[0]
    with pytest.raises(QRFrameError, match="not a wavesign QR frame"):
        decode_frames(["BQ" + frame[2:]])
    with pytest.raises(QRFrameError, match="format version '2' is not supported"):
        decode_frames(["WS2" + frame[3:]])


def test_overlong_line_is_refused() -> None:
    with pytest.raises(QRSizeError, match="longer than any QR code"):
        decode_frames(["WS1" + "A" * 5000])


def test_index_outside_total_is_refused() -> None:
    head = "WS1ABCDEFGH00050004"
    payload = "ABCDEFGH"
    text = head + qrcodec.frame_crc(head + payload) + payload
    with pytest.raises(QRFrameError, match=r"outside 1\.\.total"):
        decode_frames([text])


def test_frames_altered_consistently_are_refused_by_the_digest() -> None:
    # An attacker (or a bug) who re-computes the CRCs still cannot change the bundle.
    data = b'{"a": 1}' * 30
    stream = qrcodec.stream_for(data)
    forged = stream[:32] + zlib.compress(data.replace(b"1", b"2"), 9)
    frames = [f.text() for f in qrcodec.frames_for_stream(forged, DENSITIES["low"])]
    with pytest.raises(QRError, match="sha256 does not match"):
        decode_frames(frames)
    other_digest = _sha256(b"other") + stream[32:]
    frames = [f.text() for f in qrcodec.frames_for_stream(other_digest, DENSITIES["low"])]
    relabelled = []
    for text in frames:  # keep the original session id, recompute each CRC
        head = text[:3] + qrcodec.session_id(stream[:32]) + text[11:19]
        relabelled.append(head + qrcodec.frame_crc(head + text[27:]) + text[27:])
    with pytest.raises(QRSessionError, match="does not match the session id"):
        decode_frames(relabelled)


def test_oversized_bundle_is_refused_before_encoding() -> None:
    with pytest.raises(QRSizeError, match="larger than the 16777216 bytes"):
        encode_frames(bytes(16 * 1024 * 1024 + 1), "high")


def test_too_many_frames_are_refused() -> None:
    incompressible = random.Random(3).randbytes(1_000_000)
    with pytest.raises(QRSizeError, match=r"needs \d+ frames at density low, more than the 9999"):
        encode_frames(incompressible, "low")


@pytest.fixture(scope="module")
def gigabyte_bomb() -> bytes:
    """A valid zlib stream of 1 GiB of zeros, about 1 MB long.

    Compressing 1 GiB takes seconds; instead one MiB of zeros is compressed with a
    sync flush after each MiB. Once the window is all zeros every further MiB
    compresses to the same bytes, so they are repeated, and the Adler-32 trailer is
    computed for the full GiB.
    """
    zero_mib = bytes(1 << 20)
    compressor = zlib.compressobj(9)
    blocks = [compressor.compress(zero_mib) + compressor.flush(zlib.Z_SYNC_FLUSH) for _ in range(3)]
    assert blocks[1] == blocks[2]  # the steady state that is repeated below
    final = compressor.flush(zlib.Z_FINISH)[:-4]  # an empty last block, without adler32
    adler = 1
    for _ in range(1024):
        adler = zlib.adler32(zero_mib, adler)
    bomb = blocks[0] + blocks[1] * 1023 + final + adler.to_bytes(4, "big")
    # Spot check: the start inflates to zeros as promised.
    assert zlib.decompressobj().decompress(bomb[: 3 * len(blocks[1])], 3 << 20) == bytes(3 << 20)
    return bomb


def test_decompression_bomb_is_refused_quickly_with_bounded_memory(gigabyte_bomb: bytes) -> None:
    assert len(gigabyte_bomb) < 1_200_000
    stream = _sha256(b"a claimed digest") + gigabyte_bomb
    frames = [frame.text() for frame in qrcodec.frames_for_stream(stream, DENSITIES["high"])]
    started = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(QRSizeError, match="inflates past 16777216 bytes"):
            decode_frames(frames)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 20
    assert peak < 80 * 1024 * 1024  # the limit plus the frames, nowhere near 1 GiB


# --- a signing response fits one frame --------------------------------------------


def test_two_signature_response_fits_one_frame_at_normal_density(tmp_path: Path) -> None:
    officer = make_gpg_identity(tmp_path / "gnupg", "Security Officer")
    rnd = random.Random(9)
    keyid = _hex(rnd, 64)
    response = SigningResponse(
        request_sha256=_hex(rnd, 64),
        signatures=(
            SignatureEntry("wave", _hex(rnd, 64), keyid, _hex(rnd, 128)),
            SignatureEntry("revert", _hex(rnd, 64), keyid, _hex(rnd, 128)),
        ),
        journal_head=_hex(rnd, 64),
    )
    attestation = GnuPG(officer.home).sign_detached(officer.fingerprint, response.signing_bytes())
    data = response.with_attestation(attestation).to_bytes()
    # Also with the armoured form of the attestation, a few hundred bytes more.
    armoured = response.to_dict() | {
        "attestation": "-----BEGIN PGP SIGNATURE-----\n\n"
        + "\n".join(attestation[i : i + 64] for i in range(0, len(attestation), 64))
        + "\n=AbCd\n-----END PGP SIGNATURE-----\n"
    }
    for document in (data, json.dumps(armoured, indent=1).encode()):
        frames = encode_frames(document, "normal")
        assert len(frames) == 1, f"{len(document)} bytes took {len(frames)} frames"
        assert decode_frames(frames) == document
    assert SigningResponse.from_bytes(decode_frames(encode_frames(data, "normal"))) == (
        response.with_attestation(attestation)
    )
