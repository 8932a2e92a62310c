"""RFC 9162 Merkle trees: known answers from a naive reference written here from the RFC.

The reference functions below (``ref_*``) follow the RFC's recursive definitions
literally (MTH 2.1.1, PATH 2.1.3.1, SUBPROOF 2.1.4.1) and never call the module under
test. The reference *verifiers* rebuild the roots a proof implies by walking the same
recursive structure top-down, an algorithm independent of the RFC's iterative checks
that the module implements.
"""

from __future__ import annotations

import hashlib

import pytest
from wavesign.shared import merkle
from wavesign.shared.errors import SignatureMismatchError, WavesignError
from wavesign.shared.merkle import (
    EMPTY_ROOT,
    MerkleError,
    MerkleLog,
    MerkleTree,
    TreeHead,
    consistency_proof,
    inclusion_proof,
    root_hash,
    sign_tree_head,
    verify_consistency,
    verify_inclusion,
    verify_tree_head,
)
from wavesign.shared.strictjson import JSONInputError

# --- the reference, straight from RFC 9162 -----------------------------------------


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_k(n: int) -> int:
    """The largest power of two smaller than n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(entries: list[bytes]) -> bytes:
    n = len(entries)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return sha256(b"\x00" + entries[0])
    k = ref_k(n)
    return sha256(b"\x01" + ref_mth(entries[:k]) + ref_mth(entries[k:]))


def ref_path(m: int, entries: list[bytes]) -> list[bytes]:
    n = len(entries)
    if n == 1:
        return []
    k = ref_k(n)
    if m < k:
        return [*ref_path(m, entries[:k]), ref_mth(entries[k:])]
    return [*ref_path(m - k, entries[k:]), ref_mth(entries[:k])]


def ref_subproof(m: int, entries: list[bytes], b: bool) -> list[bytes]:
    n = len(entries)
    if m == n:
        return [] if b else [ref_mth(entries)]
    k = ref_k(n)
    if m <= k:
        return [*ref_subproof(m, entries[:k], b), ref_mth(entries[k:])]
    return [*ref_subproof(m - k, entries[k:], False), ref_mth(entries[:k])]


def ref_proof(m: int, entries: list[bytes]) -> list[bytes]:
    return ref_subproof(m, entries, True)


def ref_inclusion_ok(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> bool:
    """Rebuild the root the proof implies by following MTH's split top-down."""
    if not 0 <= index < size:
        return False
    remaining = list(proof)

    def walk(i: int, n: int) -> bytes | None:
        if n == 1:
            return leaf
        if not remaining:
            return None
        sibling = remaining.pop()  # the last proof element belongs to the top split
        k = ref_k(n)
        below = walk(i, k) if i < k else walk(i - k, n - k)
        if below is None:
            return None
        return sha256(b"\x01" + below + sibling) if i < k else sha256(b"\x01" + sibling + below)

    rebuilt = walk(index, size)
    return rebuilt is not None and not remaining and rebuilt == root


def ref_consistency_ok(
    m: int, n: int, old_root: bytes, new_root: bytes, proof: list[bytes]
) -> bool:
    """Rebuild (old root, new root) from a proof by following SUBPROOF top-down."""
    if not 0 < m < n:
        return False
    remaining = list(proof)

    def walk(m: int, n: int, b: bool) -> tuple[bytes, bytes] | None:
        if m == n:
            if b:
                return old_root, old_root
            if not remaining:
                return None
            node = remaining.pop()
            return node, node
        if not remaining:
            return None
        other = remaining.pop()
        k = ref_k(n)
        if m <= k:
            below = walk(m, k, b)
            if below is None:
                return None
            return below[0], sha256(b"\x01" + below[1] + other)
        below = walk(m - k, n - k, False)
        if below is None:
            return None
        return sha256(b"\x01" + other + below[0]), sha256(b"\x01" + other + below[1])

    rebuilt = walk(m, n, True)
    return rebuilt is not None and not remaining and rebuilt == (old_root, new_root)


def entries(count: int) -> list[bytes]:
    return [f"event {i}".encode() for i in range(count)]


def hashes_of(items: list[bytes]) -> list[bytes]:
    return [sha256(b"\x00" + item) for item in items]


def flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


MAX_PROOF_SIZE = 40
ITEMS = entries(70)
LEAVES = hashes_of(ITEMS)
REF_ROOTS = [ref_mth(ITEMS[:n]) for n in range(71)]


# --- hashing and roots --------------------------------------------------------------


def test_empty_tree_hash_is_sha256_of_empty_string() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root_hash([]) == EMPTY_ROOT
    assert MerkleLog().root() == EMPTY_ROOT


def test_leaf_and_node_hashes_use_domain_prefixes() -> None:
    assert merkle.leaf_hash(b"abc") == sha256(b"\x00abc")
    left, right = sha256(b"l"), sha256(b"r")
    assert merkle.node_hash(left, right) == sha256(b"\x01" + left + right)
    # The prefixes matter: a leaf is never the same as a node over the same bytes.
    assert merkle.leaf_hash(left + right) != merkle.node_hash(left, right)


def test_rfc_6962_published_root_of_one_empty_leaf() -> None:
    # The CT test vector: MTH of a single empty entry is SHA-256(0x00).
    assert root_hash([merkle.leaf_hash(b"")]).hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


# The Certificate Transparency reference vectors (RFC 6962 hashing, which RFC 9162
# keeps), as published with the CT / transparency-dev Merkle test suites.
CT_ENTRIES = [
    bytes.fromhex(h)
    for h in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657",
              "606162636465666768696a6b6c6d6e6f"]
]  # fmt: skip
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = [  # (0-based index, tree size, proof)
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
CT_CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
CT_LEAVES = [merkle.leaf_hash(entry) for entry in CT_ENTRIES]


def test_published_ct_vectors() -> None:
    for size, expected in enumerate(CT_ROOTS):
        assert root_hash(CT_LEAVES, size).hex() == expected
        assert ref_mth(CT_ENTRIES[:size]).hex() == expected  # the reference is right too
    for index, size, proof_hex in CT_INCLUSION:
        proof = inclusion_proof(CT_LEAVES, index, size)
        assert [p.hex() for p in proof] == proof_hex
        root = bytes.fromhex(CT_ROOTS[size])
        assert verify_inclusion(CT_LEAVES[index], index, size, proof, root)
    for old_size, new_size, proof_hex in CT_CONSISTENCY:
        proof = consistency_proof(CT_LEAVES, old_size, new_size)
        assert [p.hex() for p in proof] == proof_hex
        old_root, new_root = bytes.fromhex(CT_ROOTS[old_size]), bytes.fromhex(CT_ROOTS[new_size])
        assert verify_consistency(old_size, new_size, old_root, new_root, proof)


@pytest.mark.parametrize("size", range(71))
def test_roots_match_the_rfc_definition(size: int) -> None:
    assert root_hash(LEAVES, size) == REF_ROOTS[size]
    assert root_hash(LEAVES[:size]) == REF_ROOTS[size]
    log = MerkleLog.from_leaf_hashes(LEAVES[:size])
    assert log.size == size
    assert log.root() == REF_ROOTS[size]
    assert len(log.frontier) == bin(size).count("1")


def test_incremental_log_gives_every_intermediate_root() -> None:
    log = MerkleLog()
    for index, leaf in enumerate(LEAVES):
        assert log.append(leaf) == index
        assert log.root() == REF_ROOTS[index + 1]


def test_log_resumes_from_its_persisted_frontier() -> None:
    first = MerkleLog.from_leaf_hashes(LEAVES[:37])
    resumed = MerkleLog(first.size, first.frontier)
    for leaf in LEAVES[37:]:
        resumed.append(leaf)
    assert resumed.root() == REF_ROOTS[70]


def test_log_refuses_a_frontier_of_the_wrong_shape() -> None:
    with pytest.raises(MerkleError, match="frontier of a 5-leaf tree has 2 hashes, not 1"):
        MerkleLog(5, [LEAVES[0]])
    with pytest.raises(MerkleError, match="32 bytes"):
        MerkleLog().append(b"short")


def test_a_large_log() -> None:
    # Large enough for deep, unbalanced trees; the million-leaf figures are in bench/.
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(131_075)]
    log = MerkleLog.from_leaf_hashes(leaves)

    # The expected root, independently: MTH's split at the largest power of two,
    # with each power-of-two part hashed by plain pairwise levels.
    def perfect(level: list[bytes]) -> bytes:
        while len(level) > 1:
            level = [sha256(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level), 2)]
        return level[0]

    def expected_root(level: list[bytes]) -> bytes:
        n = len(level)
        if n & (n - 1) == 0:
            return perfect(level)
        k = ref_k(n)
        return sha256(b"\x01" + perfect(level[:k]) + expected_root(level[k:]))

    assert log.root() == expected_root(leaves)
    assert root_hash(leaves) == log.root()
    proof = inclusion_proof(leaves, 76_543, 131_075)
    assert verify_inclusion(leaves[76_543], 76_543, 131_075, proof, log.root())
    consistency = consistency_proof(leaves, 99_000, 131_075)
    old_root = root_hash(leaves, 99_000)
    assert verify_consistency(99_000, 131_075, old_root, log.root(), consistency)

    # The stored tree answers the same, and many proofs stay cheap.
    tree = MerkleTree(leaves)
    assert tree.root() == log.root()
    assert tree.root(99_000) == old_root
    assert tree.inclusion_proof(76_543) == proof
    assert tree.consistency_proof(99_000) == consistency
    for index in range(0, 131_075, 997):
        size = index + 1 + (131_075 - index - 1) // 2  # sizes between index+1 and all
        assert verify_inclusion(
            leaves[index], index, size, tree.inclusion_proof(index, size), tree.root(size)
        )


# --- inclusion ------------------------------------------------------------------------


@pytest.mark.parametrize("size", range(1, MAX_PROOF_SIZE + 1))
def test_inclusion_proofs_for_every_index(size: int) -> None:
    root = REF_ROOTS[size]
    for index in range(size):
        leaf = LEAVES[index]
        proof = inclusion_proof(LEAVES, index, size)
        assert proof == ref_path(index, ITEMS[:size])
        assert verify_inclusion(leaf, index, size, proof, root)

        for position in range(len(proof)):
            altered = list(proof)
            altered[position] = flip(altered[position])
            assert not verify_inclusion(leaf, index, size, altered, root)
        assert not verify_inclusion(flip(leaf), index, size, proof, root)
        assert not verify_inclusion(leaf, index, size, proof, flip(root))
        assert not verify_inclusion(leaf, index, size, [*proof, root], root)
        if proof:
            assert not verify_inclusion(leaf, index, size, proof[:-1], root)
        for other in range(size):
            if other != index:
                assert not verify_inclusion(leaf, other, size, proof, root)
        assert not verify_inclusion(leaf, size, size, proof, root)
        # The size only shapes the path (a signed tree head binds it to the root):
        # for every other size the module must agree with the reference verifier,
        # and the true size is the only one whose own root it accepts.
        for other_size in range(1, MAX_PROOF_SIZE + 1):
            if other_size == size:
                continue
            assert verify_inclusion(leaf, index, other_size, proof, root) == ref_inclusion_ok(
                leaf, index, other_size, proof, root
            )
            assert not verify_inclusion(leaf, index, other_size, proof, REF_ROOTS[other_size])


def test_merkle_tree_gives_the_same_roots_and_proofs_for_every_earlier_size() -> None:
    tree = MerkleTree(LEAVES[:MAX_PROOF_SIZE])
    assert tree.size == MAX_PROOF_SIZE
    assert tree.root() == REF_ROOTS[MAX_PROOF_SIZE]
    for size in range(MAX_PROOF_SIZE + 1):
        assert tree.root(size) == REF_ROOTS[size]
        for index in range(size):
            assert tree.inclusion_proof(index, size) == ref_path(index, ITEMS[:size])
        for old_size in range(1, size):
            assert tree.consistency_proof(old_size, size) == ref_proof(old_size, ITEMS[:size])
        assert tree.consistency_proof(0, size) == []
    with pytest.raises(MerkleError, match=r"tree size 41 is outside 0\.\.40"):
        tree.root(41)
    with pytest.raises(MerkleError, match="leaf index 3 is outside a tree of 3 leaves"):
        tree.inclusion_proof(3, 3)


def test_inclusion_proof_refuses_impossible_arguments() -> None:
    with pytest.raises(MerkleError, match="leaf index 5 is outside a tree of 5 leaves"):
        inclusion_proof(LEAVES, 5, 5)
    with pytest.raises(MerkleError, match=r"tree size 71 is outside 0\.\.70"):
        inclusion_proof(LEAVES, 0, 71)
    assert not verify_inclusion(LEAVES[0], 0, 0, [], EMPTY_ROOT)
    assert not verify_inclusion(LEAVES[0], -1, 3, [], REF_ROOTS[3])
    assert not verify_inclusion(LEAVES[0], 0, 2, [b"short"], REF_ROOTS[2])


# --- consistency ----------------------------------------------------------------------


@pytest.mark.parametrize("new_size", range(1, MAX_PROOF_SIZE + 1))
def test_consistency_proofs_for_every_pair(new_size: int) -> None:
    new_root = REF_ROOTS[new_size]
    for old_size in range(0, new_size + 1):
        old_root = REF_ROOTS[old_size]
        proof = consistency_proof(LEAVES, old_size, new_size)
        if old_size in (0, new_size):
            assert proof == []
            assert verify_consistency(old_size, new_size, old_root, new_root, proof)
            if old_size == new_size:
                assert not verify_consistency(old_size, new_size, flip(old_root), new_root, [])
                assert not verify_consistency(old_size, new_size, old_root, new_root, [new_root])
            continue
        assert proof == ref_proof(old_size, ITEMS[:new_size])
        assert ref_consistency_ok(old_size, new_size, old_root, new_root, proof)
        assert verify_consistency(old_size, new_size, old_root, new_root, proof)

        for position in range(len(proof)):
            altered = list(proof)
            altered[position] = flip(altered[position])
            assert not verify_consistency(old_size, new_size, old_root, new_root, altered)
        assert not verify_consistency(old_size, new_size, flip(old_root), new_root, proof)
        assert not verify_consistency(old_size, new_size, old_root, flip(new_root), proof)
        assert not verify_consistency(old_size, new_size, old_root, new_root, proof[:-1])
        assert not verify_consistency(old_size, new_size, old_root, new_root, [*proof, new_root])
        assert not verify_consistency(old_size, new_size, old_root, new_root, [])
        assert not verify_consistency(new_size, old_size, new_root, old_root, proof)
        # Other sizes: the module agrees with the reference, and never accepts the
        # proof for the true roots of other sizes.
        for other_old in range(1, new_size):
            if other_old == old_size:
                continue
            assert verify_consistency(
                other_old, new_size, old_root, new_root, proof
            ) == ref_consistency_ok(other_old, new_size, old_root, new_root, proof)
            assert not verify_consistency(
                other_old, new_size, REF_ROOTS[other_old], new_root, proof
            )
        for other_new in range(old_size + 1, MAX_PROOF_SIZE + 1):
            if other_new == new_size:
                continue
            assert verify_consistency(
                old_size, other_new, old_root, new_root, proof
            ) == ref_consistency_ok(old_size, other_new, old_root, new_root, proof)
            assert not verify_consistency(
                old_size, other_new, old_root, REF_ROOTS[other_new], proof
            )


def test_a_forked_log_is_not_consistent() -> None:
    forked = LEAVES[:10] + hashes_of([b"a rewritten event"]) + LEAVES[11:30]
    proof = consistency_proof(forked, 20, 30)
    assert not verify_consistency(20, 30, REF_ROOTS[20], root_hash(forked), proof)
    assert verify_consistency(20, 30, root_hash(forked, 20), root_hash(forked), proof)


def test_consistency_proof_refuses_impossible_sizes() -> None:
    with pytest.raises(MerkleError, match="cannot prove a 6-leaf tree is a prefix of 5 leaves"):
        consistency_proof(LEAVES, 6, 5)
    with pytest.raises(MerkleError, match=r"tree size 80 is outside 0\.\.70"):
        consistency_proof(LEAVES, 3, 80)
    assert not verify_consistency(0, 5, EMPTY_ROOT, REF_ROOTS[5], [REF_ROOTS[5]])


# --- signed tree heads ----------------------------------------------------------------


def test_tree_head_round_trip_and_canonical_bytes() -> None:
    head = TreeHead(70, REF_ROOTS[70].hex(), "2026-12-03T16:00:00Z")
    assert TreeHead.from_dict(head.to_dict()) == head
    assert head.root == REF_ROOTS[70]
    assert head.to_bytes() == (
        b'{"root_hash":"' + REF_ROOTS[70].hex().encode() + b'","size":70,'
        b'"timestamp":"2026-12-03T16:00:00Z"}'
    )
    assert TreeHead.of(MerkleLog.from_leaf_hashes(LEAVES), "2026-12-03T16:00:00Z") == head


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"size": -1, "root_hash": "00" * 32, "timestamp": "2026-12-03T16:00:00Z"}, "at least 0"),
        ({"size": 1, "root_hash": "AB" * 32, "timestamp": "2026-12-03T16:00:00Z"}, "root_hash"),
        ({"size": 1, "root_hash": "00" * 32, "timestamp": "2026-12-03 16:00"}, "RFC 3339"),
        ({"size": 1, "root_hash": "00" * 32, "timestamp": "2026-13-03T16:00:00Z"}, "real date"),
        ({"size": 1, "root_hash": "00" * 32}, "timestamp: missing"),
        (
            {"size": 1, "root_hash": "00" * 32, "timestamp": "2026-12-03T16:00:00Z", "x": 1},
            "unknown field 'x'",
        ),
        ({"size": True, "root_hash": "00" * 32, "timestamp": "2026-12-03T16:00:00Z"}, "integer"),
    ],
)
def test_tree_head_from_dict_refuses_bad_fields(data: dict, message: str) -> None:
    with pytest.raises(JSONInputError, match=message):
        TreeHead.from_dict(data)


def test_signed_tree_head_verifies_and_tampering_fails(ed25519_signers) -> None:
    signer, other = ed25519_signers[0], ed25519_signers[1]
    head = TreeHead(70, REF_ROOTS[70].hex(), "2026-12-03T16:00:00Z")
    signed = sign_tree_head(signer, head)
    assert signed["signed"] == head.to_dict()
    assert [s["keyid"] for s in signed["signatures"]] == [signer.public_key.keyid]
    assert verify_tree_head(signer.public_key, signed) == head

    # Signature over the canonical bytes, checked here with the key directly.
    from securesystemslib.signer import Signature

    signer.public_key.verify_signature(
        Signature.from_dict(dict(signed["signatures"][0])), head.to_bytes()
    )

    bigger = {**signed, "signed": {**signed["signed"], "size": 71}}
    with pytest.raises(SignatureMismatchError, match="does not verify"):
        verify_tree_head(signer.public_key, bigger)
    other_root = {**signed, "signed": {**signed["signed"], "root_hash": REF_ROOTS[69].hex()}}
    with pytest.raises(SignatureMismatchError):
        verify_tree_head(signer.public_key, other_root)
    with pytest.raises(MerkleError, match="no signature by key"):
        verify_tree_head(other.public_key, signed)
    flipped_sig = signed["signatures"][0]["sig"]
    flipped_sig = ("1" if flipped_sig[0] == "0" else "0") + flipped_sig[1:]
    forged = {**signed, "signatures": [{**signed["signatures"][0], "sig": flipped_sig}]}
    with pytest.raises(SignatureMismatchError):
        verify_tree_head(signer.public_key, forged)
    with pytest.raises(WavesignError, match="unknown field 'extra'"):
        verify_tree_head(signer.public_key, {**signed, "extra": 1})
