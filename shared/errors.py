"""Exceptions raised by wavesign.

Every failure that a user can cause is a :class:`WavesignError`. Its ``str()`` is one
line that names what was wrong and where; the command-line interfaces print it as
``error: <message>`` and exit 1. Anything else escaping is a bug.
"""

from __future__ import annotations


class WavesignError(Exception):
    """Base class: a refused input or a failed check, explained in one line."""

    def __str__(self) -> str:
        # One line, always: CLIs print this verbatim after "error: ".
        return " ".join(super().__str__().split())


class CanonicalJSONError(WavesignError):
    """A value cannot be written as canonical JSON (a float, a non-str key, ...)."""


class KeyFileError(WavesignError):
    """A key file cannot be read: truncated, altered, or of an unknown format."""


class WrongPassphraseError(KeyFileError):
    """The passphrase does not open this key file."""


class UnsupportedKeyTypeError(WavesignError):
    """A key type or scheme that wavesign does not sign with."""


class SigningError(WavesignError):
    """A freshly made signature did not verify: nothing signed may be used."""


class SignatureMismatchError(WavesignError):
    """A signature does not verify against the key and bytes it claims."""


class ThresholdError(WavesignError):
    """Fewer distinct keys signed a role than its threshold requires."""

    def __init__(self, role: str, verified: int, threshold: int, detail: str = "") -> None:
        self.role = role
        self.verified = verified
        self.threshold = threshold
        message = f"{role} was signed by {verified}/{threshold} distinct keys"
        super().__init__(f"{message}: {detail}" if detail else message)


class RootChainError(WavesignError):
    """A root version does not follow from the one before it."""


class DuplicateSignatureError(WavesignError):
    """Two different signatures for one key id in the same metadata."""
