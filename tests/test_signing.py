"""Signing, merging and thresholds, checked against python-tuf in both directions."""

from __future__ import annotations

import pytest
from securesystemslib.signer import CryptoSigner, Signature, SSlibKey
from tuf.api.exceptions import UnsignedMetadataError
from wavesign.shared.errors import DuplicateSignatureError, SigningError, ThresholdError
from wavesign.shared.keys import generate_signer, key_to_dict, tuf_keyid
from wavesign.shared.signing import (
    check_threshold,
    merge_signatures,
    sign_payload,
    verify_threshold,
)

from tests.tuf_builders import make_root, make_targets


@pytest.fixture
def online_offline(ed25519_signers: list[CryptoSigner]) -> tuple[CryptoSigner, CryptoSigner]:
    return ed25519_signers[0], ed25519_signers[1]


def test_wavesign_signed_metadata_verifies_with_python_tuf(online_offline) -> None:
    online, offline = online_offline
    root = make_root([offline.public_key], [online.public_key, offline.public_key])
    md = make_targets(["a-12"])
    merge_signatures(md, [sign_payload(online, md.signed), sign_payload(offline, md.signed)])
    root.verify_delegate("targets", md.signed_bytes, md.signatures)  # python-tuf's own check


def test_python_tuf_signed_metadata_verifies_with_wavesign(online_offline) -> None:
    online, offline = online_offline
    root = make_root([offline.public_key], [online.public_key, offline.public_key])
    md = make_targets(["a-12", "b-12"])
    md.sign(online)
    md.sign(offline, append=True)
    result = verify_threshold(root, "targets", md)
    assert result.distinct == 2


@pytest.mark.parametrize("key_type", ["ecdsa-p256", "rsa"])
def test_other_key_types_interoperate(key_type: str, ed25519_signers) -> None:
    other = generate_signer(key_type, rsa_bits=2048)
    root = make_root([other.public_key], [ed25519_signers[0].public_key, other.public_key])
    md = make_targets(["a-1"])
    merge_signatures(
        md, [sign_payload(ed25519_signers[0], md.signed), sign_payload(other, md.signed)]
    )
    root.verify_delegate("targets", md.signed_bytes, md.signatures)
    assert verify_threshold(root, "targets", md).ok


def test_one_signature_fails_threshold_two(online_offline) -> None:
    online, offline = online_offline
    root = make_root([offline.public_key], [online.public_key, offline.public_key])
    md = make_targets(["a-12"])
    merge_signatures(md, [sign_payload(online, md.signed)])
    with pytest.raises(ThresholdError, match="targets was signed by 1/2"):
        verify_threshold(root, "targets", md)
    with pytest.raises(UnsignedMetadataError):
        root.verify_delegate("targets", md.signed_bytes, md.signatures)


def test_two_keyids_for_one_public_key_count_once(online_offline) -> None:
    online, _ = online_offline
    # The same public key listed under a second key id (say, a legacy one).
    alias = SSlibKey(
        "f" * 64,
        online.public_key.keytype,
        online.public_key.scheme,
        dict(online.public_key.keyval),
    )
    root = make_root([online.public_key], [online.public_key, alias])
    md = make_targets(["a-12"])
    signature = sign_payload(online, md.signed)
    merge_signatures(md, [signature, Signature(alias.keyid, signature.signature)])
    # python-tuf counts key ids and is satisfied; wavesign counts public keys and is not.
    root.verify_delegate("targets", md.signed_bytes, md.signatures)
    with pytest.raises(ThresholdError, match="1/2"):
        verify_threshold(root, "targets", md)


def test_signature_over_different_bytes_fails(online_offline) -> None:
    online, offline = online_offline
    root = make_root([offline.public_key], [online.public_key, offline.public_key])
    md = make_targets(["a-12"])
    other = make_targets(["a-12", "evil-1"])
    merge_signatures(md, [sign_payload(online, md.signed), sign_payload(offline, other.signed)])
    result = check_threshold(root, "targets", md.signed, md.signatures)
    assert not result.ok
    assert result.failed == [offline.public_key.keyid]


def test_unlisted_key_does_not_count(ed25519_signers) -> None:
    a, b, c = ed25519_signers[:3]
    root = make_root([a.public_key], [a.public_key, b.public_key])
    md = make_targets(["x-1"])
    merge_signatures(md, [sign_payload(a, md.signed), sign_payload(c, md.signed)])
    result = check_threshold(root, "targets", md.signed, md.signatures)
    assert (result.distinct, result.unknown) == (1, [c.public_key.keyid])


def test_merge_keeps_existing_and_refuses_conflicts(online_offline) -> None:
    online, offline = online_offline
    md = make_targets(["a-12"])
    first = sign_payload(online, md.signed)
    merge_signatures(md, [first])
    merge_signatures(md, [sign_payload(offline, md.signed), first])
    assert set(md.signatures) == {online.public_key.keyid, offline.public_key.keyid}
    forged = Signature(online.public_key.keyid, "00" * 64)
    with pytest.raises(DuplicateSignatureError):
        merge_signatures(md, [forged])


def test_a_signature_that_does_not_verify_is_never_returned(online_offline) -> None:
    online, offline = online_offline

    class MismatchedSigner(CryptoSigner):
        """A token that signs with one key but claims another: must be caught."""

        @property
        def public_key(self) -> SSlibKey:
            return offline.public_key

    broken = MismatchedSigner(online._private_key, online.public_key)
    with pytest.raises(SigningError, match="did not verify"):
        sign_payload(broken, {"a": 1})


def test_key_ids_are_tuf_spec_ids(ed25519_signers) -> None:
    key = ed25519_signers[0].public_key
    assert key.keyid == tuf_keyid(**key_to_dict(key))
