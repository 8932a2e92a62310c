"""A PKCS#11 targets key on SoftHSM2 (Debian's softhsm2), through securesystemslib's HSMSigner."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pkcs11
import pytest
from pkcs11.util.ec import encode_named_curve_parameters
from wavesign.shared.bundles import SigningResponse

from tests.test_offline_support import (
    make_rig,
    new_target,
    run_cli,
    state_of,
    targets_signed,
    verify_with_tuf,
)

SOFTHSM_LIB = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "1234"


@pytest.fixture(scope="module")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One SoftHSM2 token for this module (the PKCS#11 library initialises once per process).

    Each test makes its own ECDSA P-256 key pair on it, with its own CKA_ID.
    """
    folder = tmp_path_factory.mktemp("softhsm")
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {folder}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    env = {"SOFTHSM2_CONF": str(conf), "PYKCS11LIB": SOFTHSM_LIB}
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            "wavesign",
            "--pin",
            PIN,
            "--so-pin",
            "5678",
        ],
        env=env | {"PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
    old = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    yield env
    if old is None:
        os.environ.pop("SOFTHSM2_CONF", None)
    else:
        os.environ["SOFTHSM2_CONF"] = old


def _generate_ec_key(cka_id: int) -> None:
    token = pkcs11.lib(SOFTHSM_LIB).get_token(token_label="wavesign")
    with token.open(rw=True, user_pin=PIN) as session:
        params = session.create_domain_parameters(
            pkcs11.KeyType.EC,
            {pkcs11.Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")},
            local=True,
        )
        params.generate_keypair(store=True, id=bytes([cka_id]), label=f"wavesign-{cka_id}")


def test_softhsm_targets_key_signs_a_wave(tmp_path: Path, softhsm: dict[str, str]) -> None:
    rig = make_rig(tmp_path)
    _generate_ec_key(2)
    env = rig.env | softhsm | {"WAVESIGN_OFFLINE_HSM_PIN": PIN}
    code, out, err = run_cli(
        [
            "keys",
            "add-hsm",
            "--role",
            "targets",
            "--hsm-keyid",
            "2",
            "--token-label",
            "wavesign",
            "--json",
        ],
        env,
    )
    assert code == 0, err
    added = json.loads(out)
    assert added["backend"] == "hsm" and added["type"] == "ecdsa-p256"
    stored = rig.appliance.keystore.find(added["keyid"])
    assert stored is not None
    # The keystore holds a reference, no secret.
    assert "private" not in stored.path.read_text().lower()

    production = rig.production()
    wave = targets_signed({**production["targets"], **new_target("42")}, version=2)
    request = rig.wave_of(wave, production, keyids=[added["keyid"]])
    path = rig.write_request(request)
    out_file = tmp_path / "response.json"
    code, _, err = run_cli(
        ["sign", str(path), "--confirm", "v2.0-update", "--out", str(out_file)], env
    )
    assert code == 0, err
    response = SigningResponse.from_bytes(out_file.read_bytes().strip())
    verify_with_tuf(
        request.payload("wave").full(), response, "wave", stored.public, rig.online_targets
    )


def test_wrong_pin_is_refused_and_nothing_changes(tmp_path: Path, softhsm: dict[str, str]) -> None:
    rig = make_rig(tmp_path)
    _generate_ec_key(3)
    env = rig.env | softhsm | {"WAVESIGN_OFFLINE_HSM_PIN": PIN}
    code, out, err = run_cli(
        [
            "keys",
            "add-hsm",
            "--role",
            "targets",
            "--hsm-keyid",
            "3",
            "--token-label",
            "wavesign",
            "--json",
        ],
        env,
    )
    assert code == 0, err
    keyid = json.loads(out)["keyid"]

    production = rig.production()
    wave = targets_signed({**production["targets"], **new_target("42")}, version=2)
    path = rig.write_request(rig.wave_of(wave, production, keyids=[keyid]))
    before = state_of(rig.appliance.home.root)
    code, _, err = run_cli(
        ["sign", str(path), "--confirm", "v2.0-update", "--out", str(tmp_path / "r.json")],
        env | {"WAVESIGN_OFFLINE_HSM_PIN": "0000"},
    )
    assert code == 1 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert state_of(rig.appliance.home.root) == before
    assert not (tmp_path / "r.json").exists()
