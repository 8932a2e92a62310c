"""The QR frame codec: bundle bytes <-> frame strings, a pure function of its input.

A bundle crosses the air gap as a *session* of QR frames. Every character of every
frame is in ``[0-9A-Z]``: QR alphanumeric mode carries it densely, zbar does not
mangle it (it does mangle binary mode), and a USB handheld scanner types it the same
on every keyboard layout. The wire format is specified in ``docs/formats/qr.md``;
in short::

    stream  = sha256(bundle) || zlib(bundle)
    chars   = base32(stream), upper case, "=" padding removed
    frame i = "WS" "1" SESSION INDEX TOTAL CRC  chars[a_i:b_i]
              2    1   8       4     4     8    (header: 27 characters)

The session id is the first 8 base32 characters of the bundle's sha256, so frames of
two bundles never mix silently. Chunks are spread evenly: every frame carries
``floor(L/n)`` or ``ceil(L/n)`` characters. Encoding is deterministic: the same bytes
at the same density always give the same frames.

No I/O here: :mod:`wavesign.shared.qrimages` draws and reads images, and
:mod:`wavesign.shared.qrtransport` is the facade the command-line tools use.
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .canonical import digest_bytes
from .errors import WavesignError

__all__ = [
    "ALPHABET",
    "DENSITIES",
    "HEADER_LENGTH",
    "MAX_BUNDLE_BYTES",
    "MAX_FRAMES",
    "MAX_FRAME_CHARS",
    "PROTOCOL_TAG",
    "PROTOCOL_VERSION",
    "Density",
    "Frame",
    "FrameCollector",
    "Progress",
    "QRError",
    "QRFrameError",
    "QRIncompleteError",
    "QRSessionError",
    "QRSizeError",
    "decode_frames",
    "density",
    "encode_frames",
    "frame_crc",
    "frames_for_stream",
    "session_id",
    "stream_for",
]

#: Every character of a frame, header and payload alike.
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
#: The payload is RFC 4648 base32: a subset of ALPHABET.
BASE32_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
PROTOCOL_TAG = "WS"
PROTOCOL_VERSION = "1"
SESSION_LENGTH = 8
INDEX_DIGITS = 4
CRC_LENGTH = 8
HEADER_LENGTH = len(PROTOCOL_TAG) + 1 + SESSION_LENGTH + 2 * INDEX_DIGITS + CRC_LENGTH
#: Bytes of sha256 in front of the compressed bundle.
DIGEST_LENGTH = 32

#: A bundle never inflates past this (the same limit as a bundle file).
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
#: Four decimal digits of index and total.
MAX_FRAMES = 9999
#: The most characters any QR code holds (version 40-L, alphanumeric): a longer line
#: is not a frame.
MAX_FRAME_CHARS = 4296

_FRAME_RE = re.compile(r"[0-9A-Z]+")
_INFLATE_CHUNK = 1 << 16


class QRError(WavesignError):
    """QR frames that do not make a bundle: a bad frame, a mixed session, a gap."""


class QRFrameError(QRError):
    """One frame is unreadable: foreign characters, a failed CRC, an unknown format."""


class QRSessionError(QRError):
    """Frames of two different sessions (bundles or exports) were mixed."""


class QRIncompleteError(QRError):
    """Some frames of the session were never read."""


class QRSizeError(QRError):
    """A bundle, a frame or a session is larger than wavesign accepts."""


@dataclass(frozen=True)
class Density:
    """How much one frame holds: a QR version and error-correction level."""

    name: str
    version: int
    ecc: str
    #: Alphanumeric characters a QR code of this version/ECC holds (ISO/IEC 18004).
    capacity: int
    #: Binary-mode bytes at the same version/ECC (the "plain JSON" anchor of the bench).
    binary_capacity: int

    @property
    def payload_chars(self) -> int:
        """Base32 characters per frame once the header is paid for."""
        return self.capacity - HEADER_LENGTH


#: ``low`` suits old phone cameras and printouts (ECC M survives some blur);
#: ``normal`` holds a typical signing response in one frame; ``high`` is the densest
#: that webcams read reliably from a screen.
DENSITIES: dict[str, Density] = {
    "low": Density("low", version=7, ecc="M", capacity=178, binary_capacity=122),
    "normal": Density("normal", version=21, ecc="L", capacity=1352, binary_capacity=929),
    "high": Density("high", version=27, ecc="L", capacity=2132, binary_capacity=1465),
}


def density(name: str) -> Density:
    """The :class:`Density` called ``name``, or a one-line error naming the choices."""
    try:
        return DENSITIES[name]
    except KeyError:
        choices = "|".join(DENSITIES)
        raise QRError(f"unknown QR density {name!r} (choose {choices})") from None


def session_id(bundle_digest: bytes) -> str:
    """The session id of a bundle: the first 8 base32 characters of its sha256."""
    return base64.b32encode(bundle_digest).decode("ascii")[:SESSION_LENGTH]


def frame_crc(text_without_crc: str) -> str:
    """CRC-32 (ISO-HDLC, as zlib) of the frame's other characters, 8 upper-case hex."""
    return f"{zlib.crc32(text_without_crc.encode('ascii')):08X}"


@dataclass(frozen=True)
class Frame:
    """One QR code's worth of a session."""

    session: str
    index: int
    total: int
    payload: str

    @property
    def label(self) -> str:
        return f"frame {self.index}/{self.total}"

    def text(self) -> str:
        """The exact characters that go into the QR code."""
        head = (
            f"{PROTOCOL_TAG}{PROTOCOL_VERSION}{self.session}"
            f"{self.index:0{INDEX_DIGITS}d}{self.total:0{INDEX_DIGITS}d}"
        )
        return head + frame_crc(head + self.payload) + self.payload

    @classmethod
    def parse(cls, text: str, source: str = "input") -> Frame:
        """Parse and check one frame; ``source`` names where it came from in errors."""
        if len(text) > MAX_FRAME_CHARS:
            raise QRSizeError(
                f"{source}: {len(text)} characters is longer than any QR code holds "
                f"({MAX_FRAME_CHARS})"
            )
        if not text.startswith(PROTOCOL_TAG):
            raise QRFrameError(
                f"{source}: not a wavesign QR frame (it starts with {text[:8]!r}, "
                f"not {PROTOCOL_TAG!r})"
            )
        version = text[len(PROTOCOL_TAG) : len(PROTOCOL_TAG) + 1]
        if version != PROTOCOL_VERSION:
            raise QRFrameError(
                f"{source}: wavesign QR format version {version!r} is not supported "
                f"(this wavesign reads version {PROTOCOL_VERSION})"
            )
        if not _FRAME_RE.fullmatch(text):
            position = next(i for i, char in enumerate(text) if char not in ALPHABET)
            raise QRFrameError(
                f"{source}: character {text[position]!r} at position {position + 1} is "
                "not in [0-9A-Z]; the frame was misread or altered"
            )
        if len(text) <= HEADER_LENGTH:
            raise QRFrameError(f"{source}: a frame of {len(text)} characters is too short")
        start = len(PROTOCOL_TAG) + 1
        session = text[start : start + SESSION_LENGTH]
        index_text = text[start + SESSION_LENGTH : start + SESSION_LENGTH + INDEX_DIGITS]
        total_text = text[start + SESSION_LENGTH + INDEX_DIGITS : HEADER_LENGTH - CRC_LENGTH]
        crc = text[HEADER_LENGTH - CRC_LENGTH : HEADER_LENGTH]
        payload = text[HEADER_LENGTH:]
        claimed = f"frame {index_text.lstrip('0') or '0'}/{total_text.lstrip('0') or '0'}"
        if frame_crc(text[: HEADER_LENGTH - CRC_LENGTH] + payload) != crc:
            raise QRFrameError(
                f"{source}: {claimed} of session {session} fails its CRC check "
                "(a character was misread or altered); scan that frame again"
            )
        if not (index_text.isdigit() and total_text.isdigit()):
            raise QRFrameError(f"{source}: {claimed}: index and total must be decimal digits")
        index, total = int(index_text), int(total_text)
        if not 1 <= index <= total:
            raise QRFrameError(f"{source}: {claimed}: the index is outside 1..total")
        if any(char not in BASE32_ALPHABET for char in session + payload):
            raise QRFrameError(
                f"{source}: {claimed}: session and payload must be base32 (A-Z, 2-7)"
            )
        return cls(session, index, total, payload)


def stream_for(data: bytes) -> bytes:
    """The bytes a session carries: the bundle's sha256, then the zlib-compressed bundle."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise QRSizeError(
            f"a bundle of {len(data)} bytes is larger than the {MAX_BUNDLE_BYTES} bytes "
            "that wavesign sends as QR"
        )
    return bytes.fromhex(digest_bytes(data)) + zlib.compress(data, 9)


def frames_for_stream(stream: bytes, chosen: Density) -> list[Frame]:
    """Split an already built stream into evenly filled frames (no size checks on it).

    :func:`encode_frames` is the public entry; this is separate so that tests can
    build hostile sessions (such as a decompression bomb) through the real framing.
    """
    chars = base64.b32encode(stream).decode("ascii").rstrip("=")
    per_frame = chosen.payload_chars
    total = max(1, -(-len(chars) // per_frame))
    if total > MAX_FRAMES:
        raise QRSizeError(
            f"the bundle needs {total} frames at density {chosen.name}, more than the "
            f"{MAX_FRAMES} a QR session may have; use a denser setting or a file"
        )
    session = session_id(stream[:DIGEST_LENGTH])
    # Spread evenly: the first (L mod n) frames carry one character more.
    base, extra = divmod(len(chars), total)
    frames = []
    start = 0
    for index in range(1, total + 1):
        length = base + (1 if index <= extra else 0)
        frames.append(Frame(session, index, total, chars[start : start + length]))
        start += length
    return frames


def encode_frames(data: bytes, density_name: str = "normal") -> list[str]:
    """Encode bundle bytes as frame strings, filling each up to the density's QR version."""
    chosen = density(density_name)
    return [frame.text() for frame in frames_for_stream(stream_for(data), chosen)]


@dataclass(frozen=True)
class Progress:
    """How far a reading has got; ``str()`` is ``frames 7/12``."""

    session: str
    received: int
    total: int

    def __str__(self) -> str:
        return f"frames {self.received}/{self.total}"


def _ranges(indexes: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``1-3, 7``: a short list even when many frames are missing."""
    parts: list[str] = []
    start = previous = indexes[0]
    for index in [*indexes[1:], None]:
        if index is not None and index == previous + 1:
            previous = index
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if index is not None:
            start = previous = index
    return ", ".join(parts)


class FrameCollector:
    """Gathers the frames of one session in any order, then rebuilds the bundle.

    Duplicates are ignored (a scanner reports a code it keeps seeing); a frame of
    another session, or of the same bundle exported at another density, is refused.
    """

    def __init__(self, on_progress: Callable[[Progress], None] | None = None) -> None:
        self._on_progress = on_progress
        self._session: str | None = None
        self._total = 0
        self._payloads: dict[int, str] = {}
        self._first_source = ""

    @property
    def session(self) -> str | None:
        return self._session

    @property
    def total(self) -> int:
        return self._total

    @property
    def complete(self) -> bool:
        return self._session is not None and len(self._payloads) == self._total

    def progress(self) -> Progress:
        return Progress(self._session or "", len(self._payloads), self._total)

    def missing(self) -> list[int]:
        return [i for i in range(1, self._total + 1) if i not in self._payloads]

    def add(self, text: str, source: str = "input") -> bool:
        """Add one frame's text; True if it was new, False for a duplicate."""
        frame = Frame.parse(text, source)
        if self._session is None:
            self._session, self._total, self._first_source = frame.session, frame.total, source
        elif frame.session != self._session:
            raise QRSessionError(
                f"{source}: {frame.label} belongs to QR session {frame.session}, not to "
                f"session {self._session} begun by {self._first_source}; frames of two "
                "bundles are mixed"
            )
        elif frame.total != self._total:
            raise QRSessionError(
                f"{source}: {frame.label} says session {frame.session} has {frame.total} "
                f"frames, but {self._first_source} said {self._total}; frames of two "
                "exports at different densities are mixed"
            )
        known = self._payloads.get(frame.index)
        if known is not None:
            if known != frame.payload:
                raise QRSessionError(
                    f"{source}: {frame.label} of session {frame.session} was read before "
                    "with different contents"
                )
            return False
        self._payloads[frame.index] = frame.payload
        if self._on_progress is not None:
            self._on_progress(self.progress())
        return True

    def bundle(self) -> bytes:
        """The bundle bytes, once every frame is in and the digest matches."""
        if self._session is None:
            raise QRIncompleteError("no wavesign QR frames were read")
        missing = self.missing()
        if missing:
            raise QRIncompleteError(
                f"QR session {self._session} is incomplete: read "
                f"{len(self._payloads)} of {self._total} frames, missing {_ranges(missing)}"
            )
        chars = "".join(self._payloads[i] for i in range(1, self._total + 1))
        return _unpack_stream(self._session, chars)


def _unpack_stream(session: str, chars: str) -> bytes:
    if len(chars) % 8 in (1, 3, 6):
        raise QRFrameError(
            f"QR session {session}: {len(chars)} base32 characters cannot be a whole "
            "number of bytes"
        )
    try:
        stream = base64.b32decode(chars + "=" * (-len(chars) % 8))
    except binascii.Error as exc:
        raise QRFrameError(f"QR session {session}: payload is not base32: {exc}") from None
    expected_digest, compressed = stream[:DIGEST_LENGTH], stream[DIGEST_LENGTH:]
    if len(expected_digest) < DIGEST_LENGTH or session_id(expected_digest) != session:
        raise QRSessionError(
            f"QR session {session}: the digest the frames carry does not match the "
            "session id; the frames were altered"
        )
    data = _inflate_limited(session, compressed)
    if digest_bytes(data) != expected_digest.hex():
        raise QRError(
            f"QR session {session}: the rebuilt bundle's sha256 does not match the "
            "digest the frames carry"
        )
    return data


def _inflate_limited(session: str, compressed: bytes) -> bytes:
    """zlib-inflate, refusing at MAX_BUNDLE_BYTES + 1 without inflating any further."""
    inflater = zlib.decompressobj()
    out = bytearray()
    pending = compressed
    try:
        while not inflater.eof:
            room = MAX_BUNDLE_BYTES + 1 - len(out)
            chunk = inflater.decompress(pending, min(_INFLATE_CHUNK, room))
            out += chunk
            if len(out) > MAX_BUNDLE_BYTES:
                raise QRSizeError(
                    f"QR session {session}: the bundle inflates past "
                    f"{MAX_BUNDLE_BYTES} bytes; refused before inflating further"
                )
            pending = inflater.unconsumed_tail
            if not chunk and not pending:
                break
    except zlib.error as exc:
        raise QRFrameError(
            f"QR session {session}: the compressed bundle is corrupt: {exc}"
        ) from None
    if not inflater.eof:
        raise QRFrameError(f"QR session {session}: the compressed bundle is truncated")
    if inflater.unused_data:
        raise QRFrameError(f"QR session {session}: bytes follow the compressed bundle")
    return bytes(out)


def decode_frames(
    texts: Iterable[str],
    on_progress: Callable[[Progress], None] | None = None,
) -> bytes:
    """Rebuild a bundle from frame strings in any order (duplicates ignored)."""
    collector = FrameCollector(on_progress)
    for number, text in enumerate(texts, start=1):
        collector.add(text, f"frame string {number}")
    return collector.bundle()
