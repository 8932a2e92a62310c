"""The auditor's checks over an evidence export (``wavesign-audit verify``).

Each check is a function of an :class:`AuditContext` returning a
:class:`CheckResult`. Nothing is taken from the broker on its word: digests are
recomputed, signatures verified, and Merkle trees rebuilt from the exported events.
A malformed part of the export fails the checks that need it, with a one-line detail,
and the other checks still run. What each check proves, and what it cannot prove, is
written up in ``docs/audit.md``; the folder format in ``docs/formats/evidence.md``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from securesystemslib.signer import Key, Signature
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

from .bundles import SigningRequest, SigningResponse
from .canonical import canonical_bytes, digest, digest_bytes
from .errors import WavesignError
from .evidence import (
    MANIFEST,
    PUBLISHED_EVENT,
    Evidence,
    EvidenceError,
    Publication,
    WaveRecord,
    publication_path,
    root_path,
)
from .gpg import GnuPG
from .journal_format import JournalEntry, verify_journal_chain
from .keys import public_identity
from .merkle import (
    TreeHead,
    root_hash,
    verify_consistency,
    verify_inclusion,
    verify_tree_head,
)
from .rootchain import verify_root_update
from .signing import check_threshold, verify_signature

__all__ = [
    "CHECKS",
    "AuditContext",
    "CheckResult",
    "JournalFile",
    "run_checks",
    "verify_journal_chain",
]

_MAX_LISTED = 3

T = TypeVar("T")


@dataclass(frozen=True)
class CheckResult:
    """One line of the audit: the check's name, PASS/FAIL, and why."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def _result(name: str, problems: Sequence[str], success: str) -> CheckResult:
    if not problems:
        return CheckResult(name, True, success)
    shown = "; ".join(problems[:_MAX_LISTED])
    more = f" (and {len(problems) - _MAX_LISTED} more)" if len(problems) > _MAX_LISTED else ""
    prefix = f"{len(problems)} problems: " if len(problems) > 1 else ""
    return CheckResult(name, False, f"{prefix}{shown}{more}")


# --- inputs ------------------------------------------------------------------------


@dataclass(frozen=True)
class JournalFile:
    """An ``--offline-journal FILE`` with its ``FILE.sig`` and ``FILE.officer.asc``."""

    name: str
    data: bytes
    signature: str | None = None
    officer_key: str | None = None

    @classmethod
    def read(cls, path: Path) -> JournalFile:
        sig_path = path.with_name(path.name + ".sig")
        key_path = path.with_name(path.name + ".officer.asc")
        return cls(
            name=str(path),
            data=path.read_bytes(),
            signature=sig_path.read_text("ascii", "replace").strip() if sig_path.exists() else None,
            officer_key=key_path.read_text("utf-8", "replace") if key_path.exists() else None,
        )


class Keyrings:
    """Two throwaway GnuPG homes: trusted operator keys and trusted officer keys.

    Kept apart so that an officer's key can never pass for an operator's, or the other
    way round. Made lazily: only checks that verify GnuPG signatures need gpg.
    """

    def __init__(self, evidence: Evidence, workdir: Path) -> None:
        self._evidence = evidence
        self._workdir = workdir
        self._homes: dict[str, tuple[GnuPG, set[str]] | EvidenceError] = {}
        self._scratch = 0

    def ring(self, who: str) -> tuple[GnuPG, set[str]]:
        """``who`` is ``operators`` or ``officers``: the keyring and its fingerprints."""
        if who not in self._homes:
            try:
                armored = self._evidence.read(f"keys/{who}.asc")
                home = GnuPG(self._workdir / who)
                fingerprints = {fpr.upper() for fpr in home.import_public_key(armored)}
                self._homes[who] = (home, fingerprints)
            except WavesignError as exc:
                self._homes[who] = EvidenceError(f"keys/{who}.asc: {exc}")
        value = self._homes[who]
        if isinstance(value, EvidenceError):
            raise value
        return value

    def verify(self, who: str, data: bytes, signature: str) -> str:
        """The fingerprint of the ``who`` key that made ``signature`` over ``data``."""
        home, fingerprints = self.ring(who)
        verified = home.verify_detached(data, signature)
        if verified.fingerprint not in fingerprints:
            raise EvidenceError(f"signed by {verified.fingerprint}, which is not in keys/{who}.asc")
        return verified.fingerprint

    def fingerprints_of(self, armored: str) -> set[str]:
        """The fingerprints of the keys in ``armored`` (read in a scratch home)."""
        self._scratch += 1
        home = GnuPG(self._workdir / f"scratch-{self._scratch}")
        return {fpr.upper() for fpr in home.import_public_key(armored)}

    def close(self) -> None:
        homes = ["operators", "officers", *(f"scratch-{n}" for n in range(1, self._scratch + 1))]
        for who in homes:
            home = self._workdir / who
            if home.is_dir() and shutil.which("gpgconf"):
                subprocess.run(
                    ["gpgconf", "--homedir", str(home), "--kill", "all"],
                    capture_output=True,
                    check=False,
                )


@dataclass
class AuditContext:
    """Everything the checks read, and what earlier checks found (computed once)."""

    evidence: Evidence
    keyrings: Keyrings
    journals: Sequence[JournalFile] = ()
    trusted_root: bytes | None = None
    _memo: dict[str, Any] = field(default_factory=dict)

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def load_once(self, key: str, load: Callable[[], T]) -> T:
        """Like :meth:`memo` for loads that may fail: the ``EvidenceError`` is kept too,
        so every check that needs the file reports the same problem without rereading it."""

        def attempt() -> T | EvidenceError:
            try:
                return load()
            except EvidenceError as exc:
                return exc

        value = self.memo(key, attempt)
        if isinstance(value, EvidenceError):
            raise value
        return cast(T, value)


def _read(ctx: AuditContext, path: str) -> bytes:
    try:
        return ctx.evidence.read(path)
    except EvidenceError:
        raise
    except WavesignError as exc:
        raise EvidenceError(str(exc)) from None


# --- helpers shared by checks ------------------------------------------------------


@dataclass(frozen=True)
class RootChain:
    """Root versions that verified, in order, and the first problem (if any)."""

    verified: dict[int, Root]
    problem: str | None
    anchor: str


def _parse_root(data: bytes, what: str) -> Metadata[Root]:
    try:
        md = Metadata[Root].from_bytes(data)
    except Exception as exc:  # python-tuf raises many types for bad metadata
        raise EvidenceError(f"{what} is not TUF metadata ({exc})") from None
    if not isinstance(md.signed, Root):
        raise EvidenceError(f"{what} holds {md.signed.type} metadata, not root")
    return md


def _root_chain(ctx: AuditContext) -> RootChain:
    def compute() -> RootChain:
        evidence = ctx.evidence
        verified: dict[int, Root] = {}
        versions = evidence.root_versions()
        anchor = "1.root.json (trust on first use: pass --trusted-root to anchor it)"
        if not versions:
            return RootChain(verified, "no root/N.root.json in the evidence", anchor)
        expected = list(range(1, versions[-1] + 1))
        missing = sorted(set(expected) - set(versions))
        if missing:
            return RootChain(
                verified,
                f"root v{missing[0]} is missing: the evidence has root versions "
                f"{', '.join(map(str, versions))}",
                anchor,
            )
        trusted: Metadata[Root] | None = None
        if ctx.trusted_root is not None:
            try:
                trusted = _parse_root(ctx.trusted_root, "the trusted root")
                verify_root_update(None, trusted)
            except WavesignError as exc:
                return RootChain(verified, str(exc), "the trusted root")
            anchor = f"the trusted root v{trusted.signed.version}"
            if trusted.signed.version > versions[-1]:
                return RootChain(
                    verified,
                    f"the evidence ends at root v{versions[-1]}, before the trusted root "
                    f"v{trusted.signed.version}",
                    anchor,
                )
        previous: Metadata[Root] | None = None
        for version in versions:
            try:
                md = _parse_root(evidence.read(root_path(version)), root_path(version))
                if md.signed.version != version:
                    raise EvidenceError(
                        f"{root_path(version)} holds root version {md.signed.version}"
                    )
                verify_root_update(previous, md)
                if (
                    trusted is not None
                    and version == trusted.signed.version
                    and canonical_bytes(md.signed.to_dict())
                    != canonical_bytes(trusted.signed.to_dict())
                ):
                    raise EvidenceError(
                        f"root v{version} in the evidence differs from the trusted root"
                    )
            except WavesignError as exc:
                return RootChain(verified, str(exc), anchor)
            verified[version] = md.signed
            previous = md
        return RootChain(verified, None, anchor)

    result: RootChain = ctx.memo("root-chain", compute)
    return result


@dataclass(frozen=True)
class PublishedTargets:
    publication: Publication
    data: bytes
    metadata: Metadata[Targets]

    @property
    def signed_sha256(self) -> str:
        return digest(self.metadata.signed.to_dict())


def _parse(path: str, data: bytes, parse: Callable[[bytes], T]) -> T:
    try:
        return parse(data)
    except WavesignError as exc:
        raise EvidenceError(f"{path}: {exc}") from None


def _targets_file(ctx: AuditContext, pub: Publication) -> PublishedTargets:
    """The published targets file of ``pub``, checked against its record."""

    def load() -> PublishedTargets:
        path = publication_path(pub.seq)
        data = _read(ctx, path)
        if digest_bytes(data) != pub.sha256:
            raise EvidenceError(f"{path} does not match the sha256 of {pub.describe()}")
        try:
            md = Metadata[Targets].from_bytes(data)
        except Exception as exc:
            raise EvidenceError(f"{path} is not TUF metadata ({exc})") from None
        if not isinstance(md.signed, Targets):
            raise EvidenceError(f"{path} holds {md.signed.type} metadata, not targets")
        if md.signed.version != pub.version:
            raise EvidenceError(
                f"{path} is targets v{md.signed.version}, but {pub.describe()} says v{pub.version}"
            )
        return PublishedTargets(pub, data, md)

    return ctx.load_once(f"targets:{pub.seq}", load)


def _request(ctx: AuditContext, request_id: str) -> SigningRequest:
    def load() -> SigningRequest:
        path = f"requests/{request_id}.request.json"
        request = _parse(path, _read(ctx, path), SigningRequest.from_bytes)
        if request.id != request_id:
            raise EvidenceError(f"{path} holds request {request.id!r}")
        if not all(payload.resolved for payload in request.payloads):
            raise EvidenceError(f"{path} carries a delta payload: requests are exported in full")
        return request

    return ctx.load_once(f"request:{request_id}", load)


def _response(ctx: AuditContext, request_id: str) -> SigningResponse:
    def load() -> SigningResponse:
        path = f"responses/{request_id}.response.json"
        return _parse(path, _read(ctx, path), SigningResponse.from_bytes)

    return ctx.load_once(f"response:{request_id}", load)


def _root_in_force(pubs: Sequence[Publication], pub: Publication) -> int | None:
    """The newest root published before ``pub`` (devices fetch it before targets)."""
    version = None
    for earlier in pubs:
        if earlier.seq >= pub.seq:
            break
        if earlier.role == "root":
            version = earlier.version
    return version


# --- 1. manifest -------------------------------------------------------------------


def check_manifest(ctx: AuditContext) -> CheckResult:
    """Every file's sha256 matches MANIFEST.json; none is missing or extra."""
    evidence = ctx.evidence
    manifest = evidence.manifest()
    problems = []
    present = evidence.files()
    for name in sorted(set(manifest.files) - set(present)):
        problems.append(f"{name} is listed in {MANIFEST} but missing")
    for name in sorted(set(present) - set(manifest.files)):
        problems.append(f"{name} is in the folder but not in {MANIFEST}")
    for name in sorted(set(manifest.files) & set(present)):
        if digest_bytes(evidence.read(name)) != manifest.files[name]:
            problems.append(f"{name} does not match its sha256 in {MANIFEST}")
    return _result("manifest", problems, f"{len(manifest.files)} files match {MANIFEST}")


# --- 2. root-chain -----------------------------------------------------------------


def check_root_chain(ctx: AuditContext) -> CheckResult:
    """Each root N+1 is signed by thresholds of N and N+1, with version N+1."""
    chain = _root_chain(ctx)
    problems = [chain.problem] if chain.problem else []
    if not problems:
        # Each root version is published once, in version order.
        published = [p.version for p in ctx.evidence.publications() if p.role == "root"]
        if published != sorted(chain.verified):
            problems.append(
                f"root publications are versions {published}, not each root version "
                f"1..{max(chain.verified)} once in order"
            )
        for pub in ctx.evidence.publications():
            if pub.role == "root" and pub.version in chain.verified:
                data = ctx.evidence.read(root_path(pub.version))
                if digest_bytes(data) != pub.sha256:
                    problems.append(f"{root_path(pub.version)} does not match {pub.describe()}")
    last = max(chain.verified) if chain.verified else 0
    return _result("root-chain", problems, f"root v1..v{last} verified from {chain.anchor}")


# --- 3. targets-signatures ---------------------------------------------------------


def check_targets_signatures(ctx: AuditContext) -> CheckResult:
    """Every published targets file meets its threshold under the root in force,
    with a signature by the online targets key and one by an offline targets key."""
    chain = _root_chain(ctx)
    online = ctx.evidence.online_keys().keys["targets"]
    online_identity = public_identity(online)
    pubs = ctx.evidence.publications()
    problems: list[str] = []
    count = 0
    for pub in pubs:
        if pub.role != "targets":
            continue
        count += 1
        try:
            published = _targets_file(ctx, pub)
        except WavesignError as exc:
            problems.append(str(exc))
            continue
        in_force = _root_in_force(pubs, pub)
        if in_force is None:
            problems.append(f"{pub.describe()} comes before any root publication")
            continue
        if pub.root_version != in_force:
            problems.append(
                f"{pub.describe()} says root v{pub.root_version} was in force, but root "
                f"v{in_force} was the newest published"
            )
        root = chain.verified.get(in_force)
        if root is None:
            problems.append(f"{pub.describe()}: root v{in_force} did not verify")
            continue
        md = published.metadata
        result = check_threshold(root, "targets", md.signed, md.signatures)
        if not result.ok:
            problems.append(f"{pub.describe()}: {result.describe()}")
            continue
        identities = {public_identity(key) for key in result.verified.values()}
        if online_identity not in identities:
            problems.append(f"{pub.describe()} has no valid signature by the online targets key")
        if not identities - {online_identity}:
            problems.append(f"{pub.describe()} has no valid signature by an offline targets key")
    return _result(
        "targets-signatures",
        problems,
        f"{count} published targets files meet their threshold under the root in force, "
        "each signed by the online and an offline targets key",
    )


# --- 4. versions -------------------------------------------------------------------


def check_versions(ctx: AuditContext) -> CheckResult:
    """Per tag, targets versions strictly increase across views in publication order.

    Rule: each targets publication of a tag is either *new*, its version above every
    version published for the tag before (in any view), or a *re-publication*: the
    identical bytes of the tag's highest published file, shown again, either in the
    same view for the same wave or, for ``wave complete``, in the production view by
    the wave whose W it is. Identical bytes are not a new version, so no device is
    ever offered a lower version or two contents under one version. On top of that,
    production versions strictly increase, and a revert has its W's version plus one.
    """
    pubs = ctx.evidence.publications()
    problems: list[str] = []
    highest: dict[str, tuple[int, Publication]] = {}
    production: dict[str, Publication] = {}
    for pub in pubs:
        if pub.role != "targets" or pub.tag is None:
            continue
        try:
            version = _targets_file(ctx, pub).metadata.signed.version
        except WavesignError as exc:
            problems.append(str(exc))
            continue
        tag = pub.tag
        before = highest.get(tag)
        again = False
        if before is None or version > before[0]:
            highest[tag] = (version, pub)
        else:
            top = before[1]
            republished = (
                version == before[0]
                and top.sha256 == pub.sha256
                and top.wave == pub.wave
                and (top.view == pub.view or (top.view, pub.view) == ("wave", "production"))
            )
            if not republished:
                problems.append(
                    f"{pub.describe()} is not above v{before[0]} of {top.describe()}, "
                    "and is not a re-publication of that identical file"
                )
            shown = production.get(tag)
            again = republished and shown is not None and shown.sha256 == pub.sha256
        if pub.view == "production" and not again:
            shown = production.get(tag)
            if shown is not None and version <= shown.version:
                problems.append(
                    f"{pub.describe()}: production goes from v{shown.version} to v{version}"
                )
            if shown is None or version > shown.version:
                production[tag] = pub
        if pub.view == "revert":
            try:
                wave_version = _request(ctx, pub.request).payload("wave").full()["version"]
            except WavesignError as exc:
                problems.append(f"{pub.describe()}: {exc}")
                continue
            if version != wave_version + 1:
                problems.append(
                    f"{pub.describe()}: a revert must be v{wave_version + 1}, its wave's "
                    f"v{wave_version} plus one"
                )
    tags = ", ".join(f"{tag} up to v{v}" for tag, (v, _) in sorted(highest.items()))
    return _result("versions", problems, f"targets versions strictly increase per tag ({tags})")


# --- 5. waves ----------------------------------------------------------------------


def _history_event(wave: WaveRecord, kind: str) -> int | None:
    for entry in wave.history:
        if entry.kind == kind:
            return entry.event
    return None


def _check_wave(ctx: AuditContext, wave: WaveRecord, problems: list[str]) -> None:
    name = f"wave {wave.name}"
    request = _request(ctx, wave.request)
    purpose = request.purpose
    if (purpose.kind, purpose.wave, purpose.tag, purpose.ci_version) != (
        "wave",
        wave.name,
        wave.tag,
        wave.ci_version,
    ):
        problems.append(f"{name}: request {request.id} is for {purpose.describe()}")
    w, r = request.payload("wave"), request.payload("revert")
    if (w.sha256, r.sha256) != (wave.wave_sha256, wave.revert_sha256):
        problems.append(f"{name}: its payload digests are not those of request {request.id}")
    if (w.full()["version"], r.full()["version"]) != (wave.version, wave.revert_version):
        problems.append(f"{name}: its versions are not those of request {request.id}")
    if wave.revert_version != wave.version + 1:
        problems.append(f"{name}: revert v{wave.revert_version} is not v{wave.version} + 1")
    events = ctx.evidence.events()
    for entry in wave.history:
        if entry.event >= len(events):
            problems.append(f"{name}: history event {entry.event} is not in the log")
        elif (events[entry.event].kind, events[entry.event].time) != (entry.kind, entry.time):
            problems.append(
                f"{name}: history entry {entry.kind} differs from log event {entry.event}"
            )
    pubs = [p for p in ctx.evidence.publications() if p.role == "targets" and p.tag == wave.tag]
    shown = [p for p in pubs if p.view == "wave" and p.wave == wave.name]
    for pub in shown:
        if _targets_file(ctx, pub).signed_sha256 != wave.wave_sha256:
            problems.append(f"{name}: {pub.describe()} is not the signed W")
    if wave.status == "complete":
        completed = _history_event(wave, "wave-completed")
        after = [
            p
            for p in pubs
            if p.view == "production" and completed is not None and p.event > completed
        ]
        if completed is None:
            problems.append(f"{name} is complete but its history has no wave-completed event")
        elif not after:
            problems.append(f"{name} is complete but no production file was published after it")
        else:
            production = after[0]
            files = [_targets_file(ctx, p) for p in shown]
            prod_file = _targets_file(ctx, production)
            if production.wave != wave.name or prod_file.signed_sha256 != wave.wave_sha256:
                problems.append(
                    f"{name}: the next production file, {production.describe()}, is not its W"
                )
            elif any(f.data != prod_file.data for f in files):
                problems.append(
                    f"{name}: {production.describe()} is not byte for byte the W devices were shown"
                )
    if wave.status == "canceled":
        reverts = [p for p in pubs if p.view == "revert" and p.wave == wave.name]
        if _history_event(wave, "wave-canceled") is None:
            problems.append(f"{name} is canceled but its history has no wave-canceled event")
        if shown and not reverts:
            problems.append(f"{name} was shown to devices and canceled, but R was never published")
        created = _history_event(wave, "wave-created")
        before = [
            p for p in pubs if p.view == "production" and created is not None and p.event < created
        ]
        pre_wave: dict[str, Any] = (
            _targets_file(ctx, before[-1]).metadata.signed.to_dict()["targets"] if before else {}
        )
        context_sha = request.context.production_sha256
        if context_sha != (_targets_file(ctx, before[-1]).signed_sha256 if before else None):
            problems.append(
                f"{name}: request {request.id} names other production targets "
                "than the ones published before the wave"
            )
        for pub in reverts:
            revert = _targets_file(ctx, pub)
            if revert.signed_sha256 != wave.revert_sha256:
                problems.append(f"{name}: {pub.describe()} is not the signed R")
            if revert.metadata.signed.to_dict()["targets"] != pre_wave:
                problems.append(
                    f"{name}: {pub.describe()} does not hold exactly the "
                    "pre-wave production targets"
                )
    promoted = [p for p in pubs if p.view == "production" and p.wave == wave.name]
    if promoted and wave.status != "complete":
        problems.append(f"{name} is {wave.status}, yet {promoted[0].describe()} promotes it")
    if wave.status == "awaiting-signatures" and shown:
        problems.append(f"{name} awaits signatures but was published")


def check_waves(ctx: AuditContext) -> CheckResult:
    """Completed waves became production byte for byte; canceled waves reverted exactly."""
    waves = ctx.evidence.waves()
    names = {wave.name for wave in waves}
    problems: list[str] = []
    for pub in ctx.evidence.publications():
        if pub.role == "targets" and pub.wave is not None and pub.wave not in names:
            problems.append(f"{pub.describe()} names a wave that waves.json does not list")
    for wave in waves:
        try:
            _check_wave(ctx, wave, problems)
        except WavesignError as exc:
            problems.append(f"wave {wave.name}: {exc}")
    statuses = ", ".join(f"{w.name} {w.status}" for w in waves)
    return _result("waves", problems, f"{len(waves)} waves consistent ({statuses})")


# --- 6. requests -------------------------------------------------------------------


def _known_keys(ctx: AuditContext) -> dict[str, Key]:
    """Every key of every verified root, by key id."""
    keys: dict[str, Key] = {}
    for root in _root_chain(ctx).verified.values():
        keys.update(root.keys)
    return keys


def _check_bundle_pair(ctx: AuditContext, request_id: str, problems: list[str]) -> bool:
    """Check a request and its response; False if the request has no response yet."""
    request = _request(ctx, request_id)
    if request.operator_signature is None:
        problems.append(f"request {request_id} has no operator signature")
    else:
        try:
            ctx.keyrings.verify("operators", request.signing_bytes(), request.operator_signature)
        except WavesignError as exc:
            problems.append(f"request {request_id}: operator signature: {exc}")
    if not ctx.evidence.exists(f"responses/{request_id}.response.json"):
        return False  # still awaiting signatures: fine unless something was published
    response = _response(ctx, request_id)
    if response.request_sha256 != request.digest():
        other = [
            rid
            for rid in ctx.evidence.request_ids()
            if rid != request_id and _safe_digest(ctx, rid) == response.request_sha256
        ]
        answers = f"request {other[0]}" if other else "no request in the evidence"
        problems.append(
            f"responses/{request_id}.response.json answers {answers}, not request {request_id}"
        )
        return True
    if response.attestation is None:
        problems.append(f"response to {request_id} has no officer attestation")
    else:
        try:
            ctx.keyrings.verify("officers", response.signing_bytes(), response.attestation)
        except WavesignError as exc:
            problems.append(f"response to {request_id}: officer attestation: {exc}")
    known = _known_keys(ctx)
    for entry in response.signatures:
        payload = request.payload(entry.payload)
        signed: Any = payload.full()
        if payload.role == "root":
            signed = response.root.get("signed") if response.root else None
        if entry.sha256 != digest(signed):
            problems.append(
                f"response to {request_id}: a {entry.payload} signature is over "
                "other content than the request's"
            )
            continue
        key = known.get(entry.keyid)
        if key is None:
            problems.append(
                f"response to {request_id}: key {entry.keyid[:16]} is in no verified root"
            )
            continue
        try:
            verify_signature(key, Signature(entry.keyid, entry.sig), canonical_bytes(signed))
        except WavesignError as exc:
            problems.append(f"response to {request_id}: {entry.payload}: {exc}")
    return True


def _safe_digest(ctx: AuditContext, request_id: str) -> str | None:
    try:
        return _request(ctx, request_id).digest()
    except WavesignError:
        return None


def _journal_lines(ctx: AuditContext) -> list[JournalEntry]:
    def load() -> list[JournalEntry]:
        lines: list[JournalEntry] = []
        for journal in ctx.journals:
            chain = verify_journal_chain(journal.data)
            lines.extend(chain.entries)
        return lines

    result: list[JournalEntry] = ctx.memo("journal-lines", load)
    return result


def _check_publication_signed(ctx: AuditContext, pub: Publication, problems: list[str]) -> None:
    request = _request(ctx, pub.request)
    response = _response(ctx, pub.request)
    if response.request_sha256 != request.digest():
        problems.append(
            f"{pub.describe()}: the response to request {pub.request} answers another request"
        )
        return
    if pub.role == "root":
        md = _parse_root(ctx.evidence.read(root_path(pub.version)), root_path(pub.version))
        signed_sha256 = digest(md.signed.to_dict())
        if response.root is None or digest(response.root.get("signed")) != signed_sha256:
            problems.append(f"{pub.describe()} is not the root in the response to {pub.request}")
            return
    else:
        published = _targets_file(ctx, pub)
        signed_sha256 = published.signed_sha256
        if request.payload(pub.payload).sha256 != signed_sha256:
            problems.append(
                f"{pub.describe()} is not the {pub.payload} payload of request {pub.request}"
            )
            return
        online = ctx.evidence.online_keys().keys["targets"].keyid
        answered = {
            (e.keyid, e.sig)
            for e in response.signatures
            if e.payload == pub.payload and e.sha256 == signed_sha256
        }
        offline_sigs = {
            (keyid, sig.signature)
            for keyid, sig in published.metadata.signatures.items()
            if keyid != online
        }
        if not answered or not offline_sigs or not offline_sigs <= answered:
            problems.append(
                f"{pub.describe()}: its offline signatures are not the ones in the "
                f"response to request {pub.request}"
            )
            return
    if ctx.journals:
        matches = [
            line
            for line in _journal_lines(ctx)
            if any(p.sha256 == signed_sha256 for p in line.payloads)
            and line.request_sha256 == request.digest()
            and line.response_sha256 == response.digest()
            and line.prev == response.journal_head
        ]
        if not matches:
            problems.append(
                f"{pub.describe()}: no offline journal entry records signing it "
                f"for request {pub.request} with this response"
            )


def check_requests(ctx: AuditContext) -> CheckResult:
    """Every published payload has an operator-signed request and an attested response
    that signed it (and a journal entry, when journals are given)."""
    problems: list[str] = []
    ids = ctx.evidence.request_ids()
    pending = []
    for request_id in ids:
        try:
            if not _check_bundle_pair(ctx, request_id, problems):
                pending.append(request_id)
        except WavesignError as exc:
            problems.append(str(exc))
    folder = ctx.evidence.root / "responses"
    for name in sorted(os.listdir(folder)) if folder.is_dir() else []:
        if name.endswith(".response.json") and name[: -len(".response.json")] not in ids:
            problems.append(f"responses/{name} answers no exported request")
    pubs = ctx.evidence.publications()
    for pub in pubs:
        try:
            _check_publication_signed(ctx, pub, problems)
        except WavesignError as exc:
            problems.append(f"{pub.describe()}: {exc}")
    journals = (
        f", each found in the offline journal{'s' if len(ctx.journals) > 1 else ''}"
        if ctx.journals
        else " (no --offline-journal given: journal entries not checked)"
    )
    return _result(
        "requests",
        problems,
        f"{len(ids)} requests operator-signed, "
        f"{len(ids) - len(pending)} answered by attested responses"
        f"{f' ({len(pending)} awaiting signatures)' if pending else ''}; "
        f"{len(pubs)} publications signed through them{journals}",
    )


# --- 7. journal --------------------------------------------------------------------


def check_journal(ctx: AuditContext) -> CheckResult:
    """Each ``--offline-journal`` chain verifies, and its signature if it has one."""
    if not ctx.journals:
        return CheckResult("journal", True, "skipped: no --offline-journal given")
    problems: list[str] = []
    notes: list[str] = []
    for journal in ctx.journals:
        chain = verify_journal_chain(journal.data)
        if not chain.ok:
            problems.append(f"{journal.name}: {chain.problem}")
            continue
        if journal.signature is None:
            notes.append(f"{journal.name}: {len(chain.entries)} lines chain, unsigned (no .sig)")
            continue
        try:
            fingerprint = ctx.keyrings.verify("officers", journal.data, journal.signature)
            if journal.officer_key is not None and fingerprint not in (
                ctx.keyrings.fingerprints_of(journal.officer_key)
            ):
                raise EvidenceError(f"its .officer.asc is not the key {fingerprint}")
        except WavesignError as exc:
            problems.append(f"{journal.name}.sig: {exc}")
            continue
        notes.append(
            f"{journal.name}: {len(chain.entries)} lines chain, signed by officer {fingerprint}"
        )
    return _result("journal", problems, "; ".join(notes))


# --- 8. log ------------------------------------------------------------------------


def _anchored(ctx: AuditContext, key: Key) -> bool:
    """Whether ``key`` is a timestamp key of a verified root."""
    identity = public_identity(key)
    for root in _root_chain(ctx).verified.values():
        for keyid in root.roles["timestamp"].keyids:
            if keyid in root.keys and public_identity(root.keys[keyid]) == identity:
                return True
    return False


def check_log(ctx: AuditContext) -> CheckResult:
    """Tree heads verify and are consistent; the log recomputes to the latest head;
    every publication event is included."""
    evidence = ctx.evidence
    key = evidence.online_keys().keys["log"]
    events = evidence.events()
    leaves = [event.leaf() for event in events]
    problems: list[str] = []
    heads: list[TreeHead] = []
    for index, signed_head in enumerate(evidence.heads()):
        try:
            heads.append(verify_tree_head(key, signed_head))
        except WavesignError as exc:
            problems.append(f"log/heads.json heads[{index}]: {exc}")
    if problems or not heads:
        return _result("log", problems or ["log/heads.json has no tree head"], "")
    proofs = evidence.consistency()
    if len(proofs) != len(heads) - 1:
        problems.append(
            f"{len(heads)} tree heads need {len(heads) - 1} consistency proofs, "
            f"log/consistency.json has {len(proofs)}"
        )
    for index, (old, new) in enumerate(itertools.pairwise(heads)):
        if new.timestamp < old.timestamp:
            problems.append(f"tree head {index + 1} is older than tree head {index}")
        if index >= len(proofs):
            break
        proof = proofs[index]
        if (proof.old_size, proof.new_size) != (old.size, new.size) or not verify_consistency(
            old.size, new.size, old.root, new.root, proof.proof
        ):
            problems.append(
                f"tree head {index} (size {old.size}) is not a prefix of tree head "
                f"{index + 1} (size {new.size}): the log was rewritten"
            )
    latest = heads[-1]
    if latest.size != len(events):
        problems.append(
            f"the latest tree head covers {latest.size} events, the log has {len(events)}"
        )
    elif root_hash(leaves) != latest.root:
        problems.append("the exported events do not recompute to the latest tree head's root")
    for index, head in enumerate(heads[:-1]):
        if head.size <= len(leaves) and root_hash(leaves, head.size) != head.root:
            problems.append(
                f"the first {head.size} exported events do not recompute to tree "
                f"head {index}'s root"
            )
    inclusion = {proof.index: proof for proof in evidence.inclusion()}
    pubs = evidence.publications()
    for pub in pubs:
        if pub.event >= len(events):
            problems.append(f"{pub.describe()}: its event {pub.event} is not in the log")
            continue
        event = events[pub.event]
        if event.kind != PUBLISHED_EVENT or event.detail != pub.event_detail():
            problems.append(f"{pub.describe()}: log event {pub.event} does not record it")
        path = inclusion.get(pub.event)
        if (
            path is None
            or path.tree_size != latest.size
            or not verify_inclusion(event.leaf(), pub.event, latest.size, path.proof, latest.root)
        ):
            problems.append(
                f"{pub.describe()}: no valid inclusion proof of event {pub.event} "
                "in the latest tree head"
            )
    order = [pub.event for pub in pubs]
    if order != sorted(set(order)):
        problems.append("publication events are not in publication order in the log")
    listed = set(order)
    for event in events:
        if event.kind == PUBLISHED_EVENT and event.index not in listed:
            problems.append(
                f"log event {event.index} records a publication publications.json does not list"
            )
    anchored = (
        "a timestamp key of the root"
        if _anchored(ctx, key)
        else ("the log key of keys/online.json (not in any root)")
    )
    return _result(
        "log",
        problems,
        f"{len(heads)} tree heads signed by {anchored} and consistent; {len(events)} events "
        f"recompute to the latest head; {len(pubs)} publications included",
    )


# --- 9. current --------------------------------------------------------------------


def check_current(ctx: AuditContext) -> CheckResult:
    """Each tag's current snapshot and timestamp verify under the newest root and point
    at the tag's newest production targets file."""
    chain = _root_chain(ctx)
    if not chain.verified:
        return CheckResult("current", False, "no verified root to check against")
    root = chain.verified[max(chain.verified)]
    pubs = ctx.evidence.publications()
    tags = sorted({p.tag for p in pubs if p.view == "production" and p.tag})
    present = ctx.evidence.current_tags()
    problems = [f"current/{tag}.timestamp.json is missing" for tag in tags if tag not in present]
    for tag in present:
        try:
            ts_data = ctx.evidence.read(f"current/{tag}.timestamp.json")
            sn_data = ctx.evidence.read(f"current/{tag}.snapshot.json")
            try:
                timestamp = Metadata[Timestamp].from_bytes(ts_data)
                snapshot = Metadata[Snapshot].from_bytes(sn_data)
            except Exception as exc:
                raise EvidenceError(f"not TUF metadata ({exc})") from None
            for md, role in ((timestamp, "timestamp"), (snapshot, "snapshot")):
                result = check_threshold(root, role, md.signed, md.signatures)
                if not result.ok:
                    raise EvidenceError(result.describe())
            meta = timestamp.signed.snapshot_meta
            if meta.version != snapshot.signed.version or (meta.hashes or {}).get(
                "sha256"
            ) != digest_bytes(sn_data):
                raise EvidenceError("the timestamp does not name this snapshot")
            production = [p for p in pubs if p.view == "production" and p.tag == tag]
            if not production:
                raise EvidenceError("no production targets were published for this tag")
            newest = _targets_file(ctx, production[-1])
            targets_meta = snapshot.signed.meta.get("targets.json")
            if (
                targets_meta is None
                or targets_meta.version != newest.metadata.signed.version
                or ((targets_meta.hashes or {}).get("sha256") != digest_bytes(newest.data))
            ):
                raise EvidenceError(f"the snapshot does not name {production[-1].describe()}")
        except WavesignError as exc:
            problems.append(f"current/{tag}: {exc}")
    return _result(
        "current",
        problems,
        f"{len(present)} tags' current timestamp and snapshot verify under root "
        f"v{max(chain.verified)} and name the newest production targets",
    )


# --- running -----------------------------------------------------------------------

CHECKS: tuple[tuple[str, Callable[[AuditContext], CheckResult]], ...] = (
    ("manifest", check_manifest),
    ("root-chain", check_root_chain),
    ("targets-signatures", check_targets_signatures),
    ("versions", check_versions),
    ("waves", check_waves),
    ("requests", check_requests),
    ("journal", check_journal),
    ("log", check_log),
    ("current", check_current),
)


def _run_one(
    name: str, check: Callable[[AuditContext], CheckResult], ctx: AuditContext
) -> CheckResult:
    try:
        return check(ctx)
    except WavesignError as exc:
        return CheckResult(name, False, str(exc))
    except Exception as exc:  # malformed evidence must fail a check, never crash the audit
        message = " ".join(str(exc).split())[:300]
        return CheckResult(name, False, f"unreadable evidence ({type(exc).__name__}: {message})")


@contextlib.contextmanager
def audit_context(
    evidence_dir: str | Path,
    journals: Sequence[JournalFile] = (),
    trusted_root: bytes | None = None,
) -> Iterator[AuditContext]:
    """An :class:`AuditContext` whose scratch GnuPG homes are removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="wsaudit-") as scratch:
        evidence = Evidence(evidence_dir)
        keyrings = Keyrings(evidence, Path(scratch))
        try:
            yield AuditContext(evidence, keyrings, tuple(journals), trusted_root)
        finally:
            keyrings.close()


def run_checks(
    evidence_dir: str | Path,
    journals: Sequence[JournalFile] = (),
    trusted_root: bytes | None = None,
) -> list[CheckResult]:
    """Run every check, in order; one result per check."""
    with audit_context(evidence_dir, journals, trusted_root) as ctx:
        return [_run_one(name, check, ctx) for name, check in CHECKS]
