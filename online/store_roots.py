"""Root ceremonies and production renewals: the requests beside waves, and their checks.

The pure part: :func:`root_proposal` builds what the broker proposes (its online
public keys and the policy; the appliance adds its root and offline targets keys), and
:func:`check_ceremony_root` decides whether a root returned by the appliance is one the
broker can work with. :func:`countersign` checks a targets payload's offline
signatures against the root and adds the online one (waves and renewals alike).

The store methods that use them live in :mod:`wavesign.online.store_waves`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from securesystemslib.signer import Key, Signature, Signer
from tuf.api.metadata import Metadata, Role, Root
from wavesign.shared.bundles import Payload, SigningResponse
from wavesign.shared.canonical import canonical_bytes, digest
from wavesign.shared.keys import public_identity
from wavesign.shared.signing import check_threshold, sign_payload

from .store import InvalidInputError, StateError

__all__ = [
    "PRODUCTION_TARGETS_THRESHOLD",
    "check_ceremony_root",
    "check_restored_root",
    "countersign",
    "root_proposal",
]

#: Production targets need the online key and one offline key.
PRODUCTION_TARGETS_THRESHOLD = 2


def root_proposal(
    online: Mapping[str, Key], *, version: int, expires: str, root_threshold: int
) -> dict[str, Any]:
    """The ``signed`` root the broker proposes: online keys and policy, no offline keys.

    The appliance fills in the root role's keys (``keyids`` is empty here) and adds its
    offline targets key(s); ``online`` maps "targets", "snapshot", "timestamp" to keys.
    """
    if root_threshold < 1:
        raise InvalidInputError("--root-threshold must be at least 1")
    root = Root(version=version, consistent_snapshot=True)
    root.roles["root"] = Role([], root_threshold)
    root.roles["targets"] = Role([], PRODUCTION_TARGETS_THRESHOLD)
    for role in ("targets", "snapshot", "timestamp"):
        root.add_key(online[role], role)
    signed = root.to_dict()
    signed["expires"] = expires
    return signed


def _identity_of(root: Root, keyid: str) -> str:
    return public_identity(root.keys[keyid])


def _role_problems(root: Root, online: Mapping[str, Key]) -> list[str]:
    """What is wrong with the online roles of ``root`` (empty when nothing is)."""
    problems: list[str] = []
    online_ids = {public_identity(k) for k in online.values()}
    for role in ("snapshot", "timestamp"):
        keyids = root.roles[role].keyids
        if keyids != [online[role].keyid] or _identity_of(root, keyids[0]) != public_identity(
            online[role]
        ):
            problems.append(f"its {role} role does not list exactly this broker's {role} key")
        elif root.roles[role].threshold != 1:
            problems.append(f"its {role} threshold is {root.roles[role].threshold}, not 1")
    targets = root.roles["targets"]
    ours = online["targets"]
    if ours.keyid not in targets.keyids or _identity_of(root, ours.keyid) != public_identity(ours):
        problems.append("its targets role does not list this broker's online targets key")
    offline = [k for k in targets.keyids if k != ours.keyid]
    posing = [k for k in offline if _identity_of(root, k) in online_ids]
    if posing:
        problems.append(
            f"its targets key {posing[0][:16]} is one of this broker's online keys, "
            "not an offline key"
        )
    elif not offline:
        problems.append("its targets role lists no offline targets key")
    if targets.threshold != PRODUCTION_TARGETS_THRESHOLD:
        problems.append(
            f"its targets threshold is {targets.threshold}, not {PRODUCTION_TARGETS_THRESHOLD}"
        )
    root_posing = [k for k in root.roles["root"].keyids if _identity_of(root, k) in online_ids]
    if root_posing:
        problems.append(f"its root key {root_posing[0][:16]} is one of this broker's online keys")
    return problems


def check_ceremony_root(
    new: Metadata[Root], proposal: Mapping[str, Any], online: Mapping[str, Key]
) -> None:
    """Refuse a ceremony's root that is not the proposal completed by the appliance.

    The version, expiry and root threshold are the proposal's; snapshot and timestamp
    are exactly the online keys; targets are the online key plus at least one offline
    key (never an online key under another id), threshold 2. Signatures are checked
    separately, as a root chain.
    """
    root = new.signed
    problems: list[str] = []
    if root.version != proposal.get("version"):
        problems.append(f"it is v{root.version}, the proposal was v{proposal.get('version')}")
    if root.to_dict().get("expires") != proposal.get("expires"):
        problems.append(
            f"it expires {root.to_dict().get('expires')}, the proposal said "
            f"{proposal.get('expires')}"
        )
    wanted = proposal.get("roles", {}).get("root", {}).get("threshold")
    if root.roles["root"].threshold != wanted:
        problems.append(f"its root threshold is {root.roles['root'].threshold}, not {wanted}")
    problems += _role_problems(root, online)
    if problems:
        raise InvalidInputError(f"root v{root.version} refused: {problems[0]}")


def check_restored_root(new: Metadata[Root], online: Mapping[str, Key]) -> None:
    """A root restored from elsewhere must still name this broker's online keys."""
    problems = _role_problems(new.signed, online)
    if problems:
        raise InvalidInputError(f"root v{new.signed.version} refused: {problems[0]}")


def parse_response_root(response: SigningResponse) -> Metadata[Root]:
    """The signed root a ceremony response carries, and its signature entries checked."""
    if response.root is None:
        raise InvalidInputError("the response to a root request carries no signed root")
    try:
        new = Metadata[Root].from_dict(copy.deepcopy(dict(response.root)))
    except Exception as exc:  # python-tuf raises several types for invalid metadata
        raise InvalidInputError(
            f"the response's root is not valid TUF root metadata ({exc})"
        ) from None
    if not isinstance(new.signed, Root):
        raise InvalidInputError("the response's root is not root metadata")
    root_sha256 = digest(new.signed.to_dict())
    for entry in response.signatures:
        if entry.payload != "root" or entry.sha256 != root_sha256:
            raise InvalidInputError(
                f"signature by {entry.keyid[:16]} is over another payload than the returned root"
            )
        held = new.signatures.get(entry.keyid)
        if held is None or held.signature != entry.sig:
            raise InvalidInputError(
                f"signature by {entry.keyid[:16]} is not among the returned root's signatures"
            )
    return new


def root_json(new: Metadata[Root]) -> str:
    """The stored (and published) bytes of a root: canonical JSON of the signed metadata."""
    return canonical_bytes(new.to_dict()).decode("utf-8")


def countersign(
    root: Root, payload: Payload, response: SigningResponse, online: Signer
) -> dict[str, Any]:
    """The payload's offline signatures checked, the online one added, threshold met.

    Returns the signed targets metadata document ``{"signatures", "signed"}``.
    """
    content = payload.full()
    sigs: dict[str, Signature] = {}
    for entry in response.signatures:
        if entry.payload != payload.name:
            continue
        if entry.sha256 != payload.sha256:
            raise InvalidInputError(
                f"signature by {entry.keyid[:16]} is over another {payload.name} "
                "payload than the request's"
            )
        sigs[entry.keyid] = Signature(entry.keyid, entry.sig)
    result = check_threshold(root, "targets", content, sigs)
    if result.failed or result.unknown:
        bad = (result.failed + result.unknown)[0]
        raise InvalidInputError(
            f"payload {payload.name}: signature by key {bad[:16]} does not verify "
            "against the root's targets keys"
        )
    online_sig = sign_payload(online, content)
    if online_sig.keyid in sigs:
        raise InvalidInputError(
            f"payload {payload.name}: the response carries a signature by the online "
            "targets key: only the broker signs with it"
        )
    sigs[online_sig.keyid] = online_sig
    result = check_threshold(root, "targets", content, sigs)
    if not result.ok:
        raise StateError(f"payload {payload.name}: {result.describe()}")
    return {
        "signatures": [{"keyid": k, "sig": sigs[k].signature} for k in sorted(sigs)],
        "signed": content,
    }


def signatures_for(response: SigningResponse, names: Sequence[str]) -> None:
    """Refuse signatures for payloads the request does not have."""
    for entry in response.signatures:
        if entry.payload not in names:
            raise InvalidInputError(
                f"signature by {entry.keyid[:16]} is for payload {entry.payload!r}, "
                f"which this request does not have"
            )
