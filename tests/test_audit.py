"""``wavesign-audit verify``: a clean evidence export passes, every forgery fails.

The evidence is built by ``tests.evidence_builder`` with real ed25519 TUF keys, real
GnuPG and a journal written by the appliance's own journal code. Each tamper test
edits a copy the way a forger would, recomputes MANIFEST.json (so the manifest
check cannot be what catches it), and expects the named check to fail.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tuf.api.metadata import Metadata, Root, Targets
from wavesign.shared.audit import (
    AuditContext,
    CheckResult,
    JournalFile,
    check_versions,
    run_checks,
    verify_journal_chain,
)
from wavesign.shared.bundles import Purpose, SigningRequest
from wavesign.shared.canonical import canonical_bytes, digest_bytes
from wavesign.shared.evidence import Evidence, LogEvent
from wavesign.shared.gpg import GnuPG
from wavesign.shared.journal_format import split_lines, verify_lines
from wavesign.shared.keys import generate_signer
from wavesign.shared.merkle import MerkleTree, TreeHead, sign_tree_head
from wavesign.shared.signing import sign_payload

from tests.evidence_builder import (
    BuiltEvidence,
    build_evidence,
    rewrite_manifest,
    write_json,
)

CHECK_NAMES = [
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


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, operator_gpg: Any, officer_gpg: Any):
    return build_evidence(tmp_path_factory.mktemp("evidence"), operator_gpg, officer_gpg)


@pytest.fixture()
def copy(built: BuiltEvidence, tmp_path: Path) -> BuiltEvidence:
    """A private copy of the clean evidence folder and journal export."""
    folder = tmp_path / "evidence"
    shutil.copytree(built.folder, folder)
    for suffix in ("", ".sig", ".officer.asc"):
        shutil.copy(f"{built.journal}{suffix}", tmp_path / f"journal.jsonl{suffix}")
    return BuiltEvidence(
        folder,
        tmp_path / "journal.jsonl",
        built.trusted_root,
        built.keys,
        built.operator,
        built.officer,
    )


def audit(
    ev: BuiltEvidence, *, journal: bool = True, trusted: bool = True
) -> dict[str, CheckResult]:
    results = run_checks(
        ev.folder,
        [JournalFile.read(ev.journal)] if journal else [],
        ev.trusted_root.read_bytes() if trusted else None,
    )
    assert [r.name for r in results] == CHECK_NAMES
    return {r.name: r for r in results}


def failing(results: dict[str, CheckResult]) -> set[str]:
    return {name for name, r in results.items() if not r.ok}


def load(path: Path) -> Any:
    return json.loads(path.read_bytes())


def forge_publication(ev: BuiltEvidence, seq: int, data: bytes) -> None:
    """Replace a published targets file and fix its sha256 in publications.json."""
    (ev.folder / f"published/{seq}.targets.json").write_bytes(data)
    index = load(ev.folder / "publications.json")
    index["publications"][seq - 1]["sha256"] = digest_bytes(data)
    write_json(ev.folder / "publications.json", index)


# --- the clean export ------------------------------------------------------------


def test_clean_evidence_passes_every_check(built: BuiltEvidence) -> None:
    results = audit(built)
    assert failing(results) == set()
    assert "trusted root v1" in results["root-chain"].detail
    assert "signed by officer " + built.officer.fingerprint in results["journal"].detail
    assert "6 publications" in results["log"].detail


def test_without_trusted_root_the_chain_is_trust_on_first_use(built: BuiltEvidence) -> None:
    results = audit(built, journal=False, trusted=False)
    assert failing(results) == set()
    assert "trust on first use" in results["root-chain"].detail
    assert results["journal"].detail == "skipped: no --offline-journal given"
    assert "journal entries not checked" in results["requests"].detail


def test_builder_journal_satisfies_the_appliance_own_verifier(built: BuiltEvidence) -> None:
    raw = built.journal.read_bytes()
    appliance = verify_lines(split_lines(raw))
    ours = verify_journal_chain(raw)
    assert appliance.ok and ours.ok
    assert (len(ours.entries), ours.head) == (appliance.lines, appliance.head) == (4, ours.head)


def test_cli_json_clean_exit_0(built: BuiltEvidence) -> None:
    result = subprocess.run(
        [
            Path(sys.executable).with_name("wavesign-audit"),
            "verify",
            built.folder,
            "--json",
            "--offline-journal",
            built.journal,
            "--trusted-root",
            built.trusted_root,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert [entry["name"] for entry in document] == CHECK_NAMES
    assert all(entry["ok"] is True and set(entry) == {"name", "ok", "detail"} for entry in document)


# --- forgeries ---------------------------------------------------------------------


def test_edited_target_hash_fails_targets_signatures(copy: BuiltEvidence) -> None:
    path = copy.folder / "published/5.targets.json"
    md = load(path)
    target = md["signed"]["targets"]["intel-corei7-64-lmp-20"]
    target["hashes"]["sha256"] = "00" * 32
    forge_publication(copy, 5, json.dumps(md).encode())
    rewrite_manifest(copy.folder)
    results = audit(copy)
    assert "targets-signatures" in failing(results)
    assert "publication 5" in results["targets-signatures"].detail
    assert "0/2 distinct keys" in results["targets-signatures"].detail
    assert results["manifest"].ok


@pytest.mark.parametrize("dropped", [1, 2])
def test_dropped_root_version_fails_root_chain(copy: BuiltEvidence, dropped: int) -> None:
    (copy.folder / f"root/{dropped}.root.json").unlink()
    rewrite_manifest(copy.folder)
    results = audit(copy, trusted=False)
    assert "root-chain" in failing(results)
    assert results["manifest"].ok
    if dropped == 1:
        assert "root v1 is missing" in results["root-chain"].detail
    else:
        assert "root publications are versions [1, 2]" in results["root-chain"].detail
        assert "root v2 did not verify" in results["targets-signatures"].detail


def test_replaced_signature_fails_targets_signatures(copy: BuiltEvidence) -> None:
    path = copy.folder / "published/5.targets.json"
    md = Metadata[Targets].from_bytes(path.read_bytes())
    other = Metadata[Targets].from_bytes((copy.folder / "published/2.targets.json").read_bytes())
    offline = copy.keys.offline_targets
    # A genuine signature by the offline key, but over another file (W of wave v1.0).
    md.signatures[offline.public_key.keyid] = sign_payload(offline, other.signed)
    forge_publication(copy, 5, md.to_bytes())
    rewrite_manifest(copy.folder)
    results = audit(copy)
    assert "targets-signatures" in failing(results)
    assert "1/2 distinct keys" in results["targets-signatures"].detail
    assert "invalid signatures from " + offline.public_key.keyid[:16] in (
        results["targets-signatures"].detail
    )


def test_signature_by_a_key_outside_the_root_does_not_count(copy: BuiltEvidence) -> None:
    path = copy.folder / "published/5.targets.json"
    md = Metadata[Targets].from_bytes(path.read_bytes())
    offline_id = copy.keys.offline_targets.public_key.keyid
    del md.signatures[offline_id]
    stranger = generate_signer("ed25519")
    md.signatures[stranger.public_key.keyid] = sign_payload(stranger, md.signed)
    forge_publication(copy, 5, md.to_bytes())
    rewrite_manifest(copy.folder)
    results = audit(copy)
    assert "targets-signatures" in failing(results)
    assert "unlisted keys " + stranger.public_key.keyid[:16] in results["targets-signatures"].detail


def test_deleted_event_fails_log(copy: BuiltEvidence) -> None:
    path = copy.folder / "log/events.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    rolled_out = next(i for i, line in enumerate(lines) if b'"wave-rolled-out"' in line)
    # The forger also renumbers the events after the gap so the file still parses.
    events = [LogEvent.from_dict(json.loads(line), "e") for line in lines]
    del events[rolled_out]
    renumbered = [
        LogEvent(i, e.time, e.actor, e.kind, e.subject, e.detail) for i, e in enumerate(events)
    ]
    path.write_bytes(b"".join(e.to_line() + b"\n" for e in renumbered))
    rewrite_manifest(copy.folder)
    results = audit(copy)
    assert "log" in failing(results)
    assert "do not recompute to tree head 0's root" in results["log"].detail


def test_naively_deleted_event_line_is_named(copy: BuiltEvidence) -> None:
    path = copy.folder / "log/events.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    del lines[3]
    path.write_bytes(b"".join(lines))
    rewrite_manifest(copy.folder)
    results = audit(copy)
    assert "log" in failing(results)
    assert "log/events.jsonl line 4: holds event 4, expected 3" in results["log"].detail


def test_reordered_journal_lines_fail_journal(copy: BuiltEvidence) -> None:
    lines = copy.journal.read_bytes().splitlines(keepends=True)
    lines[1], lines[2] = lines[2], lines[1]
    copy.journal.write_bytes(b"".join(lines))
    results = audit(copy)
    assert "journal" in failing(results)
    assert "line 2 holds entry 3" in results["journal"].detail


def test_edited_journal_line_is_named(copy: BuiltEvidence) -> None:
    lines = copy.journal.read_bytes().splitlines(keepends=True)
    entry = json.loads(lines[1])
    entry["confirmation"] = "something-else"
    lines[1] = canonical_bytes(entry) + b"\n"
    copy.journal.write_bytes(b"".join(lines))
    results = audit(copy)
    assert "journal" in failing(results)
    assert "line 2 was changed: line 3 records a different hash for it" in (
        results["journal"].detail
    )


def test_journal_signature_must_cover_the_journal(copy: BuiltEvidence) -> None:
    raw = copy.journal.read_bytes()
    copy.journal.write_bytes(raw[: raw.index(b"\n") + 1])  # a valid one-line chain
    results = audit(copy)
    assert "journal" in failing(results)
    assert "journal.jsonl.sig" in results["journal"].detail
    assert "does not verify" in results["journal"].detail


def test_missing_journal_entry_fails_requests(copy: BuiltEvidence, tmp_path: Path) -> None:
    raw = copy.journal.read_bytes()
    short = tmp_path / "short.jsonl"  # unsigned: the first three ceremonies only
    short.write_bytes(b"".join(raw.splitlines(keepends=True)[:3]))
    results = {r.name: r for r in run_checks(copy.folder, [JournalFile.read(short)])}
    assert results["journal"].ok
    assert "unsigned" in results["journal"].detail
    assert not results["requests"].ok
    detail = results["requests"].detail
    assert "publication 5 (wave targets v3 of wave v2.0" in detail
    assert "publication 6 (revert targets v4 of wave v2.0" in detail
    assert "no offline journal entry" in detail


def test_response_swapped_between_waves_fails_requests(copy: BuiltEvidence) -> None:
    a = copy.folder / "responses/wave-v1.0.response.json"
    b = copy.folder / "responses/wave-v2.0.response.json"
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    rewrite_manifest(copy.folder)
    results = audit(copy)
    assert "requests" in failing(results)
    detail = results["requests"].detail
    assert "responses/wave-v1.0.response.json answers request wave-v2.0, not request wave-v1.0" in (
        detail
    )


def test_resigned_tree_head_over_rewritten_log_fails_log(copy: BuiltEvidence) -> None:
    """The forger holds the log key: rewrites an old event, re-signs a new latest head."""
    folder = copy.folder
    events = [
        LogEvent.from_dict(json.loads(line), "e")
        for line in (folder / "log/events.jsonl").read_bytes().splitlines()
    ]
    first = events[1]
    events[1] = LogEvent(
        first.index, first.time, "mallory", first.kind, first.subject, first.detail
    )
    (folder / "log/events.jsonl").write_bytes(b"".join(e.to_line() + b"\n" for e in events))
    tree = MerkleTree([e.leaf() for e in events])
    heads = load(folder / "log/heads.json")
    old = [TreeHead.from_dict(h["signed"]) for h in heads["heads"]]
    new_latest = TreeHead(tree.size, tree.root().hex(), "2026-12-02T09:00:00Z")
    heads["heads"][-1] = sign_tree_head(copy.keys.log, new_latest)
    write_json(folder / "log/heads.json", heads)
    consistency = load(folder / "log/consistency.json")
    consistency["proofs"][-1]["proof"] = [
        node.hex() for node in tree.consistency_proof(old[-2].size, tree.size)
    ]
    write_json(folder / "log/consistency.json", consistency)
    inclusion = load(folder / "log/inclusion.json")
    for proof in inclusion["proofs"]:
        proof["proof"] = [node.hex() for node in tree.inclusion_proof(proof["index"], tree.size)]
    write_json(folder / "log/inclusion.json", inclusion)
    rewrite_manifest(folder)
    results = audit(copy)
    assert failing(results) == {"log"}
    assert "tree head 1 (size" in results["log"].detail
    assert "the log was rewritten" in results["log"].detail


def test_unlisted_edit_fails_manifest(copy: BuiltEvidence) -> None:
    (copy.folder / "waves.json").write_bytes(b"{}\n")
    (copy.folder / "notes.txt").write_text("hello")
    results = audit(copy)
    assert "manifest" in failing(results)
    assert "waves.json does not match its sha256" in results["manifest"].detail
    assert "notes.txt is in the folder but not in MANIFEST.json" in results["manifest"].detail


def test_canceled_wave_promoted_to_production_fails_waves(copy: BuiltEvidence) -> None:
    waves = load(copy.folder / "waves.json")
    waves["waves"][0]["status"] = "canceled"
    write_json(copy.folder / "waves.json", waves)
    rewrite_manifest(copy.folder)
    results = audit(copy)
    assert failing(results) == {"waves"}
    assert "wave v1.0 is canceled, yet publication 3" in results["waves"].detail


def test_revert_with_other_targets_fails_waves(copy: BuiltEvidence) -> None:
    """Even a revert signed by both real keys must hold the pre-wave production."""
    md = Metadata[Targets].from_bytes((copy.folder / "published/6.targets.json").read_bytes())
    md.signed.targets.clear()
    md.signatures.clear()
    for signer in (copy.keys.offline_targets, copy.keys.online_targets):
        sig = sign_payload(signer, md.signed)
        md.signatures[sig.keyid] = sig
    forge_publication(copy, 6, md.to_bytes())
    rewrite_manifest(copy.folder)
    results = audit(copy)
    assert "waves" in failing(results)
    assert (
        "publication 6 (revert targets v4 of wave v2.0, tag production) does not hold "
        "exactly the pre-wave production targets" in results["waves"].detail
    )
    # The officer never signed this R: the response's signatures do not match it.
    assert "requests" in failing(results)


def test_untrusted_root_fails_root_chain(copy: BuiltEvidence, tmp_path: Path) -> None:
    other = generate_signer("ed25519")
    root = Root(version=1)
    root.add_key(other.public_key, "root")
    md = Metadata(root)
    sig = sign_payload(other, root)
    md.signatures[sig.keyid] = sig
    trusted = tmp_path / "other-root.json"
    trusted.write_bytes(md.to_bytes())
    ev = BuiltEvidence(copy.folder, copy.journal, trusted, copy.keys, copy.operator, copy.officer)
    results = audit(ev)
    assert "root-chain" in failing(results)
    assert "root v1 in the evidence differs from the trusted root" in results["root-chain"].detail


def test_operator_signature_by_an_unknown_key_fails_requests(copy: BuiltEvidence) -> None:
    path = copy.folder / "requests/wave-v2.0.request.json"
    request = load(path)
    sig = base64.b64decode(request["operator_signature"])
    request["operator_signature"] = base64.b64encode(sig[:-4] + b"\0\0\0\0").decode()
    path.write_bytes(canonical_bytes(request) + b"\n")
    rewrite_manifest(copy.folder)
    results = audit(copy)
    assert failing(results) == {"requests"}
    assert "request wave-v2.0: operator signature" in results["requests"].detail


# --- malformed evidence and the CLI ------------------------------------------------


def test_cli_tampered_evidence_exits_1_naming_the_check(copy: BuiltEvidence) -> None:
    (copy.folder / "root/1.root.json").unlink()
    rewrite_manifest(copy.folder)
    result = subprocess.run(
        [Path(sys.executable).with_name("wavesign-audit"), "verify", copy.folder],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("PASS manifest: ")
    assert "FAIL root-chain: root v1 is missing: the evidence has root versions 2" in lines
    assert len(lines) == len(CHECK_NAMES)
    assert result.stderr == ""


def test_cli_on_garbage_prints_fail_lines_never_a_traceback(tmp_path: Path) -> None:
    folder = tmp_path / "garbage"
    folder.mkdir()
    (folder / "MANIFEST.json").write_bytes(b'{"format": 1.5}')
    (folder / "publications.json").write_bytes(b"\xff\xfe not json")
    (folder / "root").mkdir()
    (folder / "root/1.root.json").write_bytes(b'{"signed": {}, "signatures": []}')
    result = subprocess.run(
        [Path(sys.executable).with_name("wavesign-audit"), "verify", folder, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr == ""
    document = json.loads(result.stdout)
    assert [entry["name"] for entry in document] == CHECK_NAMES
    by_name = {entry["name"]: entry for entry in document}
    assert by_name["manifest"] == {
        "name": "manifest",
        "ok": False,
        "detail": "MANIFEST.json: floats are not allowed (found 1.5)",
    }
    assert "1.root.json is not TUF metadata" in by_name["root-chain"]["detail"]
    assert by_name["versions"]["detail"] == "publications.json is not UTF-8 text"
    assert not any(entry["ok"] for entry in document if entry["name"] != "journal")


def test_cli_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [Path(sys.executable).with_name("wavesign-audit"), "verify", tmp_path / "nope"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr


# --- the version rule, as a pure function over a minimal folder --------------------


def _versions_folder(tmp_path: Path, steps: list[tuple[str, str, int, str]]) -> AuditContext:
    """Publications of (view, wave, version, content label), unsigned: only versions matter."""
    folder = tmp_path / "ev"
    publications = []
    for seq, (view, wave, version, label) in enumerate(steps, start=1):
        from tests.tuf_builders import make_targets

        data = make_targets([label], version=version).to_bytes()
        (folder / "published").mkdir(parents=True, exist_ok=True)
        (folder / f"published/{seq}.targets.json").write_bytes(data)
        publications.append(
            {
                "seq": seq,
                "time": "2026-12-01T10:00:00Z",
                "role": "targets",
                "version": version,
                "sha256": digest_bytes(data),
                "request": f"wave-{wave}",
                "payload": "wave",
                "event": seq,
                "view": view,
                "tag": "production",
                "wave": wave,
                "root_version": 1,
            }
        )
    write_json(
        folder / "publications.json",
        {
            "format": "wavesign-evidence-publications",
            "version": 1,
            "publications": publications,
        },
    )
    return AuditContext(Evidence(folder), keyrings=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ([("wave", "a", 1, "x"), ("production", "a", 1, "x"), ("wave", "b", 3, "y")], None),
        (
            [("wave", "a", 5, "x"), ("wave", "b", 4, "y")],
            "publication 2 (wave targets v4 of wave b, tag production) is not above v5",
        ),
        (
            [("wave", "a", 5, "x"), ("production", "a", 5, "z")],
            "publication 2 (production targets v5 of wave a, tag production) is not above v5",
        ),
        (
            [("wave", "a", 5, "x"), ("production", "b", 5, "x")],
            "is not a re-publication of that identical file",
        ),
        (
            [("production", "a", 5, "x"), ("production", "b", 5, "x")],
            "publication 2 (production targets v5 of wave b, tag production) is not above v5",
        ),
        (
            [("wave", "a", 2, "x"), ("wave", "b", 3, "y"), ("production", "a", 2, "x")],
            "publication 3 (production targets v2 of wave a, tag production) is not above v3",
        ),
        ([("wave", "a", 2, "x"), ("wave", "a", 2, "x"), ("production", "a", 2, "x")], None),
        ([("wave", "a", 2, "x"), ("production", "a", 2, "x"), ("production", "a", 2, "x")], None),
        (
            [("production", "r", 2, "x"), ("production", "s", 2, "x")],
            "publication 2 (production targets v2 of wave s, tag production) is not above v2",
        ),
        (
            [("production", "a", 4, "x"), ("wave", "b", 5, "y"), ("production", "c", 3, "z")],
            "production goes from v4 to v3",
        ),
    ],
)
def test_version_rule(
    tmp_path: Path, steps: list[tuple[str, str, int, str]], problem: str | None
) -> None:
    result = check_versions(_versions_folder(tmp_path, steps))
    if problem is None:
        assert result.ok, result.detail
    else:
        assert not result.ok
        assert problem in result.detail


def test_pending_request_without_response_is_fine(copy: BuiltEvidence) -> None:
    request = SigningRequest.from_bytes(
        (copy.folder / "requests/wave-v2.0.request.json").read_bytes()
    )
    pending = dataclasses.replace(
        request,
        id="wave-v3.0",
        purpose=Purpose("wave", wave="v3.0", tag="production", ci_version=30),
    )
    signature = GnuPG(copy.operator.home).sign_detached(
        copy.operator.fingerprint, pending.signing_bytes()
    )
    (copy.folder / "requests/wave-v3.0.request.json").write_bytes(
        pending.with_operator_signature(signature).to_bytes()
    )
    rewrite_manifest(copy.folder)
    results = audit(copy)
    assert failing(results) == set()
    assert (
        "5 requests operator-signed, 4 answered by attested responses (1 awaiting "
        "signatures)" in results["requests"].detail
    )


def test_published_payload_without_response_fails_requests(copy: BuiltEvidence) -> None:
    (copy.folder / "responses/wave-v2.0.response.json").unlink()
    rewrite_manifest(copy.folder)
    results = audit(copy)
    assert failing(results) == {"requests"}
    assert (
        "publication 5 (wave targets v3 of wave v2.0, tag production): "
        "responses/wave-v2.0.response.json is missing from the evidence folder"
        in results["requests"].detail
    )


def test_truncated_files_fail_cleanly(built: BuiltEvidence, tmp_path: Path) -> None:
    """Cut each file in half: some check fails, with a one-line reason, never a crash."""
    names = sorted(p.relative_to(built.folder) for p in built.folder.rglob("*") if p.is_file())
    assert len(names) == 26  # 25 listed in MANIFEST.json, and the manifest itself
    for number, name in enumerate(names):
        folder = tmp_path / str(number)
        shutil.copytree(built.folder, folder)
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
        if name.as_posix() != "MANIFEST.json":
            rewrite_manifest(folder)
        results = run_checks(folder)
        failed = [r for r in results if not r.ok]
        assert failed, name
        for result in results:
            assert "\n" not in result.detail
            assert "unreadable evidence" not in result.detail, (name, result)
