"""Root chains: each root version must follow from the one before it.

Root N+1 is trusted only when a threshold of root N's root keys *and* a threshold of
its own root keys signed it, and its version is exactly N+1 (TUF spec 5.3.4).
"""

from __future__ import annotations

from collections.abc import Sequence

from tuf.api.metadata import Metadata, Root

from .errors import RootChainError, ThresholdError
from .signing import check_threshold

__all__ = ["verify_root_chain", "verify_root_update"]


def verify_root_update(previous: Metadata[Root] | None, new: Metadata[Root]) -> None:
    """Check that ``new`` follows ``previous`` (or is a self-signed first root)."""
    if not isinstance(new.signed, Root):
        raise RootChainError(f"expected root metadata, got {new.signed.type}")
    version = new.signed.version
    if previous is not None and version != previous.signed.version + 1:
        raise RootChainError(
            f"root version {version} does not follow root version {previous.signed.version}"
        )
    checks = [("its own", new.signed)]
    if previous is not None:
        checks.insert(0, (f"root v{previous.signed.version}'s", previous.signed))
    for label, trusted in checks:
        result = check_threshold(trusted, Root.type, new.signed, new.signatures)
        if not result.ok:
            raise RootChainError(
                f"root v{version} is not signed by a threshold of {label} root keys: "
                + str(ThresholdError("root", result.distinct, result.threshold))
            )


def verify_root_chain(
    roots: Sequence[Metadata[Root]], trusted: Metadata[Root] | None = None
) -> Metadata[Root]:
    """Walk ``roots`` in version order and return the newest verified root.

    Without ``trusted`` the first root must be self-signed to threshold (trust on
    first use). With it, the chain starts from ``trusted`` and ``roots`` must carry on
    from ``trusted``'s version; roots at or below it must be byte-for-byte the same.
    """
    ordered = sorted(roots, key=lambda md: md.signed.version)
    if not ordered:
        raise RootChainError("no root metadata to verify")
    current = trusted
    if current is None:
        verify_root_update(None, ordered[0])
        current = ordered[0]
        ordered = ordered[1:]
    else:
        verify_root_update(None, current)
    for md in ordered:
        if md.signed.version <= current.signed.version:
            if md.signed.version == current.signed.version and md.signed != current.signed:
                raise RootChainError(
                    f"root v{md.signed.version} differs from the trusted root of that version"
                )
            continue
        verify_root_update(current, md)
        current = md
    return current
