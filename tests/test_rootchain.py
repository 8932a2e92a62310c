"""Root chains: N+1 needs the thresholds of N and of N+1, and version N+1."""

from __future__ import annotations

import pytest
from tuf.api.metadata import Metadata
from wavesign.shared.errors import RootChainError
from wavesign.shared.rootchain import verify_root_chain
from wavesign.shared.signing import merge_signatures, sign_payload

from tests.tuf_builders import make_root


def signed_root(root, *signers) -> Metadata:
    md = Metadata(root)
    merge_signatures(md, [sign_payload(s, root) for s in signers])
    return md


def test_rotation_signed_by_old_and_new(ed25519_signers) -> None:
    old, new, targets = ed25519_signers[:3]
    v1 = signed_root(make_root([old.public_key], [targets.public_key], targets_threshold=1), old)
    v2 = signed_root(
        make_root([new.public_key], [targets.public_key], targets_threshold=1, version=2), old, new
    )
    assert verify_root_chain([v2, v1]).signed.version == 2
    assert verify_root_chain([v1, v2], trusted=v1).signed.version == 2


def test_rotation_without_old_key_fails(ed25519_signers) -> None:
    old, new, targets = ed25519_signers[:3]
    v1 = signed_root(make_root([old.public_key], [targets.public_key], targets_threshold=1), old)
    v2 = signed_root(
        make_root([new.public_key], [targets.public_key], targets_threshold=1, version=2), new
    )
    with pytest.raises(RootChainError, match="root v1's root keys"):
        verify_root_chain([v1, v2])


def test_rotation_without_new_key_fails(ed25519_signers) -> None:
    old, new, targets = ed25519_signers[:3]
    v1 = signed_root(make_root([old.public_key], [targets.public_key], targets_threshold=1), old)
    v2 = signed_root(
        make_root([new.public_key], [targets.public_key], targets_threshold=1, version=2), old
    )
    with pytest.raises(RootChainError, match="its own root keys"):
        verify_root_chain([v1, v2])


def test_version_gap_fails(ed25519_signers) -> None:
    old, targets = ed25519_signers[0], ed25519_signers[2]
    v1 = signed_root(make_root([old.public_key], [targets.public_key], targets_threshold=1), old)
    v3 = signed_root(
        make_root([old.public_key], [targets.public_key], targets_threshold=1, version=3), old
    )
    with pytest.raises(RootChainError, match="does not follow"):
        verify_root_chain([v1, v3])


def test_unsigned_first_root_fails(ed25519_signers) -> None:
    old, targets = ed25519_signers[0], ed25519_signers[2]
    v1 = Metadata(make_root([old.public_key], [targets.public_key], targets_threshold=1))
    with pytest.raises(RootChainError, match="its own root keys"):
        verify_root_chain([v1])
