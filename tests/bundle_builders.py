"""Realistic fioctl-style targets and signing requests for tests."""

from __future__ import annotations

import hashlib
from typing import Any

from wavesign.shared.bundles import Context, Payload, Purpose, SigningRequest


def ci_target(name: str, version: int, hardware_id: str = "intel-corei7-64") -> dict[str, Any]:
    """A target entry shaped like the ones Foundries CI publishes."""
    seed = f"{name}-{version}-{hardware_id}".encode()
    return {
        "length": 1000 + version,
        "hashes": {"sha256": hashlib.sha256(seed).hexdigest()},
        "custom": {
            "hardwareIds": [hardware_id],
            "tags": ["production"],
            "targetFormat": "OSTREE",
            "version": str(version),
            "name": name,
            "uri": f"https://ci.example.test/builds/{version}",
            "createdAt": "2026-11-01T10:00:00Z",
            "updatedAt": "2026-11-01T10:00:00Z",
            "containers-sha": hashlib.sha1(seed).hexdigest(),
            "docker_compose_apps": {
                "shellhttpd": {"uri": f"hub.example.test/app@sha256:{version}"}
            },
        },
    }


def targets_signed(entries: dict[str, Any], version: int, expires: str = "2027-12-01T00:00:00Z"):
    return {
        "_type": "targets",
        "spec_version": "1.0.31",
        "version": version,
        "expires": expires,
        "targets": entries,
    }


def production_with(count: int, hardware_id: str = "intel-corei7-64") -> dict[str, Any]:
    return {f"{hardware_id}-lmp-{v}": ci_target(f"{hardware_id}-lmp", v, hardware_id)
            for v in range(1, count + 1)}  # fmt: skip


def wave_request(
    production: dict[str, Any],
    new: dict[str, Any],
    *,
    version: int,
    keyids: tuple[str, ...] = ("ab" * 32,),
    wave: str = "v2.0-update",
    ci_version: int = 42,
    request_id: str = "req-1",
) -> tuple[SigningRequest, dict[str, Any]]:
    """A wave request (W = production + new at ``version``, R = production at version+1).

    Returns the request and the base production ``signed`` object it is relative to.
    """
    base = targets_signed(dict(production), version - 1)
    wave_signed = targets_signed({**production, **new}, version)
    revert_signed = targets_signed(dict(production), version + 1)
    request = SigningRequest(
        id=request_id,
        factory="acme",
        created="2026-12-01T12:00:00Z",
        purpose=Purpose("wave", wave=wave, tag="production", ci_version=ci_version),
        payloads=(
            Payload.create("wave", "targets", wave_signed, keyids),
            Payload.create("revert", "targets", revert_signed, keyids),
        ),
        context=Context(root_version=1, production_version=version - 1,
                        production_sha256=Payload.create("wave", "targets", base, keyids).sha256),
    )  # fmt: skip
    return request, base
