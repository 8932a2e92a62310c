"""Root ceremonies: root v1 from the broker's proposal, then a rotation to new keys."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signature
from tuf.api.metadata import Metadata, Root, Targets
from wavesign.shared.bundles import SigningResponse
from wavesign.shared.keys import generate_signer

from tests.test_offline_support import (
    Rig,
    make_rig,
    operator_sign,
    root_proposal,
    root_request,
    run_cli,
    state_of,
)


def _ceremony(rig: Rig, proposal: dict[str, Any], current: int, tmp: Path) -> SigningResponse:
    request = operator_sign(root_request(proposal, current), rig.operator_home, rig.operator_fpr)
    path = rig.write_request(request, f"root-v{proposal['version']}.request.json")
    code, out, err = run_cli(["review", str(path), "--json"], rig.env)
    assert code == 0, err
    assert json.loads(out)["confirmation"] == f"root-v{proposal['version']}"
    out_file = tmp / f"root-v{proposal['version']}.response.json"
    code, _, err = run_cli(
        ["sign", str(path), "--confirm", f"root-v{proposal['version']}", "--out", str(out_file)],
        rig.env,
    )
    assert code == 0, err
    return SigningResponse.from_bytes(out_file.read_bytes().strip())


def test_root_v1_ceremony_and_a_wave_under_it(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    snapshot, timestamp = generate_signer(), generate_signer()
    proposal = root_proposal(rig.online_targets, snapshot, timestamp)
    response = _ceremony(rig, proposal, 0, tmp_path)

    assert response.root is not None
    root_md = Metadata[Root].from_dict(copy.deepcopy(response.root))
    root = root_md.signed
    assert root.version == 1 and root.consistent_snapshot is True
    assert root.roles["root"].keyids == [rig.root_keyid]
    assert set(root.roles["targets"].keyids) == {
        rig.online_targets.public_key.keyid,
        rig.targets_keyid,
    }
    assert root.roles["targets"].threshold == 2
    assert root.roles["snapshot"].keyids == [snapshot.public_key.keyid]
    assert root.roles["timestamp"].keyids == [timestamp.public_key.keyid]
    assert set(response.keys) == {rig.root_keyid, rig.targets_keyid}
    # python-tuf itself: the root is signed by its own root threshold.
    root.verify_delegate("root", root_md.signed_bytes, root_md.signatures)
    assert [e.keyid for e in response.signatures] == [rig.root_keyid]

    # A wave signed afterwards meets the targets threshold of this very root.
    production = rig.production()
    request = rig.signed_wave(production)
    path = rig.write_request(request, "wave.json")
    out = tmp_path / "wave.response.json"
    code, _, err = run_cli(
        ["sign", str(path), "--confirm", "v2.0-update", "--out", str(out)], rig.env
    )
    assert code == 0, err
    wave_response = SigningResponse.from_bytes(out.read_bytes().strip())
    md = Metadata(Targets.from_dict(copy.deepcopy(request.payload("wave").full())))
    for entry in wave_response.signatures:
        if entry.payload == "wave":
            md.signatures[entry.keyid] = Signature(entry.keyid, entry.sig)
    md.sign(rig.online_targets, append=True)
    root.verify_delegate("targets", md.signed_bytes, md.signatures)


def test_rotation_to_new_root_and_targets_keys_is_signed_by_old_and_new(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    snapshot, timestamp = generate_signer(), generate_signer()
    v1 = _ceremony(rig, root_proposal(rig.online_targets, snapshot, timestamp), 0, tmp_path)
    assert v1.root is not None
    old_root, old_targets = rig.root_keyid, rig.targets_keyid

    new_ids = {}
    for role in ("root", "targets"):
        code, out, err = run_cli(["keys", "generate", "--role", role, "--json"], rig.env)
        assert code == 0, err
        new_ids[role] = json.loads(out)["keyid"]
    for keyid in (old_root, old_targets):
        code, _, err = run_cli(["keys", "retire", keyid], rig.env)
        assert code == 0, err

    response = _ceremony(
        rig, root_proposal(rig.online_targets, snapshot, timestamp, version=2), 1, tmp_path
    )
    assert response.root is not None
    v2 = Metadata[Root].from_dict(copy.deepcopy(response.root))
    assert v2.signed.roles["root"].keyids == [new_ids["root"]]
    assert set(v2.signed.roles["targets"].keyids) == {
        rig.online_targets.public_key.keyid,
        new_ids["targets"],
    }
    assert {e.keyid for e in response.signatures} == {old_root, new_ids["root"]}
    trusted = Metadata[Root].from_dict(copy.deepcopy(v1.root)).signed
    result = v2.signed.get_root_verification_result(trusted, v2.signed_bytes, v2.signatures)
    assert result.verified, result


def test_root_request_for_an_unknown_previous_root_is_refused(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    proposal = root_proposal(rig.online_targets, generate_signer(), generate_signer(), version=4)
    request = operator_sign(root_request(proposal, 3), rig.operator_home, rig.operator_fpr)
    path = rig.write_request(request)
    before = state_of(rig.appliance.home.root)
    code, _, err = run_cli(
        ["sign", str(path), "--confirm", "root-v4", "--out", str(tmp_path / "r.json")], rig.env
    )
    assert code == 1 and "root v3 was not signed by this appliance" in err
    assert state_of(rig.appliance.home.root) == before
