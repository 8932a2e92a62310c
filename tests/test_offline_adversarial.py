"""Hostile and mistaken inputs: each refused with one ``error:`` line, nothing changed.

Every case prepares its input on a fresh appliance, records the bytes of the whole
home (keystore, journal, payload store, operators keyring) and of the output folder,
runs ``sign``, and checks the refusal and that not one byte changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from wavesign.shared.bundles import Payload, SigningRequest
from wavesign.shared.keys import generate_signer

from tests.test_offline_support import (
    Rig,
    make_gnupg_home,
    make_rig,
    new_target,
    operator_sign,
    run_cli,
    state_of,
    targets_signed,
)

# Each case returns (sign arguments before the output flag, extra env, expected message part).
Case = Callable[[Rig, Path], tuple[list[str], dict[str, str], str]]


def _wave(rig: Rig, production: dict, **changes: object) -> SigningRequest:
    return rig.signed_wave(production)


def tampered_payload(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    """A target's hash changed after the operator signed; the sha256 recomputed to match."""
    request = rig.signed_wave(rig.production())
    wave = json.loads(json.dumps(request.payload("wave").full()))
    wave["targets"]["board0-lmp-42"]["hashes"]["sha256"] = "66" * 32
    forged = request.with_payloads(
        [Payload.create("wave", "targets", wave, [rig.targets_keyid]), request.payload("revert")]
    )
    return [str(rig.write_request(forged))], {}, "operator signature does not cover this request"


def digest_mismatch(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    """The payload was edited in the file, its sha256 left as it was."""
    request = rig.signed_wave(rig.production())
    data = request.to_dict()
    data["payloads"][0]["signed"]["targets"]["board0-lmp-42"]["length"] = 1
    path = tmp / "edited.json"
    path.write_text(json.dumps(data))
    return [str(path)], {}, "does not match the canonical 'signed' content"


def unknown_operator(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    stranger_home, stranger_fpr = make_gnupg_home(tmp / "stranger.gnupg", "Stranger")
    request = rig.signed_wave(rig.production()).with_operator_signature(None)
    request = operator_sign(request, stranger_home, stranger_fpr)
    return [str(rig.write_request(request))], {}, "not by a trusted operator"


def signature_over_another_request(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    production = rig.production()
    first = rig.signed_wave(production)
    other = rig.signed_wave(production, wave="v2.1-update")
    moved = other.with_operator_signature(first.operator_signature)
    return [str(rig.write_request(moved))], {}, "operator signature does not cover"


def unsigned_request(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    request = rig.signed_wave(rig.production()).with_operator_signature(None)
    return [str(rig.write_request(request))], {}, "carries no operator signature"


def version_rollback(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    """After signing v2 (revert v3), a wave at version 3 would roll devices back."""
    production = rig.production()
    first = rig.write_request(rig.signed_wave(production), "first.json")
    code, _, err = run_cli(
        ["sign", str(first), "--confirm", "v2.0-update", "--out", str(tmp / "first.resp")],
        rig.env,
    )
    assert code == 0, err
    second = rig.signed_wave(production, wave="v2.1-update", version=3)
    return [str(rig.write_request(second))], {}, "is not above version 3"


def expiry_too_far(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    production = rig.production()
    wave = targets_signed({**production["targets"], **new_target("42")}, version=2, days=500)
    request = rig.wave_of(wave, production)
    return [str(rig.write_request(request))], {}, "beyond the policy maximum of 400 days"


def revert_adds_a_target(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    production = rig.production()
    wave = targets_signed({**production["targets"], **new_target("42")}, version=2)
    revert = targets_signed({**production["targets"], **new_target("43")}, version=3)
    request = rig.wave_of(wave, production, revert_signed=revert)
    return [str(rig.write_request(request))], {}, "revert payload adds target 'board0-lmp-43'"


def malformed_target(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    production = rig.production()
    added = new_target("42")
    del added["board0-lmp-42"]["custom"]["hardwareIds"]
    wave = targets_signed({**production["targets"], **added}, version=2)
    request = rig.wave_of(wave, production)
    return [str(rig.write_request(request))], {}, "target 'board0-lmp-42' has no hardwareIds"


def bad_target_hash(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    production = rig.production()
    added = new_target("42")
    added["board0-lmp-42"]["hashes"]["sha256"] = "not-a-digest"
    wave = targets_signed({**production["targets"], **added}, version=2)
    request = rig.wave_of(wave, production)
    return [str(rig.write_request(request))], {}, "has no valid sha256"


def key_not_held(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    production = rig.production()
    wave = targets_signed({**production["targets"], **new_target("42")}, version=2)
    request = rig.wave_of(wave, production, keyids=["ab" * 32])
    return [str(rig.write_request(request))], {}, "which this appliance does not hold"


def wrong_passphrase(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    path = rig.write_request(rig.signed_wave(rig.production()))
    return [str(path)], {"WAVESIGN_OFFLINE_PASSPHRASE": "not the passphrase"}, "wrong passphrase"


def confirm_mismatch(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    path = rig.write_request(rig.signed_wave(rig.production()))
    return [str(path), "--confirm", "v2.0-updat"], {}, "does not match 'v2.0-update'"


def unknown_delta_base(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    """A delta against production targets this appliance never signed."""
    production = targets_signed(
        {**rig.production()["targets"], **new_target("30", "board9")}, version=1
    )
    request = rig.signed_wave(production)
    delta = request.with_payloads(
        [p.as_delta_against(production) if p.name == "wave" else p for p in request.payloads]
    )
    return [str(rig.write_request(delta))], {}, "export the request with --full"


def production_never_signed(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    production = targets_signed(rig.production()["targets"], version=1, days=300)
    request = rig.signed_wave(production)
    return [str(rig.write_request(request))], {}, "were never signed by this appliance"


def not_a_request(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    path = tmp / "garbage.json"
    path.write_bytes(b'{"format": "wavesign-signing-request", "version": 1, "id": 1.5}')
    return [str(path)], {}, "floats are not allowed"


def root_smuggled_as_wave(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    """A "wave" payload that is really root metadata, asking for the root key."""
    from tests.test_offline_support import root_proposal

    production = rig.production()
    request = rig.signed_wave(production)
    proposal = root_proposal(rig.online_targets, generate_signer(), generate_signer())
    smuggled = request.with_payloads(
        [Payload.create("wave", "root", proposal, [rig.root_keyid]), request.payload("revert")]
    ).with_operator_signature(None)
    smuggled = operator_sign(smuggled, rig.operator_home, rig.operator_fpr)
    return [str(rig.write_request(smuggled))], {}, "payload wave has role root, not targets"


def delegation_added(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    """A wave that quietly delegates to a key of the attacker's."""
    production = rig.production()
    wave = targets_signed({**production["targets"], **new_target("42")}, version=2)
    wave["delegations"] = {
        "keys": {},
        "roles": [
            {"name": "evil", "keyids": [], "threshold": 1, "terminating": False, "paths": ["*"]}
        ],
    }
    request = rig.wave_of(wave, production)
    return [str(rig.write_request(request))], {}, "payload wave changes 'delegations'"


def target_for_another_tag(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    """A new target tagged for another tag would pass for "added" while doing nothing here."""
    production = rig.production()
    added = new_target("42")
    added["board0-lmp-42"]["custom"]["tags"] = ["staging"]
    wave = targets_signed({**production["targets"], **added}, version=2)
    request = rig.wave_of(wave, production)
    return [str(rig.write_request(request))], {}, "target 'board0-lmp-42' is not tagged"


def root_without_offline_signature(rig: Rig, tmp: Path) -> tuple[list[str], dict[str, str], str]:
    """A root proposal whose two online targets keys could meet threshold 2 on their own."""
    from securesystemslib.signer import SSlibKey
    from tuf.api.metadata import Root

    from tests.test_offline_support import root_proposal, root_request

    snapshot, timestamp, second_online = generate_signer(), generate_signer(), generate_signer()
    proposal = Root.from_dict(root_proposal(rig.online_targets, snapshot, timestamp))
    proposal.add_key(
        SSlibKey.from_dict(second_online.public_key.keyid, second_online.public_key.to_dict()),
        "targets",
    )
    request = operator_sign(
        root_request(proposal.to_dict(), 0), rig.operator_home, rig.operator_fpr
    )
    path = rig.write_request(request, "root-v1.request.json")
    return [str(path), "--confirm", "root-v1"], {}, "without this appliance"


CASES: list[Case] = [
    tampered_payload,
    digest_mismatch,
    unknown_operator,
    signature_over_another_request,
    unsigned_request,
    version_rollback,
    expiry_too_far,
    revert_adds_a_target,
    malformed_target,
    bad_target_hash,
    key_not_held,
    wrong_passphrase,
    confirm_mismatch,
    unknown_delta_base,
    production_never_signed,
    not_a_request,
    root_smuggled_as_wave,
    delegation_added,
    target_for_another_tag,
    root_without_offline_signature,
]


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_refused_and_nothing_changes(tmp_path: Path, case: Case) -> None:
    rig = make_rig(tmp_path)
    args, env, expected = case(rig, tmp_path)
    if "--confirm" not in args:
        args = [*args, "--confirm", "v2.0-update"]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "earlier.txt").write_text("left alone\n")
    home_before = state_of(rig.appliance.home.root)
    out_before = state_of(out_dir)

    code, stdout, stderr = run_cli(
        ["sign", *args, "--out", str(out_dir / "response.json")], rig.env | env
    )

    assert code == 1, stdout + stderr
    assert stderr.startswith("error: "), stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert "Traceback" not in stderr
    assert expected in stderr, stderr
    assert state_of(rig.appliance.home.root) == home_before
    assert state_of(out_dir) == out_before


@pytest.mark.parametrize("case", CASES[:10], ids=[c.__name__ for c in CASES[:10]])
def test_review_refuses_the_same_and_writes_nothing(tmp_path: Path, case: Case) -> None:
    rig = make_rig(tmp_path)
    args, env, expected = case(rig, tmp_path)
    home_before = state_of(rig.appliance.home.root)
    code, _, stderr = run_cli(["review", *args[:1], "--json"], rig.env | env)
    assert code == 1
    assert stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1
    assert expected in stderr, stderr
    assert state_of(rig.appliance.home.root) == home_before


def test_unsigned_request_is_accepted_only_where_allowed_and_flagged(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, allow_unsigned=True)
    request = rig.signed_wave(rig.production()).with_operator_signature(None)
    path = rig.write_request(request)
    code, out, err = run_cli(["review", str(path), "--json"], rig.env)
    assert code == 0, err
    operator = json.loads(out)["operator"]
    assert operator["signed"] is False and operator["trusted"] is False
    assert "UNSIGNED REQUEST" in operator["warning"]
    code, out, _ = run_cli(["review", str(path)], rig.env)
    assert "operator: UNSIGNED REQUEST" in out


def test_failed_output_write_leaves_no_journal_line(tmp_path: Path) -> None:
    """The response is written last; if it cannot be, the journal and store roll back."""
    from datetime import UTC, datetime

    from wavesign.offline.review import review_request
    from wavesign.offline.signer import commit, prepare_signing

    from tests.test_offline_support import PASSPHRASE

    rig = make_rig(tmp_path)
    request = rig.signed_wave(rig.production())
    before = state_of(rig.appliance.home.root)
    review = review_request(rig.appliance, request.to_bytes(), now=datetime.now(UTC))
    prepared = prepare_signing(
        rig.appliance, review, confirmation="v2.0-update", passphrase=PASSPHRASE
    )

    def full_disk(data: bytes) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        commit(rig.appliance, prepared, full_disk)
    assert state_of(rig.appliance.home.root) == before
    # The same prepared ceremony commits cleanly once the output works.
    written: list[bytes] = []
    commit(rig.appliance, prepared, written.append)
    assert written == [prepared.response.to_bytes()]
    assert len(rig.appliance.journal.entries()) == 1
