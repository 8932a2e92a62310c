"""The broker's real evidence export passes ``wavesign-audit verify``; forgeries of it fail.

The seed story is played once for the module, as in ``tests/test_seed_story.py`` (its
``Story`` class drives a real ``wavesign server run``, the ``wavesign`` CLI and a real
``wavesign-offline`` appliance with GnuPG), plus what an audit needs to see: a root
rotation, a production renewal and a canceled wave. The officer's journal comes from
``wavesign-offline journal export``; the evidence from ``wavesign evidence export``
with an auditor's token.

Each tamper test edits a copy the way a forger would: beyond the one edit, it fixes up
what a forger can recompute without a private key (``publications.json`` digests,
renumbered log lines, proofs, ``MANIFEST.json``), so the check that fails is the one
that rests on a signature or a hash chain, and the test names it.
"""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata, Targets
from wavesign.shared.canonical import canonical_bytes, digest_bytes
from wavesign.shared.evidence import LogEvent
from wavesign.shared.journal_format import split_lines
from wavesign.shared.keyfile import load_signer
from wavesign.shared.keys import generate_signer
from wavesign.shared.merkle import MerkleTree, TreeHead, sign_tree_head
from wavesign.shared.signing import sign_payload

from tests.evidence_builder import rewrite_manifest, write_json
from tests.gpghelpers import GpgIdentity
from tests.online_support import ci_entry, live_server, run_cli
from tests.test_seed_story import HARDWARE_IDS, Story

AUDIT = str(Path(sys.executable).with_name("wavesign-audit"))
CHECKS = [
    "manifest",
    "root-chain",
    "targets-signatures",
    "versions",
    "waves",
    "requests",
    "journal",
    "log",
    "current",
]


@dataclass(frozen=True)
class Exported:
    evidence: Path
    journal: Path
    data: Path
    listed: str


def _play(tmp: Path, operator: GpgIdentity, officer: GpgIdentity) -> Exported:
    data = tmp / "data"
    result = run_cli("server", "init", "--data", str(data), "--factory", "acme")
    assert result.returncode == 0, result.stderr
    token = (data / "admin.token").read_text().strip()
    with live_server(data) as url:
        story = Story(tmp, url, token, operator, officer)
        # The broker learns the GnuPG keys it (and auditors) check signatures with.
        (tmp / "officer.asc").write_text(officer.public_key)
        story.op("evidence", "add-gpg-key", "--role", "operator", str(tmp / "operator.asc"))
        story.op("evidence", "add-gpg-key", "--role", "officer", str(tmp / "officer.asc"))
        story.set_up_appliance()
        story.root_ceremony()
        story.register_fleet()
        story.populate()
        rotation = story.request_id(story.op("root", "propose"))
        story.sign_by_file(rotation, "root-v2")
        story.start_update()
        story.op("wave", "rollout", "v2.0-update", "us-east-1")
        story.op("wave", "complete", "v2.0-update")
        story.renew()
        hotfix = {f"{hw}-lmp-43": ci_entry(43, hw, sha_byte="2b") for hw in HARDWARE_IDS}
        (tmp / "ci-43.json").write_text(json.dumps(hotfix))
        story.op("targets", "add", "--from-json", str(tmp / "ci-43.json"))
        request_id = story.request_id(story.op("wave", "init", "v3.0-hotfix", "43", "production"))
        story.sign_by_file(request_id, "v3.0-hotfix")
        story.op("wave", "rollout", "v3.0-hotfix", "canary")
        story.op("wave", "cancel", "v3.0-hotfix")
        journal = tmp / "journal.jsonl"
        story.officer("journal", "export", "--out", str(journal))
        auditor = story.op("tokens", "create", "--role", "auditor", "--name", "audra").strip()
        evidence = tmp / "evidence"
        exported = run_cli("evidence", "export", "--out", str(evidence), url=url, token=auditor)
        assert exported.returncode == 0, exported.stderr
        return Exported(evidence, journal, data, exported.stdout)


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, operator_gpg: GpgIdentity, officer_gpg: GpgIdentity
) -> Exported:
    return _play(tmp_path_factory.mktemp("story"), operator_gpg, officer_gpg)


def audit(folder: Path, journal: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AUDIT, "verify", str(folder), "--offline-journal", str(journal), *extra],
        capture_output=True, text=True, check=False, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def results(folder: Path, journal: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    """The exit code of ``verify --json`` and its checks by name."""
    run = audit(folder, journal, "--json")
    assert run.stderr == ""
    return run.returncode, {item["name"]: item for item in json.loads(run.stdout)}


# --- the clean export -------------------------------------------------------------------


def test_the_real_export_passes_every_check(exported: Exported) -> None:
    run = audit(exported.evidence, exported.journal)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"PASS {name}" for name in CHECKS]
    assert "signed by officer" in run.stdout  # the journal export's signature was checked
    assert "by a timestamp key of the root" in run.stdout  # the log key is anchored


def test_json_gives_one_object_per_check(exported: Exported) -> None:
    run = audit(exported.evidence, exported.journal, "--json")
    assert run.returncode == 0 and run.stderr == ""
    items = json.loads(run.stdout)
    assert [item["name"] for item in items] == CHECKS
    for item in items:
        assert set(item) == {"name", "ok", "detail"}
        assert item["ok"] is True and item["detail"]


def test_the_export_holds_every_publication_of_the_story(exported: Exported) -> None:
    """Roots v1, v2; populate (production); v2.0-update (wave, then production, same
    bytes); the renewal (production); v3.0-hotfix (wave, then revert)."""
    folder = exported.evidence
    pubs = json.loads((folder / "publications.json").read_text())["publications"]
    shown = [(p["role"], p.get("view"), p.get("wave"), p["payload"], p["version"]) for p in pubs]
    assert shown == [
        ("root", None, None, "root", 1),
        ("targets", "production", "populate-targets", "wave", 1),
        ("root", None, None, "root", 2),
        ("targets", "wave", "v2.0-update", "wave", 3),
        ("targets", "production", "v2.0-update", "wave", 3),
        ("targets", "production", None, "renew", 5),
        ("targets", "wave", "v3.0-hotfix", "wave", 6),
        ("targets", "revert", "v3.0-hotfix", "revert", 7),
    ]
    # wave complete re-publishes W's exact bytes as production
    assert (folder / "published/4.targets.json").read_bytes() == (
        folder / "published/5.targets.json"
    ).read_bytes()
    events = [json.loads(line) for line in (folder / "log/events.jsonl").read_text().splitlines()]
    kinds = {event["kind"] for event in events}
    assert {
        "token-created", "targets-added", "root-proposed", "wave-created", "renewal-requested",
        "request-operator-signed", "signatures-imported", "published", "wave-rolled-out",
        "wave-completed", "wave-canceled", "gpg-key-added",
    } <= kinds  # fmt: skip
    assert exported.listed.startswith(f"evidence: {len(list(_files(folder)))} files written")
    waves = json.loads((folder / "waves.json").read_text())["waves"]
    assert [(w["name"], w["status"]) for w in waves] == [
        ("populate-targets", "complete"),
        ("v2.0-update", "complete"),
        ("v3.0-hotfix", "canceled"),
    ]


def test_published_files_are_the_bytes_the_broker_stored(exported: Exported) -> None:
    """Never re-serialized: the file is what the database holds (and devices got)."""
    import sqlite3

    with sqlite3.connect(exported.data / "wavesign.db") as conn:
        stored = dict(conn.execute("SELECT seq, body FROM published_files").fetchall())
        roots = dict(conn.execute("SELECT version, root_json FROM roots").fetchall())
    for seq, body in stored.items():
        path = exported.evidence / f"published/{seq}.targets.json"
        if path.exists():
            assert path.read_bytes() == body.encode()
    for version, text in roots.items():
        assert (exported.evidence / f"root/{version}.root.json").read_bytes() == text.encode()


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


# --- forgeries ---------------------------------------------------------------------------


@pytest.fixture()
def forged(exported: Exported, tmp_path: Path) -> Exported:
    folder = tmp_path / "evidence"
    shutil.copytree(exported.evidence, folder)
    for suffix in ("", ".sig", ".officer.asc"):
        shutil.copy(f"{exported.journal}{suffix}", tmp_path / f"journal.jsonl{suffix}")
    return Exported(folder, tmp_path / "journal.jsonl", exported.data, exported.listed)


def _fails(copy: Exported, check: str) -> str:
    code, found = results(copy.evidence, copy.journal)
    assert code == 1
    assert found["manifest"]["ok"], "the forger fixed MANIFEST.json up"
    assert not found[check]["ok"], found
    detail: str = found[check]["detail"]
    run = audit(copy.evidence, copy.journal)
    assert run.returncode == 1 and f"FAIL {check}: " in run.stdout
    return detail


def _publications(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "publications.json").read_text())
    return data


def _set_publication_sha(folder: Path, seq: int) -> None:
    """A forger re-states the digest of an edited published file in the index."""
    pubs = _publications(folder)
    data = (folder / f"published/{seq}.targets.json").read_bytes()
    pubs["publications"][seq - 1]["sha256"] = digest_bytes(data)
    write_json(folder / "publications.json", pubs)


def test_an_edited_target_hash_breaks_the_targets_signatures(forged: Exported) -> None:
    path = forged.evidence / "published/5.targets.json"
    md = Metadata[Targets].from_bytes(path.read_bytes())
    name = sorted(md.signed.targets)[0]
    md.signed.targets[name].hashes["sha256"] = "ee" * 32
    path.write_bytes(md.to_bytes())
    _set_publication_sha(forged.evidence, 5)
    rewrite_manifest(forged.evidence)
    detail = _fails(forged, "targets-signatures")
    assert "publication 5" in detail and "does not match" not in detail


def test_a_dropped_root_version_breaks_the_root_chain(forged: Exported) -> None:
    (forged.evidence / "root/1.root.json").unlink()
    rewrite_manifest(forged.evidence)
    assert "root v1 is missing" in _fails(forged, "root-chain")


def test_a_replaced_signature_is_refused(forged: Exported) -> None:
    """The offline signature of a published file, swapped for one by another key."""
    path = forged.evidence / "published/7.targets.json"
    md = Metadata[Targets].from_bytes(path.read_bytes())
    online = json.loads((forged.evidence / "keys/online.json").read_text())["keys"]["targets"]
    offline_keyid = next(k for k in md.signatures if k != online["keyid"])
    impostor = sign_payload(generate_signer("ed25519"), md.signed.to_dict())
    md.signatures[offline_keyid].signature = impostor.signature
    path.write_bytes(md.to_bytes())
    _set_publication_sha(forged.evidence, 7)
    rewrite_manifest(forged.evidence)
    assert "publication 7" in _fails(forged, "targets-signatures")


def _events(folder: Path) -> list[LogEvent]:
    return [
        LogEvent.from_dict(json.loads(line), "event")
        for line in (folder / "log/events.jsonl").read_bytes().splitlines()
    ]


def _write_events(folder: Path, events: list[LogEvent]) -> None:
    (folder / "log/events.jsonl").write_bytes(b"".join(e.to_line() + b"\n" for e in events))


def test_a_deleted_event_breaks_the_log(forged: Exported) -> None:
    events = _events(forged.evidence)
    victim = next(e for e in events if e.kind == "wave-canceled")
    kept = [e for e in events if e.index != victim.index]
    renumbered = [
        LogEvent(i, e.time, e.actor, e.kind, e.subject, e.detail) for i, e in enumerate(kept)
    ]
    _write_events(forged.evidence, renumbered)
    pubs = _publications(forged.evidence)
    for pub in pubs["publications"]:
        pub["event"] -= 1 if pub["event"] > victim.index else 0
    write_json(forged.evidence / "publications.json", pubs)
    rewrite_manifest(forged.evidence)
    assert "the latest tree head covers" in _fails(forged, "log")


def test_reordered_journal_lines_break_the_journal(forged: Exported) -> None:
    lines = split_lines(forged.journal.read_bytes())
    assert len(lines) >= 4
    lines[1], lines[2] = lines[2], lines[1]
    forged.journal.write_bytes(b"".join(line + b"\n" for line in lines))
    assert "line 2" in _fails(forged, "journal")


def test_a_response_swapped_between_two_waves_is_refused(forged: Exported) -> None:
    waves = {
        w["name"]: w for w in json.loads((forged.evidence / "waves.json").read_text())["waves"]
    }
    first = forged.evidence / f"responses/{waves['populate-targets']['request']}.response.json"
    second = forged.evidence / f"responses/{waves['v2.0-update']['request']}.response.json"
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)
    rewrite_manifest(forged.evidence)
    detail = _fails(forged, "requests")
    assert f"answers request {waves['v2.0-update']['request']}" in detail


def test_a_tree_head_re_signed_over_a_rewritten_log_is_caught(forged: Exported) -> None:
    """The broker's own log key re-signs the newest head over an edited log; the older
    heads it signed before still pin the old history."""
    folder = forged.evidence
    events = _events(folder)
    edited = next(e for e in events if e.kind == "wave-rolled-out")
    events[edited.index] = LogEvent(
        edited.index, edited.time, "mallory", edited.kind, edited.subject, edited.detail
    )
    _write_events(folder, events)
    log_key = load_signer(forged.data / "keys/timestamp.key", None)
    heads = json.loads((folder / "log/heads.json").read_text())
    newest = TreeHead.from_dict(heads["heads"][-1]["signed"])
    tree = MerkleTree([event.leaf() for event in events])
    heads["heads"][-1] = sign_tree_head(
        log_key, TreeHead(newest.size, tree.root().hex(), newest.timestamp)
    )
    write_json(folder / "log/heads.json", heads)
    sizes = [TreeHead.from_dict(h["signed"]).size for h in heads["heads"]]
    write_json(
        folder / "log/consistency.json",
        {"format": "wavesign-evidence-consistency", "version": 1, "proofs": [
            {"old_size": old, "new_size": new,
             "proof": [n.hex() for n in tree.consistency_proof(old, new)]}
            for old, new in itertools.pairwise(sizes)
        ]},
    )  # fmt: skip
    inclusion = json.loads((folder / "log/inclusion.json").read_text())
    for proof in inclusion["proofs"]:
        proof["proof"] = [n.hex() for n in tree.inclusion_proof(proof["index"], newest.size)]
    write_json(folder / "log/inclusion.json", inclusion)
    rewrite_manifest(folder)
    assert "the log was rewritten" in _fails(forged, "log")


# --- refusals -----------------------------------------------------------------------------


def test_a_non_empty_destination_is_refused_and_left_unchanged(
    exported: Exported, tmp_path: Path
) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_bytes(b"mine\n")
    result = run_cli(
        "evidence", "export", "--out", str(target), url="http://127.0.0.1:9", token="x"
    )
    assert result.returncode == 1
    assert result.stderr == f"error: {target} is not empty: choose a new or empty folder\n"
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert (target / "notes.txt").read_bytes() == b"mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_the_manifest_lists_exactly_the_files(exported: Exported) -> None:
    manifest = json.loads((exported.evidence / "MANIFEST.json").read_bytes())
    on_disk = {
        p.relative_to(exported.evidence).as_posix(): digest_bytes(p.read_bytes())
        for p in _files(exported.evidence)
        if p.name != "MANIFEST.json"
    }
    assert manifest["files"] == on_disk
    assert (exported.evidence / "MANIFEST.json").read_bytes() == canonical_bytes(manifest) + b"\n"
