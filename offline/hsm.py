"""PKCS#11 keys (YubiKey, HSM, SoftHSM) through securesystemslib's ``HSMSigner``.

The private key never leaves the token; the keystore keeps only the signer URI
(``hsm:<CKA_ID>?label=<token>``) and the public key. ``$PYKCS11LIB`` names the PKCS#11
module, as securesystemslib expects. HSMSigner signs ECDSA P-256/P-384 only, and needs
``python-pkcs11`` (securesystemslib's ``hsm`` extra).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from securesystemslib.signer import HSMSigner, Signer, SSlibKey
from wavesign.shared.errors import WavesignError
from wavesign.shared.keys import with_tuf_keyid

__all__ = ["HsmError", "hsm_signer", "import_hsm_key"]


class HsmError(WavesignError):
    """The PKCS#11 token or key cannot be used."""


def import_hsm_key(
    hsm_keyid: int, token_label: str | None, pin: Callable[[str], str] | None
) -> tuple[str, SSlibKey]:
    """The signer URI and TUF public key of the token's key ``hsm_keyid``."""
    try:
        uri, public = HSMSigner.import_(hsm_keyid, token_label, pin)
    except Exception as exc:  # python-pkcs11 and securesystemslib raise many types
        raise HsmError(f"cannot read PKCS#11 key {hsm_keyid}: {exc}") from None
    return uri, with_tuf_keyid(public)


class _KeyidSigner(Signer):
    """Wraps HSMSigner so its signatures carry the TUF-spec key id."""

    def __init__(self, inner: HSMSigner, public: SSlibKey) -> None:
        self._inner = inner
        self._public = public

    @property
    def public_key(self) -> SSlibKey:
        return self._public

    def sign(self, payload: bytes) -> Any:
        try:
            signature = self._inner.sign(payload)
        except Exception as exc:
            raise HsmError(f"the PKCS#11 token did not sign: {exc}") from None
        signature.keyid = self._public.keyid
        return signature

    @classmethod
    def from_priv_key_uri(
        cls, priv_key_uri: str, public_key: Any, secrets_handler: Any = None
    ) -> Any:
        raise NotImplementedError


def hsm_signer(uri: str, public: SSlibKey, pin: Callable[[str], str] | None) -> Signer:
    """A signer for a stored PKCS#11 key; the PIN is asked when signing."""
    if pin is None:
        raise HsmError("a PKCS#11 key needs a PIN handler")
    try:
        inner = HSMSigner.from_priv_key_uri(uri, public, pin)
    except Exception as exc:
        raise HsmError(f"cannot open PKCS#11 key {uri}: {exc}") from None
    assert isinstance(inner, HSMSigner)
    return _KeyidSigner(inner, public)
