"""RFC 9162 (Certificate Transparency v2) Merkle trees for the broker's event log.

The log is an append-only list of entries. Each entry becomes a leaf hash,
``SHA-256(0x00 || entry)``; inner nodes are ``SHA-256(0x01 || left || right)``. The
different prefixes keep a leaf from ever being passed off as an inner node. The tree
head of ``n`` leaves (MTH, RFC 9162 2.1.1) splits at the largest power of two smaller
than ``n``, so an existing tree is always a left part of every later one: that is what
makes consistency proofs possible.

Everything here works on lists of 32-byte *leaf hashes* (not on raw entries): the
broker stores leaf hashes, and an auditor recomputes them from the exported entries
with :func:`leaf_hash`.

The proof algorithms are the RFC's own: ``PATH`` / ``SUBPROOF`` to make proofs and the
iterative checks of 2.1.3.2 and 2.1.4.2 to verify them. Note that a verified inclusion
proof binds the leaf to the root, but the tree size only shapes the path; a verifier
must take (size, root) together from a signed tree head, never from the prover.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from securesystemslib.signer import Key, Signature, Signer

from .canonical import canonical_bytes
from .errors import WavesignError
from .signing import sign_payload, verify_signature
from .strictjson import FieldReader, JSONInputError

__all__ = [
    "EMPTY_ROOT",
    "MerkleError",
    "MerkleLog",
    "MerkleTree",
    "TreeHead",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root_hash",
    "sign_tree_head",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
    "verify_tree_head",
]

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"

#: MTH({}) = SHA-256() -- the hash of the empty string (RFC 9162 2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()


class MerkleError(WavesignError):
    """A Merkle proof was asked for impossible sizes, or a tree head is malformed."""


def leaf_hash(entry: bytes) -> bytes:
    """The leaf hash of one log entry: SHA-256(0x00 || entry)."""
    return hashlib.sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an inner node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _fold_frontier(frontier: Sequence[bytes]) -> bytes:
    """The root of a tree given its perfect subtrees, largest (leftmost) first."""
    if not frontier:
        return EMPTY_ROOT
    root = frontier[-1]
    for left in reversed(frontier[:-1]):
        root = node_hash(left, root)
    return root


class MerkleLog:
    """An append-only Merkle tree that keeps only its compact frontier.

    The frontier holds the roots of the perfect subtrees the tree decomposes into,
    one per set bit of ``size`` (largest first). Appending is amortised O(1) and the
    root is O(log n), so a log of a million entries never needs its leaves in memory.
    """

    def __init__(self, size: int = 0, frontier: Sequence[bytes] = ()) -> None:
        if size < 0:
            raise MerkleError(f"a Merkle log cannot have {size} leaves")
        if len(frontier) != bin(size).count("1"):
            raise MerkleError(
                f"a frontier of a {size}-leaf tree has {bin(size).count('1')} hashes, "
                f"not {len(frontier)}"
            )
        for node in frontier:
            _check_hash(node, "frontier hash")
        self._size = size
        self._frontier: list[bytes] = list(frontier)

    @classmethod
    def from_leaf_hashes(cls, leaf_hashes: Sequence[bytes]) -> MerkleLog:
        """The log of these leaves, built from its perfect subtrees in one pass."""
        for leaf in leaf_hashes:
            _check_hash(leaf, "leaf hash")
        frontier: list[bytes] = []
        start, size = 0, len(leaf_hashes)
        for bit in reversed(range(size.bit_length())):
            if size >> bit & 1:
                frontier.append(subtree_hash(leaf_hashes, start, start + (1 << bit)))
                start += 1 << bit
        return cls(size, frontier)

    @property
    def size(self) -> int:
        return self._size

    @property
    def frontier(self) -> list[bytes]:
        """The perfect-subtree roots, largest first (persist these with ``size``)."""
        return list(self._frontier)

    def append(self, leaf: bytes) -> int:
        """Append one leaf hash; return its index."""
        _check_hash(leaf, "leaf hash")
        index = self._size
        node = leaf
        # Each trailing set bit of the old size is a perfect subtree of the same
        # height as the carry: merge them, exactly like binary addition.
        carries = index
        while carries & 1:
            node = node_hash(self._frontier.pop(), node)
            carries >>= 1
        self._frontier.append(node)
        self._size += 1
        return index

    def root(self) -> bytes:
        """MTH of all leaves appended so far."""
        return _fold_frontier(self._frontier)


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise MerkleError(f"a {what} must be {HASH_SIZE} bytes")


def subtree_hash(leaf_hashes: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH(D[start:end]), hashing level by level.

    Pairing neighbours and carrying an odd last node up unchanged gives exactly the
    RFC's split at the largest power of two: the left part is always a perfect
    subtree, which pairing builds without ever touching the carried node.
    """
    if end <= start:
        return EMPTY_ROOT
    sha256 = hashlib.sha256
    level = list(leaf_hashes[start:end])
    while len(level) > 1:
        paired = [
            sha256(NODE_PREFIX + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) & 1:
            paired.append(level[-1])
        level = paired
    return level[0]


def root_hash(leaf_hashes: Sequence[bytes], size: int | None = None) -> bytes:
    """MTH of the first ``size`` leaf hashes (all of them by default)."""
    size = len(leaf_hashes) if size is None else size
    _check_size(leaf_hashes, size)
    return subtree_hash(leaf_hashes, 0, size)


def _check_size(leaf_hashes: Sequence[bytes], size: int) -> None:
    if size < 0 or size > len(leaf_hashes):
        raise MerkleError(f"tree size {size} is outside 0..{len(leaf_hashes)}")


RangeHash = Callable[[int, int], bytes]


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 2.1.3.1, deepest sibling first.

    Costs O(size) hashes: each step hashes the sibling subtree, and the siblings are
    disjoint parts of the tree. For many proofs over one list use :class:`MerkleTree`.
    """
    _check_size(leaf_hashes, size)
    return _path(lambda start, end: subtree_hash(leaf_hashes, start, end), index, size)


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) of RFC 9162 2.1.4.1.

    Empty when ``old_size`` is 0 or equal to ``new_size`` (nothing to prove).
    """
    _check_size(leaf_hashes, new_size)
    return _proof(lambda start, end: subtree_hash(leaf_hashes, start, end), old_size, new_size)


def _path(range_hash: RangeHash, index: int, size: int) -> list[bytes]:
    if not 0 <= index < size:
        raise MerkleError(f"leaf index {index} is outside a tree of {size} leaves")
    # Walk down from the root, remembering each sibling; the proof lists them
    # bottom-up, so reverse at the end.
    siblings: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        split = start + _largest_power_of_two_below(end - start)
        if index < split:
            siblings.append(range_hash(split, end))
            end = split
        else:
            siblings.append(range_hash(start, split))
            start = split
    siblings.reverse()
    return siblings


def _proof(range_hash: RangeHash, old_size: int, new_size: int) -> list[bytes]:
    if not 0 <= old_size <= new_size:
        raise MerkleError(f"cannot prove a {old_size}-leaf tree is a prefix of {new_size} leaves")
    if old_size in (0, new_size):
        return []
    # SUBPROOF(m, D[start:end], b), unrolled: each level appends one node, and the
    # RFC lists the innermost node first, so collect top-down and reverse.
    nodes: list[bytes] = []
    m, start, end = old_size, 0, new_size
    whole_old_tree = True
    while m != end - start:
        split = _largest_power_of_two_below(end - start)
        if m <= split:
            nodes.append(range_hash(start + split, end))
            end = start + split
        else:
            nodes.append(range_hash(start, start + split))
            start += split
            m -= split
            whole_old_tree = False
    if not whole_old_tree:
        nodes.append(range_hash(start, end))
    nodes.reverse()
    return nodes


class MerkleTree:
    """All perfect subtrees of a list of leaf hashes, for O(log n) roots and proofs.

    Building costs one pass (n - 1 hashes) and about 2n hashes of memory. Every
    range that MTH, PATH and SUBPROOF ask about starts at a multiple of a power of two
    at least as large as the range, so it splits into at most log n stored perfect
    subtrees: the roots and proofs of every earlier tree size come out in O(log n).
    """

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        for leaf in leaf_hashes:
            _check_hash(leaf, "leaf hash")
        # levels[h][i] is the root of the perfect subtree D[i * 2**h : (i + 1) * 2**h].
        self._levels: list[list[bytes]] = [list(leaf_hashes)]
        sha256 = hashlib.sha256
        while len(self._levels[-1]) > 1:
            below = self._levels[-1]
            self._levels.append(
                [
                    sha256(NODE_PREFIX + below[i] + below[i + 1]).digest()
                    for i in range(0, len(below) - 1, 2)
                ]
            )

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def leaf(self, index: int) -> bytes:
        return self._levels[0][index]

    def _range_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) from stored subtrees; ``start`` aligned as described above."""
        if end <= start:
            return EMPTY_ROOT
        parts: list[bytes] = []
        position = start
        while position < end:
            height = (end - position).bit_length() - 1
            if position % (1 << height):
                # Cannot happen for PATH/SUBPROOF ranges; any other split is not MTH.
                raise MerkleError(f"range {start}..{end} is not a subtree of the tree")
            parts.append(self._levels[height][position >> height])
            position += 1 << height
        return _fold_frontier(parts)

    def _check(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise MerkleError(f"tree size {size} is outside 0..{self.size}")

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        self._check(size)
        return self._range_hash(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self.size if size is None else size
        self._check(size)
        return _path(self._range_hash, index, size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        new_size = self.size if new_size is None else new_size
        self._check(new_size)
        return _proof(self._range_hash, old_size, new_size)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: does ``proof`` show ``leaf`` at ``index`` in the tree ``root``?"""
    if not 0 <= index < size or not _all_hashes([leaf, root, *proof]):
        return False
    fn, sn = index, size - 1
    result = leaf
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and result == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: is the tree ``old_root`` a prefix of the tree ``new_root``?

    Trivial cases (not covered by the RFC's algorithm): an empty old tree is a prefix
    of anything, with an empty proof; equal sizes need an empty proof and equal roots.
    """
    if not 0 <= old_size <= new_size or not _all_hashes([old_root, new_root, *proof]):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        # The old tree is a whole subtree of the new one: its root starts the path.
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for node in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(node, fr)
            sr = node_hash(node, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, node)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0


def _all_hashes(values: Sequence[object]) -> bool:
    return all(isinstance(value, bytes) and len(value) == HASH_SIZE for value in values)


# --- signed tree heads -------------------------------------------------------------

_HEX64 = re.compile(r"[0-9a-f]{64}")
_RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")


@dataclass(frozen=True)
class TreeHead:
    """What the log commits to: its size, its root, and when (RFC 3339, UTC, 'Z')."""

    size: int
    root_hash: str
    timestamp: str

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise MerkleError(f"tree head size must be a non-negative integer, not {self.size!r}")
        if not isinstance(self.root_hash, str) or not _HEX64.fullmatch(self.root_hash):
            raise MerkleError("tree head root_hash must be 64 lowercase hex digits")
        if not isinstance(self.timestamp, str) or not _RFC3339_UTC.fullmatch(self.timestamp):
            raise MerkleError(
                f"tree head timestamp {str(self.timestamp)[:40]!r} is not RFC 3339 UTC "
                "(YYYY-MM-DDTHH:MM:SSZ)"
            )
        try:
            datetime.fromisoformat(self.timestamp.replace("Z", "+00:00"))
        except ValueError:
            raise MerkleError(
                f"tree head timestamp {self.timestamp!r} is not a real date"
            ) from None

    @classmethod
    def of(cls, log: MerkleLog, timestamp: str) -> TreeHead:
        return cls(log.size, log.root().hex(), timestamp)

    @property
    def root(self) -> bytes:
        return bytes.fromhex(self.root_hash)

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "root_hash": self.root_hash, "timestamp": self.timestamp}

    @classmethod
    def from_dict(cls, data: Any, path: str = "tree_head") -> TreeHead:
        reader = FieldReader(data, path)
        size = reader.integer("size", minimum=0)
        root = reader.string("root_hash", pattern=_HEX64)
        timestamp = reader.string("timestamp")
        reader.done()
        try:
            return cls(size, root, timestamp)
        except MerkleError as exc:
            raise JSONInputError(f"{path}: {exc}") from None

    def to_bytes(self) -> bytes:
        """The canonical JSON bytes that a tree-head signature covers."""
        return canonical_bytes(self.to_dict())


def sign_tree_head(signer: Signer, head: TreeHead) -> dict[str, Any]:
    """``{"signed": head, "signatures": [{"keyid", "sig"}]}``, verified after signing."""
    signature = sign_payload(signer, head.to_bytes())
    return {"signed": head.to_dict(), "signatures": [signature.to_dict()]}


def verify_tree_head(key: Key, signed_head: Mapping[str, Any]) -> TreeHead:
    """Return the tree head if ``key`` signed it; raise a :class:`WavesignError` if not."""
    reader = FieldReader(
        dict(signed_head) if isinstance(signed_head, Mapping) else signed_head, "signed tree head"
    )
    head = TreeHead.from_dict(reader.mapping("signed"), "signed tree head.signed")
    signatures = reader.sequence("signatures")
    reader.done()
    matching = [
        entry for entry in signatures if isinstance(entry, dict) and entry.get("keyid") == key.keyid
    ]
    if not matching:
        raise MerkleError(f"signed tree head has no signature by key {key.keyid[:16]}")
    if len(matching) > 1:
        raise MerkleError(f"signed tree head has two signatures by key {key.keyid[:16]}")
    sig_reader = FieldReader(matching[0], "signed tree head.signatures[]")
    keyid = sig_reader.string("keyid", pattern=_HEX64)
    sig = sig_reader.string("sig", pattern=re.compile(r"[0-9a-f]+"))
    sig_reader.done()
    verify_signature(key, Signature(keyid, sig), head.to_bytes())
    return head
