"""The transparency log: every change appends its events and a signed tree head; the
log API's proofs verify with ``wavesign.shared.merkle`` against the signed heads.

The API is served by a real ``wavesign server run`` over a broker state made through
the store (root ceremony, two released waves, a rollout). Proofs are checked with the
RFC 9162 verifiers of ``wavesign.shared.merkle``, against (size, root) taken from a
head whose signature was checked with the timestamp key of the broker's root.
"""

from __future__ import annotations

import base64
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config
from securesystemslib.signer import CryptoSigner, Key
from sqlalchemy import insert, select
from tuf.api.metadata import Root
from wavesign.online import db
from wavesign.online.datadir import DataDir, init_data_dir
from wavesign.online.eventlog import LOG_STATE_KEY, log_events
from wavesign.online.evidence_export import export_evidence
from wavesign.online.onlinekeys import OnlineKeys
from wavesign.online.store import Store
from wavesign.online.store_waves import WaveStore
from wavesign.shared.audit import run_checks
from wavesign.shared.bundles import SigningResponse
from wavesign.shared.canonical import digest_bytes
from wavesign.shared.errors import WavesignError
from wavesign.shared.evidence import LogEvent
from wavesign.shared.gpg import GnuPG
from wavesign.shared.merkle import (
    TreeHead,
    root_hash,
    verify_consistency,
    verify_inclusion,
    verify_tree_head,
)

from tests.gpghelpers import GpgIdentity
from tests.online_support import (
    ci_entry,
    live_server,
    offline_response,
    root_by_ceremony,
    run_cli,
    wait_for_publication,
)
from tests.pg_harness import PgCluster, pg_cluster_fixture  # noqa: F401 (fixture pg_cluster)
from tests.test_online_store import HW, Broker


@dataclass(frozen=True)
class Served:
    url: str
    auditor: str
    admin: str
    device: str
    log_key: Key
    data: Path


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, ed25519_signers: list[CryptoSigner]
) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("log") / "data"
    broker = Broker(data, ed25519_signers)
    broker.released(12)
    store = broker.store
    store.create_group("op", "canary")
    device = store.register_devices(
        "op", [{"name": "d1", "hardware_id": HW, "tag": "production", "group": "canary"}]
    )[0]["token"]
    store.add_targets("ci", {f"{HW}-lmp-13": ci_entry(13, HW, "0d")})
    store.init_wave("op", name="w13", version=13, tag="production")
    broker.activate("w13")
    store.rollout("op", "w13", group="canary")
    store.propose_root("op")  # a pending request, for the export test
    _, auditor = store.create_token("admin", "auditor", "audra")
    root = Root.from_dict(store.show_root()["signed"])
    log_key = root.keys[root.roles["timestamp"].keyids[0]]
    store.close()
    with live_server(data) as url:
        yield Served(url, auditor, broker.admin_token, device, log_key, data)


def get(served: Served, path: str, token: str | None = None, **params: Any) -> httpx.Response:
    headers = {} if token == "" else {"Authorization": f"Bearer {token or served.auditor}"}
    return httpx.get(f"{served.url}/api/v1{path}", params=params, headers=headers, timeout=30)


def heads(served: Served) -> list[TreeHead]:
    answer = get(served, "/log/heads")
    assert answer.status_code == 200
    return [verify_tree_head(served.log_key, head) for head in answer.json()]


def test_the_newest_head_is_signed_by_the_roots_timestamp_key(served: Served) -> None:
    answer = get(served, "/log/head")
    assert answer.status_code == 200
    newest = verify_tree_head(served.log_key, answer.json())
    every = heads(served)
    assert every[-1] == newest
    assert [h.size for h in every] == sorted({h.size for h in every})  # one per size, growing
    assert all(old.timestamp <= new.timestamp for old, new in itertools.pairwise(every))


def test_inclusion_proofs_verify_against_the_signed_head(served: Served) -> None:
    head = verify_tree_head(served.log_key, get(served, "/log/head").json())
    leaves = []
    for index in range(head.size):
        answer = get(served, "/log/inclusion", index=index)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["index"], body["tree_size"]) == (index, head.size)
        event = LogEvent.from_dict(body["event"], "event")
        assert event.index == index
        proof = [bytes.fromhex(node) for node in body["proof"]]
        # The leaf is recomputed from the event, the root taken from the signed head.
        assert verify_inclusion(event.leaf(), index, head.size, proof, head.root)
        assert not verify_inclusion(event.leaf(), index, head.size, proof, b"\0" * 32)
        leaves.append(event.leaf())
    assert root_hash(leaves) == head.root
    kinds = [LogEvent.from_dict(get(served, "/log/inclusion", index=i).json()["event"], "e").kind
             for i in range(head.size)]  # fmt: skip
    # The rollout is logged, then W's publication in the wave view.
    rollout = kinds.index("wave-rolled-out")
    assert kinds[rollout + 1] == "published"


def test_inclusion_in_an_older_signed_head(served: Served) -> None:
    older = heads(served)[2]
    body = get(served, "/log/inclusion", index=0, tree_size=older.size).json()
    proof = [bytes.fromhex(node) for node in body["proof"]]
    event = LogEvent.from_dict(body["event"], "event")
    assert verify_inclusion(event.leaf(), 0, older.size, proof, older.root)


def test_consistency_proofs_between_signed_heads_verify(served: Served) -> None:
    every = heads(served)
    pairs = [*itertools.pairwise(every), (every[0], every[-1])]
    for old, new in pairs:
        answer = get(served, "/log/consistency", old_size=old.size, new_size=new.size)
        assert answer.status_code == 200, answer.text
        proof = [bytes.fromhex(node) for node in answer.json()["proof"]]
        assert verify_consistency(old.size, new.size, old.root, new.root, proof)
    newest = every[-1]
    default = get(served, "/log/consistency", old_size=every[0].size).json()
    assert default["new_size"] == newest.size


@pytest.mark.parametrize(
    ("path", "params", "status", "reason"),
    [
        ("/log/inclusion", {"index": -1}, 400, "index -1 is outside a tree of"),
        ("/log/inclusion", {"index": 10_000}, 400, "index 10000 is outside a tree of"),
        ("/log/inclusion", {"index": 0, "tree_size": 0}, 400, "tree_size 0"),
        ("/log/inclusion", {"index": 0, "tree_size": 10_000}, 404, "not 10000"),
        ("/log/inclusion", {"index": "x"}, 400, "invalid request: query.index"),
        ("/log/consistency", {"old_size": 5, "new_size": 4}, 400, "need 0 <= old_size"),
        ("/log/consistency", {"old_size": -1}, 400, "need 0 <= old_size"),
        ("/log/consistency", {"old_size": 1, "new_size": 10_000}, 404, "not 10000"),
    ],
)
def test_bad_sizes_and_indexes_are_refused_with_a_reason(
    served: Served, path: str, params: dict[str, Any], status: int, reason: str
) -> None:
    answer = get(served, path, **params)
    assert answer.status_code == status
    assert reason in answer.json()["detail"]


def test_the_log_api_needs_an_api_token(served: Served) -> None:
    assert get(served, "/log/head", token="").status_code == 401
    device = get(served, "/log/head", token=served.device)
    assert device.status_code == 403 and "device token" in device.json()["detail"]
    added = httpx.post(
        f"{served.url}/api/v1/gpg-keys",
        json={"role": "officer", "armored": "x"},
        headers={"Authorization": f"Bearer {served.auditor}"},
    )
    assert added.status_code == 403 and "role auditor" in added.json()["detail"]


def test_the_evidence_endpoint_serves_the_folder_to_an_auditor(served: Served) -> None:
    answer = get(served, "/evidence")
    assert answer.status_code == 200
    files = answer.json()["files"]
    assert {"MANIFEST.json", "log/events.jsonl", "published/2.targets.json"} <= set(files)
    head = verify_tree_head(served.log_key, get(served, "/log/head").json())
    lines = base64.b64decode(files["log/events.jsonl"]).splitlines()
    assert len(lines) == head.size  # the newest head covers exactly the exported log


# --- the store side: one head per change, nothing on a refusal --------------------------


def test_each_change_appends_its_events_and_one_signed_head(
    tmp_path: Path, ed25519_signers: list[CryptoSigner]
) -> None:
    broker = Broker(tmp_path / "data", ed25519_signers)
    store = broker.store
    broker.released(12)
    with store.read() as conn:
        before = log_events(conn)
        count = len(conn.execute(select(db.tree_heads.c.size)).all())
    store.create_group("op", "g")
    with store.read() as conn:
        after = log_events(conn)
        sizes = list(conn.execute(select(db.tree_heads.c.size)).scalars())
    assert [e.kind for e in after[len(before) :]] == ["group-created"]
    assert len(sizes) == count + 1 and max(sizes) == len(after)
    # A completion logs the change, then the production publication of W.
    assert [e.kind for e in before[-2:]] == ["wave-completed", "published"]
    assert before[-1].detail["view"] == "production" and before[-1].detail["wave"] == "w12"
    dump = store.dump()
    with pytest.raises(WavesignError):
        store.complete_wave("op", "w12")
    assert store.dump() == dump


def test_an_upgraded_database_logs_its_old_events(tmp_path: Path) -> None:
    """Migration 0003 makes the existing events (not device reports) the first leaves."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = Store(url)
    config = Config()
    config.set_main_option("script_location", str(Path(db.__file__).parent / "migrations"))
    config.set_main_option("sqlalchemy.url", url)
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
        rows = [
            {"at": "2026-12-01T10:00:00Z", "actor": "a", "kind": "group-created",
             "subject": "g", "detail": "{}"},
            {"at": "2026-12-01T10:00:01Z", "actor": "device:x", "kind": "device-events",
             "subject": "x", "detail": '{"events":[]}'},
            {"at": "2026-12-01T10:00:02Z", "actor": "a", "kind": "group-created",
             "subject": "h", "detail": "{}"},
        ]  # fmt: skip
        for row in rows:  # only the columns of revision 0002
            conn.execute(insert(db.events).values(row))
    assert store.migrate() == "0003"
    with store.read() as conn:
        events = log_events(conn)
        state = json.loads(
            conn.execute(
                select(db.settings.c.value).where(db.settings.c.key == LOG_STATE_KEY)
            ).scalar_one()
        )
    assert [(e.index, e.subject) for e in events] == [(0, "g"), (1, "h")]
    assert state["size"] == 2
    store.close()


# --- officer attestations are verified once the officer's key is known ----------------------


def test_responses_must_carry_a_registered_officers_attestation(
    tmp_path: Path,
    ed25519_signers: list[CryptoSigner],
    operator_gpg: GpgIdentity,
    officer_gpg: GpgIdentity,
) -> None:
    broker = Broker(tmp_path / "data", ed25519_signers)
    store = broker.store
    store.add_gpg_key("admin", "officer", officer_gpg.public_key)
    store.add_targets("ci", {f"{HW}-lmp-12": ci_entry(12, HW, "0c")})
    request_id = store.init_wave("op", name="w12", version=12, tag="production")["request_id"]
    plain = SigningResponse.from_bytes(
        offline_response(store.request_bytes(request_id), [broker.offline])
    )

    def attested(identity: GpgIdentity) -> bytes:
        signature = GnuPG(identity.home).sign_detached(identity.fingerprint, plain.signing_bytes())
        return plain.with_attestation(signature).to_bytes()

    dump = store.dump()
    for response, reason in (
        (plain.to_bytes(), "carries no officer GnuPG signature"),
        (attested(operator_gpg), "does not verify with a registered officer key"),
    ):
        with pytest.raises(WavesignError, match=reason):
            store.import_response("op", response)
        assert store.dump() == dump
    assert store.import_response("op", attested(officer_gpg))["status"] == "active"
    with pytest.raises(WavesignError, match="registered already"):
        store.add_gpg_key("admin", "operator", officer_gpg.public_key)


def test_an_officer_key_registered_while_a_response_is_checked_refuses_the_import(
    tmp_path: Path, ed25519_signers: list[CryptoSigner], officer_gpg: GpgIdentity
) -> None:
    broker = Broker(tmp_path / "data", ed25519_signers)
    store = broker.store
    store.add_targets("ci", {f"{HW}-lmp-12": ci_entry(12, HW, "0c")})
    request_id = store.init_wave("op", name="w12", version=12, tag="production")["request_id"]
    response = SigningResponse.from_bytes(
        offline_response(store.request_bytes(request_id), [broker.offline])
    )
    # No officer key yet: an unattested response passes the check (outside the change)...
    checked = store._verify_gpg("officer", response.signing_bytes(), None, "the response")
    assert checked == frozenset()
    # ...an admin registers one before the import's change commits: the change refuses.
    store.add_gpg_key("admin", "officer", officer_gpg.public_key)
    dump = store.dump()
    with (
        pytest.raises(WavesignError, match="officer GnuPG keys changed"),
        store.change("op", "signatures-imported", "x") as ch,
    ):
        store._same_gpg_keys(ch.conn, "officer", checked)
    assert store.dump() == dump


def test_a_request_export_is_logged_with_the_digest_of_its_bytes(served: Served) -> None:
    pending = [r for r in get(served, "/requests").json() if r["status"] == "pending"]
    signed = [r for r in get(served, "/requests").json() if r["status"] == "signed"]
    auditor = httpx.post(
        f"{served.url}/api/v1/requests/{signed[0]['id']}/export",
        headers={"Authorization": f"Bearer {served.auditor}"},
    )
    assert auditor.status_code == 403
    refused = httpx.post(
        f"{served.url}/api/v1/requests/{signed[0]['id']}/export",
        headers={"Authorization": f"Bearer {served.admin}"},
    )
    assert refused.status_code == 409 and "is signed: nothing to export" in refused.text
    assert [r["purpose"] for r in pending] == ["root"]
    exported = httpx.post(
        f"{served.url}/api/v1/requests/{pending[0]['id']}/export",
        headers={"Authorization": f"Bearer {served.admin}"},
    )
    assert exported.status_code == 200
    head = verify_tree_head(served.log_key, get(served, "/log/head").json())
    last = get(served, "/log/inclusion", index=head.size - 1).json()["event"]
    assert (last["kind"], last["subject"]) == ("request-exported", pending[0]["id"])
    assert last["detail"] == {"full": False, "sha256": digest_bytes(exported.content)}


def test_the_export_of_a_postgresql_broker_verifies(
    pg_cluster: PgCluster, tmp_path: Path, ed25519_signers: list[CryptoSigner]
) -> None:
    """The log, its lock and the export run the same on PostgreSQL (here without GnuPG
    keys, so only the requests check has nothing to verify signatures with)."""
    data = tmp_path / "data"
    made = init_data_dir(str(data), pg_cluster.new_database(), "acme")
    store = WaveStore(made.db_url, keys=OnlineKeys(data))
    try:
        root_by_ceremony(store, ed25519_signers[0], ed25519_signers[1].public_key)
        store.create_group("op", "canary")
        store.register_devices(
            "op", [{"name": "d1", "hardware_id": HW, "tag": "production", "group": "canary"}]
        )
        for version, finish in ((12, store.complete_wave), (13, store.cancel_wave)):
            name = f"w{version}"
            store.add_targets(
                "ci", {f"{HW}-lmp-{version}": ci_entry(version, HW, f"{version:02x}")}
            )
            request_id = store.init_wave("op", name=name, version=version, tag="production")
            response = offline_response(
                store.request_bytes(request_id["request_id"]), [ed25519_signers[1]]
            )
            store.import_response("op", response)
            store.rollout("op", name, group="canary")
            finish("op", name)
        written = export_evidence(store, tmp_path / "evidence")
    finally:
        store.close()
    assert "published/4.targets.json" in written and "MANIFEST.json" in written
    found = {result.name: result for result in run_checks(tmp_path / "evidence")}
    assert [n for n, r in found.items() if not r.ok] == ["requests"], found
    assert "has no operator signature" in found["requests"].detail


def test_refused_cli_commands_write_nothing(served: Served, tmp_path: Path) -> None:
    """A refused export leaves no folder (not even a partial one); a refused key
    registration leaves the database as it was."""
    out = tmp_path / "evidence"
    refused = run_cli("evidence", "export", "--out", str(out), url=served.url, token="wsk_nope")
    assert refused.returncode == 1
    assert refused.stderr == "error: unknown API token\n"
    assert list(tmp_path.iterdir()) == []

    db_url = DataDir.resolve(str(served.data)).db_url
    wait_for_publication(db_url)
    store = Store(db_url)
    try:
        before = store.dump()
        junk = tmp_path / "junk.asc"
        junk.write_text("not a key\n")
        bad = run_cli(
            "evidence", "add-gpg-key", "--role", "officer", str(junk),
            url=served.url, token=served.admin,
        )  # fmt: skip
        assert bad.returncode == 1
        assert bad.stderr.startswith("error: not an ASCII-armoured GnuPG public key")
        assert len(bad.stderr.splitlines()) == 1
        assert store.dump() == before
    finally:
        store.close()
