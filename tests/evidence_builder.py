"""Builds a valid evidence folder from real signatures, for the audit tests.

Everything is real: ed25519 TUF keys, GnuPG operator signatures and officer
attestations (``tests.gpghelpers`` identities), an appliance journal written with the
appliance's own :class:`wavesign.offline.journal.JournalEntry`, and a Merkle log with
signed tree heads. The story, in the order the broker would log it:

1. root v1 ceremony; root v1 published;
2. wave ``v1.0`` (tag ``production``, CI 10): W v1, R v2; rolled out (W published in
   the wave view); completed (W's bytes published as production); tree head 0;
3. root v2 rotation; root v2 published;
4. wave ``v2.0`` (CI 20): W v3, R v4; rolled out (W published); tree head 1;
   canceled (R published in the revert view); tree head 2.
"""

from __future__ import annotations

import copy
import itertools
import json
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp
from wavesign.shared.bundles import (
    Context,
    Payload,
    Purpose,
    SignatureEntry,
    SigningRequest,
    SigningResponse,
)
from wavesign.shared.canonical import canonical_bytes, digest, digest_bytes
from wavesign.shared.evidence import (
    MANIFEST,
    ConsistencyProof,
    InclusionProof,
    LogEvent,
    Manifest,
    OnlineKeys,
    Publication,
    WaveHistoryEntry,
    WaveRecord,
    document,
    publication_path,
    publications_document,
    root_path,
    waves_document,
)
from wavesign.shared.gpg import GnuPG
from wavesign.shared.journal_format import GENESIS, JournalEntry, PayloadRecord
from wavesign.shared.keys import generate_signer
from wavesign.shared.merkle import (
    MerkleTree,
    TreeHead,
    sign_tree_head,
)
from wavesign.shared.signing import sign_payload

from tests.bundle_builders import ci_target, targets_signed
from tests.gpghelpers import GpgIdentity

TAG = "production"
START = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


@dataclass
class Keys:
    root: CryptoSigner
    offline_targets: CryptoSigner
    online_targets: CryptoSigner
    snapshot: CryptoSigner
    timestamp: CryptoSigner

    @classmethod
    def generate(cls) -> Keys:
        return cls(*(generate_signer("ed25519") for _ in range(5)))

    @property
    def log(self) -> CryptoSigner:
        """The tree heads are signed with the online timestamp key."""
        return self.timestamp


@dataclass
class BuiltEvidence:
    folder: Path
    journal: Path
    trusted_root: Path
    keys: Keys
    operator: GpgIdentity
    officer: GpgIdentity


def rewrite_manifest(folder: Path) -> None:
    """Recompute MANIFEST.json over the folder, as a forger who edited files would."""
    manifest = json.loads((folder / MANIFEST).read_text())
    files = {
        path.relative_to(folder).as_posix(): digest_bytes(path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }
    manifest["files"] = files
    (folder / MANIFEST).write_bytes(canonical_bytes(manifest) + b"\n")


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(canonical_bytes(data) + b"\n")


@dataclass
class _Story:
    """The broker's and the appliance's state while the story is played."""

    out: Path
    keys: Keys
    operator: GpgIdentity
    officer: GpgIdentity
    clock: int = 0
    events: list[LogEvent] = field(default_factory=list)
    publications: list[Publication] = field(default_factory=list)
    journal: list[bytes] = field(default_factory=list)
    heads: list[TreeHead] = field(default_factory=list)
    files: dict[str, bytes] = field(default_factory=dict)
    roots: dict[int, Metadata[Root]] = field(default_factory=dict)

    def now(self) -> str:
        self.clock += 1
        return (START + timedelta(minutes=self.clock)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def event(self, kind: str, subject: str, detail: dict[str, Any] | None = None) -> LogEvent:
        event = LogEvent(len(self.events), self.now(), "olivia", kind, subject, detail or {})
        self.events.append(event)
        return event

    def head(self) -> None:
        tree = MerkleTree([event.leaf() for event in self.events])
        self.heads.append(TreeHead(tree.size, tree.root().hex(), self.now()))

    # -- bundles -----------------------------------------------------------------
    def request(
        self, request_id: str, purpose: Purpose, payloads: list[Payload], context: Context
    ) -> SigningRequest:
        request = SigningRequest(request_id, "acme", self.now(), purpose, tuple(payloads), context)
        signature = GnuPG(self.operator.home).sign_detached(
            self.operator.fingerprint, request.signing_bytes()
        )
        request = request.with_operator_signature(signature)
        self.files[f"requests/{request_id}.request.json"] = request.to_bytes() + b"\n"
        self.event("request-created", request_id, {"request_sha256": request.digest()})
        return request

    def respond(
        self,
        request: SigningRequest,
        signed: dict[str, dict[str, Any]],
        signers: dict[str, list[Signer]],
        root: Metadata[Root] | None = None,
    ) -> SigningResponse:
        """The appliance signs, attests and journals; the broker imports the response."""
        entries = []
        for name, payload_signers in signers.items():
            for signer in payload_signers:
                sig = sign_payload(signer, signed[name])
                entries.append(SignatureEntry(name, digest(signed[name]), sig.keyid, sig.signature))
        head = digest_bytes(self.journal[-1]) if self.journal else GENESIS
        response = SigningResponse(
            request.digest(),
            tuple(entries),
            root=root.to_dict() if root else None,
            journal_head=head,
        )
        response = response.with_attestation(
            GnuPG(self.officer.home).sign_detached(
                self.officer.fingerprint, response.signing_bytes()
            )
        )
        entry = JournalEntry(
            index=len(self.journal) + 1,
            time=self.now(),
            kind="sign",
            request_id=request.id,
            request_sha256=request.digest(),
            purpose=request.purpose.to_dict(),
            tag=request.purpose.tag,
            payloads=tuple(
                PayloadRecord(
                    p.name, p.role, digest(signed[p.name]), int(signed[p.name]["version"])
                )
                for p in request.payloads
            ),
            keyids=tuple(dict.fromkeys(e.keyid for e in entries)),
            confirmation=request.purpose.confirmation_text(),
            response_sha256=response.digest(),
            prev=head,
        )
        self.journal.append(entry.to_line())
        self.files[f"responses/{request.id}.response.json"] = response.to_bytes() + b"\n"
        self.event("signatures-imported", request.id, {"response_sha256": response.digest()})
        return response

    # -- publications ------------------------------------------------------------
    def publish(
        self,
        role: str,
        data: bytes,
        version: int,
        request: str,
        payload: str,
        **targets_fields: Any,
    ) -> Publication:
        seq = len(self.publications) + 1
        fields = dict(view=None, tag=None, wave=None, root_version=None) | targets_fields
        pub = Publication(
            seq,
            self.now(),
            role,
            version,
            digest_bytes(data),
            request,
            payload,
            event=len(self.events),
            **fields,
        )
        self.event("published", f"{role} v{version}", pub.event_detail())
        self.publications.append(pub)
        self.files[root_path(version) if role == "root" else publication_path(seq)] = data
        return pub

    def root_ceremony(self, version: int) -> None:
        keys = self.keys
        root = Root(version=version, expires=START + timedelta(days=365), consistent_snapshot=True)
        root.add_key(keys.root.public_key, "root")
        for key in (keys.online_targets, keys.offline_targets):
            root.add_key(key.public_key, "targets")
        root.roles["targets"].threshold = 2
        root.add_key(keys.snapshot.public_key, "snapshot")
        root.add_key(keys.timestamp.public_key, "timestamp")
        signed = root.to_dict()
        request = self.request(
            f"root-v{version}",
            Purpose("root", root_version=version),
            [Payload.create("root", "root", signed, [keys.root.public_key.keyid])],
            Context(root_version=version - 1),
        )
        md = Metadata(Root.from_dict(copy.deepcopy(signed)))
        sig = sign_payload(keys.root, signed)
        md.signatures[sig.keyid] = sig
        self.respond(request, {"root": signed}, {"root": [keys.root]}, root=md)
        self.event("root-added", f"root v{version}")
        self.roots[version] = md
        self.publish("root", md.to_bytes(), version, request.id, "root")

    def wave_request(
        self,
        name: str,
        ci: int,
        production: dict[str, Any] | None,
        version: int,
        new: dict[str, Any],
    ) -> tuple[SigningRequest, bytes, bytes]:
        """Init, sign and import a wave; returns the request and the W and R file bytes."""
        keys = self.keys
        base = dict(production["targets"]) if production else {}
        w = targets_signed({**base, **new}, version)
        r = targets_signed(base, version + 1)
        keyids = [keys.online_targets.public_key.keyid, keys.offline_targets.public_key.keyid]
        context = Context(
            root_version=max(self.roots),
            production_version=production["version"] if production else None,
            production_sha256=digest(production) if production else None,
        )
        self.event("wave-created", name, {"ci_version": ci, "tag": TAG})
        request = self.request(
            f"wave-{name}",
            Purpose("wave", wave=name, tag=TAG, ci_version=ci),
            [
                Payload.create("wave", "targets", w, keyids),
                Payload.create("revert", "targets", r, keyids),
            ],
            context,
        )
        self.respond(
            request,
            {"wave": w, "revert": r},
            {"wave": [keys.offline_targets], "revert": [keys.offline_targets]},
        )
        files = []
        for signed in (w, r):
            md = Metadata(Targets.from_dict(copy.deepcopy(signed)))
            for signer in (keys.offline_targets, keys.online_targets):
                sig = sign_payload(signer, signed)
                md.signatures[sig.keyid] = sig
            files.append(md.to_bytes())
        return request, files[0], files[1]


def _history(story: _Story, name: str) -> tuple[WaveHistoryEntry, ...]:
    kinds = {"wave-created", "wave-rolled-out", "wave-canceled", "wave-completed"}
    return tuple(
        WaveHistoryEntry(e.index, e.kind, e.time, e.detail)
        for e in story.events
        if e.kind in kinds and e.subject == name
    )


def build_evidence(out: Path, operator: GpgIdentity, officer: GpgIdentity) -> BuiltEvidence:
    """Play the story and write the evidence folder ``out/evidence`` and journal."""
    keys = Keys.generate()
    story = _Story(out, keys, operator, officer)
    story.event("server-initialized", "acme")
    story.root_ceremony(1)

    story.event("targets-added", "1 targets", {"ci_version": 10})
    t10 = {"intel-corei7-64-lmp-10": ci_target("intel-corei7-64-lmp", 10)}
    req_a, w_a, _ = story.wave_request("v1.0", 10, None, 1, t10)
    story.event("wave-rolled-out", "v1.0", {"group": "canary", "devices": 3})
    story.publish(
        "targets", w_a, 1, req_a.id, "wave", view="wave", tag=TAG, wave="v1.0", root_version=1
    )
    story.event("wave-completed", "v1.0")
    story.publish(
        "targets", w_a, 1, req_a.id, "wave", view="production", tag=TAG, wave="v1.0", root_version=1
    )
    story.head()

    story.root_ceremony(2)
    story.event("targets-added", "1 targets", {"ci_version": 20})
    production = Metadata[Targets].from_bytes(w_a).signed.to_dict()
    t20 = {"intel-corei7-64-lmp-20": ci_target("intel-corei7-64-lmp", 20)}
    req_b, w_b, r_b = story.wave_request("v2.0", 20, production, 3, t20)
    story.event("wave-rolled-out", "v2.0", {"group": "canary", "devices": 3})
    story.publish(
        "targets", w_b, 3, req_b.id, "wave", view="wave", tag=TAG, wave="v2.0", root_version=2
    )
    story.head()
    story.event("wave-canceled", "v2.0")
    story.publish(
        "targets", r_b, 4, req_b.id, "revert", view="revert", tag=TAG, wave="v2.0", root_version=2
    )
    story.head()

    waves = [
        WaveRecord(
            "v1.0",
            TAG,
            10,
            "complete",
            req_a.id,
            1,
            2,
            req_a.payload("wave").sha256,
            req_a.payload("revert").sha256,
            _history(story, "v1.0"),
        ),
        WaveRecord(
            "v2.0",
            TAG,
            20,
            "canceled",
            req_b.id,
            3,
            4,
            req_b.payload("wave").sha256,
            req_b.payload("revert").sha256,
            _history(story, "v2.0"),
        ),
    ]
    return _write(story, waves, w_a)


def _current(keys: Keys, production: bytes) -> tuple[bytes, bytes]:
    """The production view's snapshot and timestamp (global counter at 7)."""
    expires = START + timedelta(days=365)
    snapshot = Snapshot(version=7, expires=expires)
    snapshot.meta["targets.json"] = MetaFile(
        version=Metadata[Targets].from_bytes(production).signed.version,
        length=len(production),
        hashes={"sha256": digest_bytes(production)},
    )
    snapshot_md = Metadata(snapshot)
    sig = sign_payload(keys.snapshot, snapshot)
    snapshot_md.signatures[sig.keyid] = sig
    snapshot_bytes = snapshot_md.to_bytes()
    timestamp = Timestamp(
        version=7,
        expires=expires,
        snapshot_meta=MetaFile(
            version=7, length=len(snapshot_bytes), hashes={"sha256": digest_bytes(snapshot_bytes)}
        ),
    )
    timestamp_md = Metadata(timestamp)
    sig = sign_payload(keys.timestamp, timestamp)
    timestamp_md.signatures[sig.keyid] = sig
    return snapshot_bytes, timestamp_md.to_bytes()


def _write(story: _Story, waves: list[WaveRecord], production: bytes) -> BuiltEvidence:
    keys = story.keys
    folder = story.out / "evidence"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for relative, data in story.files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    snapshot, timestamp = _current(keys, production)
    (folder / "current").mkdir()
    (folder / f"current/{TAG}.snapshot.json").write_bytes(snapshot)
    (folder / f"current/{TAG}.timestamp.json").write_bytes(timestamp)
    online = OnlineKeys(
        {
            "targets": keys.online_targets.public_key,
            "snapshot": keys.snapshot.public_key,
            "timestamp": keys.timestamp.public_key,
            "log": keys.log.public_key,
        }
    )
    write_json(folder / "keys/online.json", online.to_dict())
    (folder / "keys/operators.asc").write_text(story.operator.public_key)
    (folder / "keys/officers.asc").write_text(story.officer.public_key)
    write_json(folder / "publications.json", publications_document(story.publications))
    write_json(folder / "waves.json", waves_document(waves))
    write_log(folder, story.events, story.heads, keys.log, [p.event for p in story.publications])
    write_json(folder / MANIFEST, Manifest("acme", "2026-12-02T00:00:00Z", {}).to_dict())
    rewrite_manifest(folder)

    journal = story.out / "journal.jsonl"
    raw = b"".join(line + b"\n" for line in story.journal)
    journal.write_bytes(raw)
    gpg = GnuPG(story.officer.home)
    journal.with_name("journal.jsonl.sig").write_text(
        gpg.sign_detached(story.officer.fingerprint, raw) + "\n"
    )
    journal.with_name("journal.jsonl.officer.asc").write_text(story.officer.public_key)
    trusted = story.out / "trusted-root.json"
    trusted.write_bytes(story.roots[1].to_bytes())
    return BuiltEvidence(folder, journal, trusted, keys, story.operator, story.officer)


def write_log(
    folder: Path, events: list[LogEvent], heads: list[TreeHead], signer: Signer, included: list[int]
) -> None:
    """Write the event log, its signed heads and the proofs (also used by forgers)."""
    log = folder / "log"
    log.mkdir(exist_ok=True)
    (log / "events.jsonl").write_bytes(b"".join(e.to_line() + b"\n" for e in events))
    tree = MerkleTree([event.leaf() for event in events])
    write_json(
        log / "heads.json",
        document("tree-heads", "heads", [sign_tree_head(signer, h) for h in heads]),
    )
    proofs = [
        ConsistencyProof(old.size, new.size, tuple(tree.consistency_proof(old.size, new.size)))
        for old, new in itertools.pairwise(heads)
    ]
    write_json(log / "consistency.json", document("consistency", "proofs", proofs))
    latest = heads[-1].size
    inclusion = [
        InclusionProof(i, latest, tuple(tree.inclusion_proof(i, latest))) for i in included
    ]
    write_json(log / "inclusion.json", document("inclusion", "proofs", inclusion))
