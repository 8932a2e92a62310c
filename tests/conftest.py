"""Shared fixtures for the wavesign test suite."""

from __future__ import annotations

import pytest
from securesystemslib.signer import CryptoSigner
from wavesign.shared.keys import generate_signer


@pytest.fixture(scope="session")
def ed25519_signers() -> list[CryptoSigner]:
    """A few ed25519 signers, made once: key generation is not what these tests test."""
    return [generate_signer("ed25519") for _ in range(4)]


@pytest.fixture(scope="session")
def operator_gpg(tmp_path_factory: pytest.TempPathFactory):
    """A real GnuPG home holding the operator's signing key."""
    from tests.gpghelpers import make_gpg_identity

    return make_gpg_identity(tmp_path_factory.mktemp("gpg") / "operator", "Olivia Operator")


@pytest.fixture(scope="session")
def officer_gpg(tmp_path_factory: pytest.TempPathFactory):
    """A real GnuPG home holding the security officer's signing key."""
    from tests.gpghelpers import make_gpg_identity

    return make_gpg_identity(tmp_path_factory.mktemp("gpg") / "officer", "Sam Officer")
