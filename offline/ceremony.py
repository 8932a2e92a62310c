"""Root ceremonies: turning the broker's proposal into a root the appliance signs.

The broker proposes a root holding its online keys (targets, snapshot, timestamp)
and the policy (root threshold, expiry). The appliance adds its own active root keys
and offline targets keys, sets the production targets threshold to at least 2 (one
online plus one offline signature) and ``consistent_snapshot`` to true, and signs.
Root v1 is signed by the appliance's root keys; a rotation vN+1 by the root keys of
both vN and vN+1 that the appliance holds, as the TUF root chain requires.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from securesystemslib.signer import Key
from tuf.api.metadata import Root
from wavesign.shared.errors import WavesignError
from wavesign.shared.keys import key_from_dict, key_to_dict, public_identity

__all__ = [
    "CeremonyError",
    "build_root",
    "check_root_proposal",
    "root_signing_keyids",
]

ONLINE_ROLES = ("snapshot", "timestamp")


class CeremonyError(WavesignError):
    """The root proposal cannot be turned into a root this appliance would sign."""


def _role(signed: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    roles = signed.get("roles")
    role = roles.get(name) if isinstance(roles, Mapping) else None
    return role if isinstance(role, Mapping) else {}


def check_root_proposal(
    proposal: Mapping[str, Any], previous: Mapping[str, Any] | None, current_version: int
) -> list[str]:
    """Reasons the proposal cannot become the next root (empty if it can)."""
    reasons = []
    version = proposal.get("version")
    if version != current_version + 1:
        reasons.append(
            f"the proposal is root v{version}, but the current root is v{current_version}: "
            f"the next root must be v{current_version + 1}"
        )
    if current_version > 0 and previous is None:
        reasons.append(
            f"root v{current_version} was not signed by this appliance: it cannot sign v{version}"
        )
    if not _role(proposal, "targets").get("keyids"):
        reasons.append("the proposal names no online targets key")
    for name in ONLINE_ROLES:
        if not _role(proposal, name).get("keyids"):
            reasons.append(f"the proposal names no {name} key")
    return reasons


def _check_offline_signature_needed(
    keys: Mapping[str, Any], targets_role: Mapping[str, Any], offline_keyids: set[str]
) -> None:
    """Refuse a root whose targets threshold the broker's keys could meet on their own.

    The point of the appliance is that no production targets file is valid without an
    offline signature. A proposal naming two online targets keys with threshold 2 would
    quietly end that, so the keys this appliance does not hold (counted as distinct
    public keys) must stay below the threshold.
    """
    foreign = set()
    for keyid in targets_role.get("keyids") or []:
        if keyid in offline_keyids:
            continue
        try:
            foreign.add(public_identity(key_from_dict(keys[keyid])))
        except (KeyError, WavesignError):
            raise CeremonyError(
                f"the proposal's targets key {keyid[:16]} is missing or unreadable"
            ) from None
    threshold = int(targets_role.get("threshold", 2))
    if len(foreign) >= threshold:
        raise CeremonyError(
            f"the proposal's {len(foreign)} online targets keys could meet the targets threshold "
            f"of {threshold} without this appliance: production targets must need an offline "
            "signature"
        )


def build_root(
    proposal: Mapping[str, Any], root_keys: Iterable[Key], targets_keys: Iterable[Key]
) -> dict[str, Any]:
    """The root ``signed`` object: the proposal plus this appliance's keys."""
    signed = copy.deepcopy(dict(proposal))
    keys: dict[str, Any] = dict(signed.get("keys") or {})
    roles: dict[str, Any] = {k: dict(v) for k, v in (signed.get("roles") or {}).items()}
    roles.setdefault("root", {"keyids": [], "threshold": 1})
    root_keys, targets_keys = list(root_keys), list(targets_keys)
    if not root_keys:
        raise CeremonyError("this appliance holds no active root key")
    if not targets_keys:
        raise CeremonyError("this appliance holds no active offline targets key")
    for role_name, role_keys in (("root", root_keys), ("targets", targets_keys)):
        role = roles.setdefault(role_name, {"keyids": [], "threshold": 1})
        keyids = list(role.get("keyids") or [])
        for key in role_keys:
            keys[key.keyid] = key_to_dict(key)
            if key.keyid not in keyids:
                keyids.append(key.keyid)
        role["keyids"] = keyids
    roles["targets"]["threshold"] = max(2, int(roles["targets"].get("threshold", 2)))
    _check_offline_signature_needed(keys, roles["targets"], {k.keyid for k in targets_keys})
    if int(roles["root"].get("threshold", 1)) > len(root_keys):
        raise CeremonyError(
            f"root threshold {roles['root']['threshold']} is above the {len(root_keys)} "
            "root key(s) this appliance holds"
        )
    # The broker's proposal never chooses which root keys stay: only the appliance's own.
    roles["root"]["keyids"] = [k.keyid for k in root_keys]
    used = {keyid for role in roles.values() for keyid in role["keyids"]}
    signed["keys"] = {keyid: key for keyid, key in keys.items() if keyid in used}
    signed["roles"] = roles
    signed["consistent_snapshot"] = True
    try:
        return Root.from_dict(copy.deepcopy(signed)).to_dict()
    except Exception as exc:  # python-tuf raises several types for invalid metadata
        raise CeremonyError(f"the resulting root is not valid TUF metadata ({exc})") from None


def root_signing_keyids(
    new_root: Mapping[str, Any], previous: Mapping[str, Any] | None, held: Iterable[str]
) -> list[str]:
    """The held root keys that must sign: those of the new root and of the previous one."""
    wanted = list(_role(new_root, "root").get("keyids", []))
    if previous is not None:
        wanted += [k for k in _role(previous, "root").get("keyids", []) if k not in wanted]
    held_set = set(held)
    return [keyid for keyid in wanted if keyid in held_set]
