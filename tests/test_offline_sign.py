"""The appliance end to end, without the broker: review, sign, verify with python-tuf."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from wavesign.shared.bundles import Payload, SigningResponse
from wavesign.shared.canonical import digest
from wavesign.shared.gpg import GnuPG

from tests.test_offline_support import (
    make_rig,
    new_target,
    operator_sign,
    production_targets,
    run_cli,
    targets_signed,
    verify_with_tuf,
    wave_request,
)


def test_populate_then_wave_over_20_targets_signs_and_verifies_with_tuf(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, officer=True)
    # 1. The first wave populates production: 20 targets of build 12, revert pins nothing.
    populate_w = targets_signed(production_targets(20, "12"), version=1)
    populate = wave_request(
        "populate-targets",
        "production",
        12,
        populate_w,
        production_payload=None,
        keyids=[rig.targets_keyid],
    )
    populate = operator_sign(populate, rig.operator_home, rig.operator_fpr)
    path = rig.write_request(populate, "populate.request.json")
    code, out, err = run_cli(
        ["sign", str(path), "--confirm", "populate-targets", "--out", str(tmp_path / "p.json")],
        rig.env,
    )
    assert code == 0, err
    # 2. The wave: 1 new target over the 20 production targets, the request as a delta.
    wave_w = targets_signed({**populate_w["targets"], **new_target("42")}, version=3)
    request = rig.wave_of(wave_w, populate_w)
    delta = request.with_payloads(
        [p.as_delta_against(populate_w) if p.name == "wave" else p for p in request.payloads]
    )
    assert delta.payload("wave").delta is not None
    path = rig.write_request(delta, "wave.request.json")

    code, out, err = run_cli(["review", str(path), "--json"], rig.env)
    assert code == 0, err
    summary = json.loads(out)
    wave = next(p for p in summary["payloads"] if p["name"] == "wave")
    assert [t["name"] for t in wave["added"]] == ["board0-lmp-42"]
    assert wave["added"][0]["hardware_ids"] == ["board0"]
    assert wave["removed"] == [] and wave["changed"] == []
    assert (wave["version_old"], wave["version_new"]) == (1, 3)
    assert 363 <= wave["expires_in_days"] <= 365
    assert summary["operator"]["trusted"] is True
    assert summary["operator"]["fingerprint"] == rig.operator_fpr
    assert summary["request_sha256"] == request.digest()
    assert summary["confirmation"] == "v2.0-update"
    assert len(summary["revert"]["pins"]) == 20

    response_path = tmp_path / "wave.response.json"
    code, out, err = run_cli(
        ["sign", str(path), "--confirm", "v2.0-update", "--out", str(response_path)], rig.env
    )
    assert code == 0, err
    response = SigningResponse.from_bytes(response_path.read_bytes().strip())
    assert response.request_sha256 == request.digest()
    offline_key = rig.appliance.keystore.find(rig.targets_keyid)
    assert offline_key is not None
    for name, signed in (("wave", wave_w), ("revert", request.payload("revert").full())):
        entries = [e for e in response.signatures if e.payload == name]
        assert [e.sha256 for e in entries] == [digest(signed)]
        verify_with_tuf(signed, response, name, offline_key.public, rig.online_targets)
    # The officer's attestation covers the response.
    assert response.attestation is not None
    assert rig.officer_home is not None
    verified = GnuPG(rig.officer_home).verify_detached(
        response.signing_bytes(), response.attestation
    )
    assert verified.fingerprint == rig.officer_fpr
    # The journal has both ceremonies, chained, and the response points at its line.
    entries = rig.appliance.journal.entries()
    assert [e.confirmation for e in entries] == ["populate-targets", "v2.0-update"]
    assert entries[1].response_sha256 == response.digest()
    assert response.journal_head == entries[1].prev == entries[0].hash()
    # Review of the same request now says it was signed already.
    code, _, err = run_cli(["review", str(path)], rig.env)
    assert code == 1 and "already signed" in err


def test_review_prints_the_human_summary(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    production = rig.production()
    path = rig.write_request(rig.signed_wave(production))
    code, out, err = run_cli(["review", str(path)], rig.env)
    assert code == 0, err
    assert "purpose: wave v2.0-update (tag production, CI version 42)" in out
    assert "version 1 -> 2, 21 targets" in out
    assert "+ board0-lmp-42  hw=board0  version=42  sha256=4f4f4f4f4f4f" in out
    assert "pins the 20 production targets" in out
    assert "to sign, type: v2.0-update" in out
    code, raw_out, _ = run_cli(["review", str(path), "--json", "--raw"], rig.env)
    assert code == 0
    raw = json.loads(raw_out)["raw"]
    assert raw["wave"]["targets"]["board0-lmp-42"]["custom"]["version"] == "42"
    assert len(raw["revert"]["targets"]) == 20
    digest_line = next(line for line in out.splitlines() if line.startswith("request digest:"))
    groups = digest_line.split(":", 1)[1].split()
    assert len(groups) == 16 and all(len(g) == 4 for g in groups)


def test_sign_as_a_real_subprocess(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    production = rig.production()
    request = rig.signed_wave(production)
    path = rig.write_request(request)
    response_path = tmp_path / "response.json"
    exe = Path(sys.executable).with_name("wavesign-offline")
    result = subprocess.run(
        [exe, "sign", str(path), "--confirm", "v2.0-update", "--out", str(response_path)],
        env=rig.env | {"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    response = SigningResponse.from_bytes(response_path.read_bytes().strip())
    key = rig.appliance.keystore.find(rig.targets_keyid)
    assert key is not None
    verify_with_tuf(
        request.payload("wave").full(), response, "wave", key.public, rig.online_targets
    )
    # Without --confirm and without a terminal, sign refuses rather than prompting.
    again = subprocess.run(
        [exe, "sign", str(path), "--again", "--out", str(tmp_path / "r2.json")],
        env=rig.env | {"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert again.returncode == 1
    assert again.stderr.startswith("error: confirmation needed")
    assert len(again.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r2.json").exists()


def test_sign_again_is_allowed_only_with_again(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    path = rig.write_request(rig.signed_wave(rig.production()))
    args = ["sign", str(path), "--confirm", "v2.0-update", "--out", str(tmp_path / "r.json")]
    assert run_cli(args, rig.env)[0] == 0
    code, _, err = run_cli(args, rig.env)
    assert code == 1 and "already signed" in err
    code, _, err = run_cli([*args, "--again"], rig.env)
    assert code == 0, err
    assert len(rig.appliance.journal.entries()) == 2


def test_rsa_targets_key_signs_pss_that_tuf_verifies(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, targets_type="rsa")
    request = rig.signed_wave(rig.production())
    path = rig.write_request(request)
    out = tmp_path / "r.json"
    code, _, err = run_cli(
        ["sign", str(path), "--confirm", "v2.0-update", "--out", str(out)], rig.env
    )
    assert code == 0, err
    key = rig.appliance.keystore.find(rig.targets_keyid)
    assert key is not None and key.public.scheme == "rsassa-pss-sha256"
    response = SigningResponse.from_bytes(out.read_bytes().strip())
    verify_with_tuf(
        request.payload("revert").full(), response, "revert", key.public, rig.online_targets
    )


def test_renewal_signs_same_content_at_higher_version(tmp_path: Path) -> None:
    from wavesign.shared.bundles import Context, Purpose, SigningRequest

    rig = make_rig(tmp_path)
    production = rig.production()
    renewed = dict(production, version=2)
    request = SigningRequest(
        id="renew-1",
        factory="acme",
        created="2026-01-01T00:00:00Z",
        purpose=Purpose("renew", tag="production"),
        payloads=(Payload.create("renew", "targets", renewed, [rig.targets_keyid]),),
        context=Context(1, production["version"], digest(production)),
    )
    path = rig.write_request(operator_sign(request, rig.operator_home, rig.operator_fpr))
    out = tmp_path / "r.json"
    code, _, err = run_cli(
        ["sign", str(path), "--confirm", "renew-production", "--out", str(out)], rig.env
    )
    assert code == 0, err
    key = rig.appliance.keystore.find(rig.targets_keyid)
    assert key is not None
    verify_with_tuf(
        renewed,
        SigningResponse.from_bytes(out.read_bytes().strip()),
        "renew",
        key.public,
        rig.online_targets,
    )


def test_a_second_first_wave_of_a_tag_is_reviewed_with_a_warning(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)

    def first_wave(name: str, version: int) -> Path:
        signed = targets_signed(production_targets(3, "12"), version=version)
        request = wave_request(
            name, "production", 12, signed, production_payload=None, keyids=[rig.targets_keyid]
        )
        request = operator_sign(request, rig.operator_home, rig.operator_fpr)
        return rig.write_request(request, f"{name}.request.json")

    first = first_wave("populate-a", 1)
    code, out, err = run_cli(["review", str(first), "--json"], rig.env)
    assert code == 0, err
    assert json.loads(out)["warnings"] == []
    code, _, err = run_cli(
        ["sign", str(first), "--confirm", "populate-a", "--out", str(tmp_path / "a.json")], rig.env
    )
    assert code == 0, err

    # The broker claims again that the tag has no production: signable (the first
    # wave may have been canceled), but the officer is told what was signed before.
    second = first_wave("populate-b", 3)
    code, out, err = run_cli(["review", str(second), "--json"], rig.env)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["ok"] is True
    [warning] = summary["warnings"]
    assert "signed targets for it before (versions 1, 2)" in warning
    code, out, err = run_cli(["review", str(second)], rig.env)
    assert code == 0, err
    assert "WARNING: the request says tag production has no production targets" in out
