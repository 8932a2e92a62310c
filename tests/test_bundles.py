"""Signing bundles: round trips, strict parsing, deltas, GnuPG signatures, USB files."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from wavesign.shared.bundles import (
    BundleError,
    SignatureEntry,
    SigningRequest,
    SigningResponse,
    parse_bundle,
)
from wavesign.shared.canonical import digest
from wavesign.shared.delta import DeltaError, UnknownDeltaBaseError, resolve_payloads
from wavesign.shared.gpg import GnuPG, GpgError
from wavesign.shared.transport import bundle_filename, read_bundle_file, write_bundle_file

from tests.bundle_builders import ci_target, production_with, wave_request


@pytest.fixture
def request_and_base():
    new = {"intel-corei7-64-lmp-42": ci_target("intel-corei7-64-lmp", 42)}
    return wave_request(production_with(20), new, version=5)


def test_request_round_trips_byte_for_byte(request_and_base) -> None:
    request, _ = request_and_base
    data = request.to_bytes()
    again = SigningRequest.from_bytes(data)
    assert again == request
    assert again.to_bytes() == data
    assert isinstance(parse_bundle(data), SigningRequest)


def test_response_round_trips(request_and_base) -> None:
    request, _ = request_and_base
    response = SigningResponse(
        request_sha256=request.digest(),
        signatures=(SignatureEntry("wave", request.payloads[0].sha256, "cd" * 32, "ef" * 64),),
        journal_head="01" * 32,
    )
    assert SigningResponse.from_bytes(response.to_bytes()) == response
    assert isinstance(parse_bundle(response.to_bytes()), SigningResponse)


def _mutate(request: SigningRequest, change) -> bytes:
    document = request.to_dict()
    change(document)
    return json.dumps(document).encode()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.update(version=2), "request.version"),
        (lambda d: d.pop("factory"), "request.factory: missing"),
        (lambda d: d.update(id=7), "request.id: expected a string"),
        (lambda d: d.update(extra=1), "unknown field 'extra'"),
        (lambda d: d["payloads"][0].update(sha256="00" * 32), "request.payloads[0].sha256"),
        (lambda d: d["payloads"][1]["signed"]["targets"].clear(), "request.payloads[1].sha256"),
        (lambda d: d["payloads"].reverse(), "request.payloads: a wave request carries"),
        (lambda d: d["purpose"].pop("wave"), "request.purpose.wave: missing"),
        (lambda d: d["payloads"][0].update(keyids=["xyz"]), "request.payloads[0].keyids[0]"),
        (lambda d: d.update(format="something"), "request.format"),
    ],
)
def test_malformed_requests_name_the_field(request_and_base, change, field: str) -> None:
    request, _ = request_and_base
    with pytest.raises(BundleError, match=field.replace("[", r"\[").replace("]", r"\]")):
        SigningRequest.from_bytes(_mutate(request, change))


def test_duplicate_keys_are_refused(request_and_base) -> None:
    request, _ = request_and_base
    data = request.to_bytes()
    doubled = data[:-1] + b',"factory":"evil"}'
    with pytest.raises(BundleError, match="duplicate JSON key 'factory'"):
        SigningRequest.from_bytes(doubled)


def test_floats_are_refused(request_and_base) -> None:
    request, _ = request_and_base
    data = request.to_bytes().replace(b'"version":1}', b'"version":1.0}')
    with pytest.raises(BundleError, match="floats are not allowed"):
        SigningRequest.from_bytes(data)


def test_invalid_tuf_content_is_refused(request_and_base) -> None:
    request, _ = request_and_base
    document = request.to_dict()
    signed = document["payloads"][0]["signed"]
    signed["expires"] = "tomorrow"
    document["payloads"][0]["sha256"] = digest(signed)
    with pytest.raises(BundleError, match="not valid TUF targets metadata"):
        SigningRequest.from_dict(document)


def test_oversized_input_is_refused_before_parsing() -> None:
    with pytest.raises(BundleError, match="above the limit"):
        SigningRequest.from_bytes(b" " * (16 * 1024 * 1024 + 1))


def test_delta_rebuilds_exactly_and_is_much_smaller() -> None:
    production = production_with(1000)
    new = {f"board{i}-lmp-42": ci_target(f"board{i}-lmp", 42, f"board{i}") for i in range(10)}
    request, base = wave_request(production, new, version=7)
    delta_request = request.with_payloads(p.as_delta_against(base) for p in request.payloads)
    assert all(p.delta is not None for p in delta_request.payloads)
    wire = delta_request.to_bytes()
    assert len(request.to_bytes()) >= 20 * len(wire)

    received = SigningRequest.from_bytes(wire)
    rebuilt = resolve_payloads(received, {digest(base): base}.get)
    assert rebuilt.to_bytes() == request.to_bytes()
    assert rebuilt.digest() == request.digest()


def test_delta_with_unknown_base_says_to_export_full(request_and_base) -> None:
    request, base = request_and_base
    delta_request = request.with_payloads(p.as_delta_against(base) for p in request.payloads)
    received = SigningRequest.from_bytes(delta_request.to_bytes())
    with pytest.raises(UnknownDeltaBaseError, match="--full"):
        resolve_payloads(received, lambda sha: None)


def test_delta_that_rebuilds_something_else_is_refused(request_and_base) -> None:
    request, base = request_and_base
    document = request.with_payloads(p.as_delta_against(base) for p in request.payloads).to_dict()
    entry = document["payloads"][0]["delta"]["added"]["intel-corei7-64-lmp-42"]
    entry["hashes"]["sha256"] = "66" * 32  # the operator's screen still shows the old digest
    received = SigningRequest.from_dict(document)
    with pytest.raises(DeltaError, match="does not match its sha256"):
        resolve_payloads(received, {digest(base): base}.get)


def test_digest_needs_resolved_payloads(request_and_base) -> None:
    request, base = request_and_base
    delta_request = request.with_payloads(p.as_delta_against(base) for p in request.payloads)
    with pytest.raises(BundleError, match="still a delta"):
        delta_request.digest()


def test_operator_signature_survives_delta_export(request_and_base, operator_gpg) -> None:
    request, base = request_and_base
    gpg = GnuPG(operator_gpg.home)
    signed = request.with_operator_signature(
        gpg.sign_detached(operator_gpg.fingerprint, request.signing_bytes())
    )
    wire = signed.with_payloads(p.as_delta_against(base) for p in signed.payloads).to_bytes()
    received = resolve_payloads(SigningRequest.from_bytes(wire), {digest(base): base}.get)
    assert received.operator_signature is not None
    verified = gpg.verify_detached(received.signing_bytes(), received.operator_signature)
    assert verified.fingerprint == operator_gpg.fingerprint


def test_operator_signature_over_another_request_fails(request_and_base, operator_gpg) -> None:
    request, _ = request_and_base
    gpg = GnuPG(operator_gpg.home)
    signature = gpg.sign_detached(operator_gpg.fingerprint, request.signing_bytes())
    other, _ = wave_request(production_with(3), {}, version=2, request_id="req-2")
    with pytest.raises(GpgError, match="does not verify"):
        gpg.verify_detached(other.signing_bytes(), signature)


def test_unknown_signer_is_named(tmp_path: Path, request_and_base, operator_gpg) -> None:
    request, _ = request_and_base
    signature = GnuPG(operator_gpg.home).sign_detached(
        operator_gpg.fingerprint, request.signing_bytes()
    )
    empty_keyring = GnuPG(tmp_path / "trusted")
    with pytest.raises(GpgError, match="unknown GnuPG key"):
        empty_keyring.verify_detached(request.signing_bytes(), signature)
    empty_keyring.import_public_key(operator_gpg.public_key)
    verified = empty_keyring.verify_detached(request.signing_bytes(), signature)
    assert verified.fingerprint == operator_gpg.fingerprint


def test_usb_file_is_named_and_written_atomically(tmp_path: Path, request_and_base) -> None:
    request, _ = request_and_base
    name = bundle_filename(request)
    assert name == "wave-v2.0-update.request.json"
    assert bundle_filename(request, "response") == "wave-v2.0-update.response.json"
    path = write_bundle_file(tmp_path / name, request)
    assert SigningRequest.from_bytes(read_bundle_file(path)) == request
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == [name]  # no temp file left behind


def test_oversized_usb_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.json"
    big.write_bytes(b"x" * 2048)
    with pytest.raises(BundleError, match="limit"):
        read_bundle_file(big, max_size=1024)
