"""Root ceremonies, rotations and production renewals in the broker's store.

The appliance's side is played by ``tests.online_support.ceremony_response`` (built
with python-tuf, independently of the broker's code); ``tests/test_seed_story.py`` runs
the same ceremony against the real ``wavesign-offline``. Every refusal is checked to
leave every table byte for byte as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root
from wavesign.online import db
from wavesign.online.datadir import init_data_dir
from wavesign.online.onlinekeys import OnlineKeys
from wavesign.online.store_waves import WaveStore
from wavesign.shared.bundles import SigningRequest, SigningResponse
from wavesign.shared.canonical import digest
from wavesign.shared.errors import WavesignError
from wavesign.shared.keys import generate_signer
from wavesign.shared.rootchain import verify_root_update

from tests.online_support import (
    ceremony_response,
    ci_entry,
    offline_response,
    root_by_ceremony,
    signed_root_bytes,
)

HW = "intel-corei7-64"


@pytest.fixture
def store(tmp_path: Path) -> WaveStore:
    result = init_data_dir(str(tmp_path / "data"), None, "acme")
    return WaveStore(result.db_url, keys=OnlineKeys(tmp_path / "data"))


@pytest.fixture
def signers(ed25519_signers: list[CryptoSigner]) -> dict[str, CryptoSigner]:
    return {"root": ed25519_signers[0], "offline": ed25519_signers[1], "other": ed25519_signers[2]}


def refused(store: WaveStore, action: Callable[[], Any], message: str) -> None:
    before = store.dump()
    with pytest.raises(WavesignError) as info:
        action()
    assert message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    assert store.dump() == before


def online(store: WaveStore, role: str) -> CryptoSigner:
    assert store.keys is not None
    return store.keys.signer(role)


def test_the_proposal_holds_the_online_keys_and_the_policy(store: WaveStore) -> None:
    store.add_targets("ci", {"lmp-12": ci_entry(12, HW)})
    refused(
        store,
        lambda: store.init_wave("op", name="w12", version=12, tag="production"),
        "no root yet: the root ceremony must come first",
    )
    refused(store, lambda: store.show_root(), "no root yet: run `wavesign root propose` first")
    proposed = store.propose_root("admin", root_threshold=2, expires_days=30)
    assert proposed["version"] == 1
    request = SigningRequest.from_bytes(store.request_bytes(proposed["request_id"]))
    assert request.purpose.to_dict() == {"kind": "root", "root_version": 1}
    assert request.context.to_dict() == {"root_version": 0}
    assert [(p.name, p.role, p.keyids) for p in request.payloads] == [("root", "root", ())]
    proposal = request.payload("root").full()
    assert proposal["version"] == 1 and proposal["expires"] == proposed["expires"]
    roles = proposal["roles"]
    assert roles["root"] == {"keyids": [], "threshold": 2}
    assert roles["targets"] == {
        "keyids": [online(store, "targets").public_key.keyid],
        "threshold": 2,
    }
    for role in ("snapshot", "timestamp"):
        assert roles[role] == {"keyids": [online(store, role).public_key.keyid], "threshold": 1}
    assert store.list_requests()[0]["purpose"] == "root"
    assert store.events()[-1]["kind"] == "root-proposed"
    refused(store, lambda: store.propose_root("admin"), "is still awaiting signatures")


def test_root_v1_from_the_ceremony_is_stored_and_shown(
    store: WaveStore, signers: dict[str, CryptoSigner]
) -> None:
    assert root_by_ceremony(store, signers["root"], signers["offline"].public_key) == 1
    shown = store.show_root()
    assert shown == store.show_root(1)
    root = Metadata[Root].from_dict(json.loads(json.dumps(shown)))
    verify_root_update(None, root)  # self-signed to threshold
    targets = root.signed.roles["targets"]
    assert targets.threshold == 2
    assert set(targets.keyids) == {
        online(store, "targets").public_key.keyid,
        signers["offline"].public_key.keyid,
    }
    assert root.signed.roles["root"].keyids == [signers["root"].public_key.keyid]
    assert store.list_requests()[0]["status"] == "signed"
    refused(store, lambda: store.show_root(2), "no root version 2")


def test_ceremony_refusals_change_nothing(
    store: WaveStore, signers: dict[str, CryptoSigner]
) -> None:
    proposed = store.propose_root("admin", root_threshold=2)
    data = store.request_bytes(proposed["request_id"])
    root_key, offline = signers["root"], signers["offline"].public_key
    # One root signature, but the proposal asked for a root threshold of 2.
    short = ceremony_response(data, [root_key, signers["other"]], [offline])
    doc = json.loads(short)
    first = doc["signatures"][0]
    doc["signatures"] = [first]
    doc["root"]["signatures"] = [
        s for s in doc["root"]["signatures"] if s["keyid"] == first["keyid"]
    ]
    one_short = SigningResponse.from_dict(doc).to_bytes()
    refused(
        store,
        lambda: store.import_response("admin", one_short),
        "root v1 is not signed by a threshold of",
    )
    # The online snapshot key posing as an offline targets key.
    posing = ceremony_response(
        data, [root_key, signers["other"]], [online(store, "snapshot").public_key]
    )
    refused(store, lambda: store.import_response("admin", posing), "one of this broker's online")
    # No offline targets key at all.
    no_offline = ceremony_response(data, [root_key, signers["other"]], [])
    refused(store, lambda: store.import_response("admin", no_offline), "no offline targets key")

    # A root that is not the proposal: another expiry.
    def later(root: Root) -> None:
        root.expires = root.expires.replace(year=root.expires.year + 5)

    longer = ceremony_response(data, [root_key, signers["other"]], [offline], edit=later)
    refused(store, lambda: store.import_response("admin", longer), "the proposal said")
    # A tampered root: its signatures no longer cover it.
    doc = json.loads(ceremony_response(data, [root_key, signers["other"]], [offline]))
    doc["root"]["signed"]["expires"] = "2099-01-01T00:00:00Z"
    refused(
        store,
        lambda: store.import_response("admin", SigningResponse.from_dict(doc).to_bytes()),
        "is over another payload than the returned root",
    )
    # A response for a request the broker never made.
    doc = json.loads(ceremony_response(data, [root_key, signers["other"]], [offline]))
    doc["request_sha256"] = "ab" * 32
    refused(
        store,
        lambda: store.import_response("admin", SigningResponse.from_dict(doc).to_bytes()),
        "no signing request has digest abababab",
    )
    good = ceremony_response(data, [root_key, signers["other"]], [offline])
    assert store.import_response("admin", good)["version"] == 1
    # The same response again is a no-op; another response for it is refused.
    before = store.dump()
    again = store.import_response("admin", good)
    assert again["noop"] is True and "imported already: nothing changed" in again["message"]
    assert store.dump() == before
    # Another response (the root keys in another order: another root) is refused.
    refused(
        store,
        lambda: store.import_response(
            "admin", ceremony_response(data, [signers["other"], root_key], [offline])
        ),
        "is signed already",
    )


def test_rotation_needs_the_old_and_the_new_root_keys(
    store: WaveStore, signers: dict[str, CryptoSigner]
) -> None:
    root_by_ceremony(store, signers["root"], signers["offline"].public_key)
    proposed = store.propose_root("admin")
    assert proposed["version"] == 2
    data = store.request_bytes(proposed["request_id"])
    request = SigningRequest.from_bytes(data)
    assert request.context.root_version == 1 and request.purpose.root_version == 2
    new_root = generate_signer()
    offline = signers["offline"].public_key
    new_only = ceremony_response(data, [new_root], [offline])
    refused(
        store,
        lambda: store.import_response("admin", new_only),
        "root v2 is not signed by a threshold of root v1's root keys",
    )
    rotated = ceremony_response(data, [new_root], [offline], previous_signers=[signers["root"]])
    assert store.import_response("admin", rotated)["version"] == 2
    v1 = Metadata[Root].from_dict(store.show_root(1))
    v2 = Metadata[Root].from_dict(store.show_root())
    verify_root_update(v1, v2)
    assert v2.signed.roles["root"].keyids == [new_root.public_key.keyid]


def test_a_restored_root_must_name_the_online_keys(
    store: WaveStore, signers: dict[str, CryptoSigner]
) -> None:
    targets = online(store, "targets").public_key
    without_online = signed_root_bytes(signers["root"], targets, signers["offline"].public_key)
    refused(
        store,
        lambda: store.add_root("admin", without_online),
        "does not list exactly this broker's snapshot key",
    )
    restored = signed_root_bytes(
        signers["root"],
        targets,
        signers["offline"].public_key,
        snapshot=online(store, "snapshot").public_key,
        timestamp=online(store, "timestamp").public_key,
    )
    assert store.add_root("admin", restored) == 1
    added = [e for e in store.events() if e["kind"] == "root-added"]
    assert added[-1]["detail"]["restored"] is True


# -- waves: the signature refusals ---------------------------------------------------------
def _with_wave(store: WaveStore, signers: dict[str, CryptoSigner]) -> bytes:
    root_by_ceremony(store, signers["root"], signers["offline"].public_key)
    store.add_targets("ci", {"lmp-12": ci_entry(12, HW), "lmp-13": ci_entry(13, HW, "13")})
    store.init_wave("op", name="w12", version=12, tag="production")
    return store.request_bytes(store.show_wave("w12")["request_id"])


def test_wave_signature_refusals_change_nothing(
    store: WaveStore, signers: dict[str, CryptoSigner]
) -> None:
    data = _with_wave(store, signers)
    offline = signers["offline"]
    # Signatures for another request (a wave for 13 in another broker), under our digest.
    other_store_request = SigningRequest.from_bytes(data)
    foreign = json.loads(offline_response(data, [offline]))
    foreign_payload = other_store_request.payload("wave").full()
    foreign_payload = dict(foreign_payload, version=foreign_payload["version"] + 10)
    for entry in foreign["signatures"]:
        entry["sha256"] = digest(foreign_payload)
    refused(
        store,
        lambda: store.import_response("op", SigningResponse.from_dict(foreign).to_bytes()),
        "over another wave payload than the request's",
    )
    # The online key posing as an offline one.
    posing = offline_response(data, [online(store, "targets")])
    refused(store, lambda: store.import_response("op", posing), "signature by the online")
    # One signature short of the threshold of 2 (only the online one would be there).
    short = offline_response(data, [])
    refused(store, lambda: store.import_response("op", short), "payload wave")
    # A signature for a payload the request does not have.
    extra = json.loads(offline_response(data, [offline]))
    extra["signatures"].append(dict(extra["signatures"][0], payload="renew"))
    refused(
        store,
        lambda: store.import_response("op", SigningResponse.from_dict(extra).to_bytes()),
        "which this request does not have",
    )
    good = offline_response(data, [offline])
    assert store.import_response("op", good)["status"] == "active"
    before = store.dump()
    assert store.import_response("op", good)["noop"] is True
    assert store.dump() == before


# -- renewals --------------------------------------------------------------------------------
def _released(store: WaveStore, offline: CryptoSigner, version: int) -> None:
    store.add_targets("ci", {f"lmp-{version}": ci_entry(version, HW, f"{version:02x}")})
    plan = store.init_wave("op", name=f"w{version}", version=version, tag="production")
    store.import_response(
        "op", offline_response(store.request_bytes(plan["request_id"]), [offline])
    )
    store.complete_wave("op", f"w{version}")


def test_a_renewal_republishes_production_with_a_new_version_and_expiry(
    store: WaveStore, signers: dict[str, CryptoSigner]
) -> None:
    root_by_ceremony(store, signers["root"], signers["offline"].public_key)
    refused(
        store,
        lambda: store.renew_production("op", "production"),
        "tag production has no production targets yet",
    )
    _released(store, signers["offline"], 12)
    before_targets = store.list_targets(production="production")
    renewal = store.renew_production("op", "production", expires_days=30)
    assert renewal["version"] == 3  # above W (1) and R (2) of w12
    request = SigningRequest.from_bytes(store.request_bytes(renewal["request_id"]))
    assert request.purpose.to_dict() == {"kind": "renew", "tag": "production"}
    assert request.context.production_version == 1
    payload = request.payload("renew")
    assert payload.keyids == (signers["offline"].public_key.keyid,)  # the offline key only
    assert payload.full()["targets"] == before_targets
    assert payload.full()["expires"] == renewal["expires"]
    refused(
        store,
        lambda: store.import_response("op", offline_response(store.request_bytes(
            renewal["request_id"]), [signers["other"]])),
        "does not verify against the root's targets keys",
    )  # fmt: skip
    result = store.import_response(
        "op", offline_response(store.request_bytes(renewal["request_id"]), [signers["offline"]])
    )
    assert result["status"] == "published" and result["version"] == 3
    with store.read() as conn:
        row = conn.execute(db.tag_state.select()).first()
    assert row is not None and row.production_version == 3
    document = json.loads(row.production_json)
    assert document["signed"]["version"] == 3 and len(document["signatures"]) == 2
    assert document["signed"]["expires"] == renewal["expires"]
    assert store.list_targets(production="production") == before_targets


def test_a_renewal_signed_after_a_newer_wave_completed_is_refused(
    store: WaveStore, signers: dict[str, CryptoSigner]
) -> None:
    root_by_ceremony(store, signers["root"], signers["offline"].public_key)
    _released(store, signers["offline"], 12)
    store.add_targets("ci", {"lmp-42": ci_entry(42, HW, "42")})
    store.init_wave("op", name="w42", version=42, tag="production")
    refused(store, lambda: store.renew_production("op", "production"), "w42")
    store.cancel_wave("op", "w42")
    renewal = store.renew_production("op", "production")
    _released(store, signers["offline"], 43)
    late = offline_response(store.request_bytes(renewal["request_id"]), [signers["offline"]])
    refused(store, lambda: store.import_response("op", late), "is already published")
