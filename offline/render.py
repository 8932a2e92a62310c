"""The officer's view of a review: plain lines, with red where something is wrong."""

from __future__ import annotations

import json

import click

from .review import PayloadSummary, Review, TargetLine, group_digest

__all__ = ["render_review"]


def _red(text: str) -> str:
    return click.style(text, fg="red", bold=True)


def _payload_lines(summary: PayloadSummary, review: Review) -> list[str]:
    old = "none" if summary.version_old is None else str(summary.version_old)
    days = "?" if summary.expires_in_days is None else f"{summary.expires_in_days} days from now"
    head = f"payload {summary.name} ({summary.role}): version {old} -> {summary.version_new}"
    if summary.role == "targets":
        head += f", {summary.targets} targets"
    lines = [
        head,
        f"  expires {summary.expires} ({days})",
        f"  sha256 {summary.sha256}",
    ]
    if summary.name == "revert":
        pinned = review.to_sign["revert"].get("targets", {})
        lines.append(
            f"  pins the {len(pinned)} production targets for the devices this wave reaches, "
            "if the wave is canceled:"
        )
        for name, entry in sorted(pinned.items()):
            lines.append(f"    = {TargetLine.from_entry(name, entry).render()}")
        return lines
    for label, mark, items in (
        ("added", "+", summary.added),
        ("removed", "-", summary.removed),
        ("changed", "~", summary.changed),
    ):
        if summary.role == "targets":
            lines.append(f"  targets {label}: {len(items)}")
            for item in items:
                text = f"    {mark} {item.render()}"
                lines.append(_red(text) if mark == "-" else text)
    return lines


def render_review(review: Review, *, raw: bool = False) -> str:
    """The human summary: what changes, for whom, until when, signed by which keys."""
    request = review.request
    purpose = request.purpose
    lines = [
        f"request {request.id} from factory {request.factory}, created {request.created}",
        f"purpose: {purpose.describe()}",
    ]
    if purpose.tag is not None:
        lines.append(f"tag: {purpose.tag}")
    if purpose.ci_version is not None:
        lines.append(f"CI version: {purpose.ci_version}")
    context = request.context
    if context.production_version is not None:
        lines.append(
            f"production now: version {context.production_version} "
            f"(sha256 {str(context.production_sha256)[:16]})"
        )
    operator = review.operator
    if operator.trusted:
        lines.append(f"operator: {operator.user_id} ({operator.fingerprint})")
    else:
        lines.append(_red(f"operator: {operator.warning}"))
    for summary in review.payloads:
        lines += _payload_lines(summary, review)
    if purpose.kind == "root":
        root = review.to_sign["root"]
        lines.append(f"root v{root.get('version')} to sign, expires {root.get('expires')}:")
        for name, role in sorted(root.get("roles", {}).items()):
            keyids = ", ".join(
                k[:16] + ("*" if k in review.root_keys_added else "")
                for k in role.get("keyids", [])
            )
            lines.append(f"  {name}: threshold {role.get('threshold')} of [{keyids}]")
        lines.append(
            "  (* = a key held by this appliance; the others are the broker's online keys)"
        )
    lines.append("keys that will sign:")
    for payload, keyid in review.signing_keys:
        lines.append(f"  {payload}: {keyid}")
    lines.append(f"request digest: {group_digest(review.request_sha256)}")
    lines.append(f"to sign, type: {review.confirmation}")
    lines += [_red(f"WARNING: {warning}") for warning in review.warnings]
    if review.reasons:
        lines.append(_red("REFUSED:"))
        lines += [_red(f"  - {reason}") for reason in review.reasons]
    else:
        lines.append("policy: all checks pass")
    if raw:
        lines.append("raw payloads:")
        lines.append(json.dumps(review.to_sign, indent=2, sort_keys=True))
    return "\n".join(lines)
