"""Reviewing a signing request: everything ``sign`` checks, and what the officer sees.

:func:`review_request` reads only. It parses the request strictly, rebuilds delta
payloads from the payloads this appliance signed before, verifies the operator's
GnuPG signature against the trusted operators, builds the root for a ceremony, runs
the policy, and returns a :class:`Review`: the summary the officer reads (purpose,
versions, expiry, targets added/removed/changed, what the revert pins, the keys that
will sign, the request digest) and every reason to refuse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from wavesign.shared.bundles import SigningRequest
from wavesign.shared.canonical import digest
from wavesign.shared.delta import resolve_payloads
from wavesign.shared.errors import WavesignError
from wavesign.shared.gpg import GpgError

from .appliance import Appliance
from .ceremony import build_root, check_root_proposal, root_signing_keyids
from .policy import PolicyInput, evaluate, parse_expires, warn_missing_production

__all__ = [
    "OperatorCheck",
    "PayloadSummary",
    "Review",
    "ReviewError",
    "TargetLine",
    "group_digest",
    "review_request",
]


class ReviewError(WavesignError):
    """The request is refused before it can even be summarised."""


def group_digest(hex_digest: str) -> str:
    """``abcd efgh ...``: easy to compare aloud with the operator's screen."""
    return " ".join(hex_digest[i : i + 4] for i in range(0, len(hex_digest), 4))


@dataclass(frozen=True)
class TargetLine:
    """One target as the officer sees it."""

    name: str
    hardware_ids: tuple[str, ...]
    version: str
    sha256: str

    @classmethod
    def from_entry(cls, name: str, entry: Any) -> TargetLine:
        entry = entry if isinstance(entry, dict) else {}
        custom = entry.get("custom") if isinstance(entry.get("custom"), dict) else {}
        hashes = entry.get("hashes") if isinstance(entry.get("hashes"), dict) else {}
        hwids: list[Any] = custom.get("hardwareIds") or []
        if not isinstance(hwids, list):
            hwids = []
        return cls(
            name,
            tuple(str(h) for h in hwids),
            str(custom.get("version", "?")),
            str(hashes.get("sha256", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "hardware_ids": list(self.hardware_ids),
            "version": self.version,
            "sha256": self.sha256,
        }

    def render(self) -> str:
        return (
            f"{self.name}  hw={','.join(self.hardware_ids) or '-'}  "
            f"version={self.version}  sha256={self.sha256[:12]}"
        )


@dataclass(frozen=True)
class PayloadSummary:
    """One payload: versions, expiry, and its change against the production targets."""

    name: str
    role: str
    sha256: str
    version_old: int | None
    version_new: int | None
    expires: str
    expires_in_days: int | None
    targets: int
    added: tuple[TargetLine, ...] = ()
    removed: tuple[TargetLine, ...] = ()
    changed: tuple[TargetLine, ...] = ()
    keyids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "sha256": self.sha256,
            "version_old": self.version_old,
            "version_new": self.version_new,
            "expires": self.expires,
            "expires_in_days": self.expires_in_days,
            "targets": self.targets,
            "added": [t.to_dict() for t in self.added],
            "removed": [t.to_dict() for t in self.removed],
            "changed": [t.to_dict() for t in self.changed],
            "keyids": list(self.keyids),
        }


@dataclass(frozen=True)
class OperatorCheck:
    """Who signed the request, and whether that is acceptable."""

    signed: bool
    trusted: bool
    fingerprint: str | None = None
    user_id: str | None = None
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "signed": self.signed,
            "trusted": self.trusted,
            "fingerprint": self.fingerprint,
            "user_id": self.user_id,
            "warning": self.warning,
        }


@dataclass(frozen=True)
class Review:
    """The outcome of reviewing one request."""

    request: SigningRequest  # every payload resolved to full form
    request_sha256: str
    operator: OperatorCheck
    payloads: tuple[PayloadSummary, ...]
    confirmation: str
    signing_keys: tuple[tuple[str, str], ...]  # (payload name, key id)
    to_sign: dict[str, dict[str, Any]]  # payload name -> the signed object to sign
    production: dict[str, Any] | None
    previous_root: dict[str, Any] | None = None
    reasons: tuple[str, ...] = ()
    root_keys_added: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: What the officer must weigh before confirming; unlike reasons, not a refusal.
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.reasons

    @property
    def tag(self) -> str | None:
        return self.request.purpose.tag

    def to_dict(self, raw: bool = False) -> dict[str, Any]:
        purpose = self.request.purpose
        revert = next((p for p in self.payloads if p.name == "revert"), None)
        data: dict[str, Any] = {
            "ok": self.ok,
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
            "request_id": self.request.id,
            "factory": self.request.factory,
            "created": self.request.created,
            "purpose": purpose.to_dict(),
            "summary": purpose.describe(),
            "tag": purpose.tag,
            "ci_version": purpose.ci_version,
            "request_sha256": self.request_sha256,
            "request_sha256_groups": group_digest(self.request_sha256),
            "operator": self.operator.to_dict(),
            "production": {
                "version": self.request.context.production_version,
                "sha256": self.request.context.production_sha256,
            },
            "payloads": [p.to_dict() for p in self.payloads],
            "revert": None
            if revert is None
            else {
                "pins": [
                    TargetLine.from_entry(n, e).to_dict()
                    for n, e in sorted(self.to_sign["revert"].get("targets", {}).items())
                ],
                "for": "the devices this wave is rolled out to, if the wave is canceled",
            },
            "signing_keys": [{"payload": p, "keyid": k} for p, k in self.signing_keys],
            "confirmation": self.confirmation,
        }
        if purpose.kind == "root":
            data["root"] = _root_summary(self.to_sign["root"])
        if raw:
            data["raw"] = {name: signed for name, signed in self.to_sign.items()}
        return data


def _root_summary(root: dict[str, Any]) -> dict[str, Any]:
    roles = root.get("roles", {})
    return {
        "version": root.get("version"),
        "expires": root.get("expires"),
        "consistent_snapshot": root.get("consistent_snapshot"),
        "roles": {
            name: {"keyids": list(role.get("keyids", [])), "threshold": role.get("threshold")}
            for name, role in sorted(roles.items())
        },
    }


def _summarise(
    name: str,
    role: str,
    signed: dict[str, Any],
    base: dict[str, Any] | None,
    keyids: tuple[str, ...],
    now: datetime,
) -> PayloadSummary:
    expires = str(signed.get("expires", ""))
    when = parse_expires(expires)
    days = (when - now).days if when is not None else None
    new_targets = signed.get("targets", {}) if role == "targets" else {}
    old_targets = (base or {}).get("targets", {}) if role == "targets" else {}
    lines = TargetLine.from_entry
    return PayloadSummary(
        name=name,
        role=role,
        sha256=digest(signed),
        version_old=(base or {}).get("version"),
        version_new=signed.get("version"),
        expires=expires,
        expires_in_days=days,
        targets=len(new_targets),
        added=tuple(lines(n, e) for n, e in sorted(new_targets.items()) if n not in old_targets),
        removed=tuple(lines(n, e) for n, e in sorted(old_targets.items()) if n not in new_targets),
        changed=tuple(
            lines(n, e)
            for n, e in sorted(new_targets.items())
            if n in old_targets and old_targets[n] != e
        ),
        keyids=keyids,
    )


def _check_operator(
    appliance: Appliance, request: SigningRequest
) -> tuple[OperatorCheck, list[str]]:
    allow_unsigned = appliance.home.config.allow_unsigned_requests
    if request.operator_signature is None:
        warning = "UNSIGNED REQUEST: no operator signature"
        if allow_unsigned:
            return OperatorCheck(False, False, warning=warning + " (allowed by this home)"), []
        return OperatorCheck(False, False, warning=warning), [
            "the request carries no operator signature"
        ]
    try:
        verified = appliance.verify_operator_signature(
            request.signing_bytes(), request.operator_signature
        )
    except GpgError as exc:
        unknown = "unknown GnuPG key" in str(exc) or "no trusted operator" in str(exc)
        if unknown and allow_unsigned:
            warning = f"UNKNOWN OPERATOR: {exc} (allowed by this home)"
            return OperatorCheck(True, False, warning=warning), []
        if unknown:
            return OperatorCheck(True, False, warning=str(exc)), [
                f"the operator signature is not by a trusted operator: {exc}"
            ]
        # A signature that does not verify is never acceptable, whatever the home allows.
        raise ReviewError(f"operator signature does not cover this request: {exc}") from None
    return OperatorCheck(True, True, verified.fingerprint, verified.username), []


def review_request(
    appliance: Appliance, data: bytes, *, now: datetime, again: bool = False
) -> Review:
    """Check ``data`` (a signing request) and summarise it; raises on unusable input."""
    parsed = SigningRequest.from_bytes(data)
    request = resolve_payloads(parsed, appliance.lookup_base)
    request_sha256 = request.digest()
    operator, reasons = _check_operator(appliance, request)
    context = request.context
    production = (
        appliance.lookup_base(context.production_sha256) if context.production_sha256 else None
    )
    held = appliance.held_keyids()
    purpose = request.purpose
    to_sign = {p.name: p.full() for p in request.payloads}
    previous_root = None
    signing_keys: list[tuple[str, str]] = []
    keys_added: dict[str, dict[str, Any]] = {}
    confirmation_version = purpose.root_version
    if purpose.kind == "root":
        proposal = request.payload("root").full()
        if context.root_version > 0:
            previous_root = appliance.signed_root(context.root_version)
        reasons += check_root_proposal(proposal, previous_root, context.root_version)
        if purpose.root_version is not None and proposal.get("version") != purpose.root_version:
            reasons.append(
                f"the purpose names root v{purpose.root_version}, "
                f"the payload is v{proposal.get('version')}"
            )
        root_keys = [k.public for k in appliance.keystore.keys_for("root")]
        targets_keys = [k.public for k in appliance.keystore.keys_for("targets")]
        try:
            to_sign["root"] = build_root(proposal, root_keys, targets_keys)
        except WavesignError as exc:
            reasons.append(str(exc))
        else:
            all_root = [k.keyid for k in appliance.keystore.all_keys() if k.role == "root"]
            signing_keys = [
                ("root", k) for k in root_signing_keyids(to_sign["root"], previous_root, all_root)
            ]
            keys_added = {
                k.keyid: to_sign["root"]["keys"][k.keyid]
                for k in [*root_keys, *targets_keys]
                if k.keyid in to_sign["root"]["keys"]
            }
        confirmation_version = to_sign["root"].get("version")
    else:
        for payload in request.payloads:
            signing_keys += [(payload.name, keyid) for keyid in payload.keyids]
    already = appliance.journal.find_request(request_sha256)
    signed_versions: tuple[int, ...] = ()
    if purpose.tag is not None:
        entries = appliance.journal.entries()
        signed_versions = tuple(
            record.version
            for entry in entries
            if entry.tag == purpose.tag and not (again and entry.request_sha256 == request_sha256)
            for record in entry.payloads
            if record.role == "targets"
        )
    reasons += evaluate(
        PolicyInput(
            request=request,
            production=production,
            held_keys=held,
            signed_versions=signed_versions,
            already_signed=bool(already),
            again=again,
            now=now,
            max_expiry_days=appliance.home.config.max_expiry_days,
        )
    )
    summaries = tuple(
        _summarise(
            p.name,
            p.role,
            to_sign[p.name],
            production if p.role == "targets" else previous_root,
            tuple(k for n, k in signing_keys if n == p.name),
            now,
        )
        for p in request.payloads
    )
    return Review(
        request=request,
        request_sha256=request_sha256,
        operator=operator,
        payloads=summaries,
        confirmation=purpose.confirmation_text(confirmation_version),
        signing_keys=tuple(signing_keys),
        to_sign=to_sign,
        production=production,
        previous_root=previous_root,
        reasons=tuple(dict.fromkeys(reasons)),
        root_keys_added=keys_added,
        warnings=tuple(warn_missing_production(request, signed_versions)),
    )
