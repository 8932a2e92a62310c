"""Waves and signing requests: the state machine around the pure planner.

States of a wave::

    awaiting-signatures --(requests import, threshold met)--> active
    awaiting-signatures --cancel--> canceled
    active --rollout--> active          (records the devices reached)
    active --cancel--> canceled         (rolled-out devices will see R)
    active --complete--> complete       (W's exact bytes become the tag's production targets)

Every transition is one transaction of :class:`~wavesign.online.store.Store` with its
event. Transitions lock the wave row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite
transactions take the write lock at ``BEGIN IMMEDIATE``), so two rollouts of one wave
at once are serialized and neither loses the other's devices.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from datetime import UTC, datetime
from typing import Any

from securesystemslib.signer import Signer
from sqlalchemy import Connection, Engine, Integer, func, literal, select
from sqlalchemy.exc import IntegrityError
from tuf.api.metadata import Metadata, Root
from wavesign.shared.bundles import (
    Context,
    Payload,
    Purpose,
    SigningRequest,
    SigningResponse,
)
from wavesign.shared.canonical import canonical_bytes, digest, digest_bytes
from wavesign.shared.errors import WavesignError
from wavesign.shared.rootchain import verify_root_update
from wavesign.shared.timefmt import format_utc

from . import db, planning
from . import rollout as rollout_rules
from .eventlog import PublicationDraft
from .gpgtrust import GPG_ROLES, fingerprints_of, verify_by_role
from .onlinekeys import OnlineKeys
from .store import (
    Change,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    StateError,
    Store,
    check_name,
    utcnow,
)
from .store_roots import (
    check_ceremony_root,
    check_restored_root,
    countersign,
    parse_response_root,
    root_json,
    root_proposal,
    signatures_for,
)
from .views import ensure_production_advances

__all__ = ["WaveStore"]


def _json(value: Any) -> str:
    return canonical_bytes(value).decode("utf-8")


class WaveStore(Store):
    """The full broker store: tokens, targets, devices, waves, requests, roots."""

    def __init__(self, url: str, engine: Engine | None = None, keys: OnlineKeys | None = None):
        super().__init__(url, engine)
        self.keys = keys

    def log_signer(self) -> Signer | None:
        """Tree heads are signed with the online timestamp key: a key every root names,
        so an auditor anchors the log key in the verified root chain."""
        return None if self.keys is None else self.keys.signer("timestamp")

    # -- publications (what devices are shown; logged as `published` events) ----------
    @staticmethod
    def _publish_targets(
        ch: Change,
        *,
        body: str,
        version: int,
        request: str,
        payload: str,
        view: str,
        tag: str,
        wave: str | None,
    ) -> None:
        root_version = ch.conn.execute(select(func.max(db.roots.c.version))).scalar()
        if root_version is None:
            raise StateError("no root yet: nothing can be published before the root ceremony")
        ch.publications.append(
            PublicationDraft(
                "targets", body, version, request, payload, view, tag, wave, int(root_version)
            )
        )

    # -- GnuPG keys of operators and officers -------------------------------------------
    def add_gpg_key(self, actor: str, role: str, armored: str) -> dict[str, Any]:
        """Trust a GnuPG public key for ``role`` (operator or officer).

        From then on, signatures of that role must verify with a registered key of it
        (requests: the operator's signature; responses: the officer's attestation).
        """
        if role not in GPG_ROLES:
            raise InvalidInputError(f"role {role!r} is not one of {', '.join(GPG_ROLES)}")
        try:
            fingerprints = fingerprints_of(armored)
        except WavesignError as exc:
            raise InvalidInputError(str(exc)) from None
        if len(fingerprints) != 1:
            raise InvalidInputError(
                f"the file holds {len(fingerprints)} keys: register one key at a time"
            )
        fingerprint = fingerprints[0]
        with self.change(actor, "gpg-key-added", fingerprint) as ch:
            existing = ch.conn.execute(
                select(db.gpg_keys.c.role).where(db.gpg_keys.c.fingerprint == fingerprint)
            ).scalar()
            if existing is not None:
                raise ConflictError(f"GnuPG key {fingerprint} is registered already ({existing})")
            ch.conn.execute(
                db.gpg_keys.insert().values(
                    fingerprint=fingerprint,
                    role=role,
                    armored=armored,
                    created_at=utcnow(),
                    created_by=actor,
                )
            )
            ch.detail = {"role": role}
        return {"fingerprint": fingerprint, "role": role}

    def gpg_keys(self, role: str | None = None) -> list[dict[str, Any]]:
        with self.read() as conn:
            return self._gpg_keys(conn, role)

    @staticmethod
    def _gpg_keys(conn: Connection, role: str | None) -> list[dict[str, Any]]:
        query = select(db.gpg_keys).order_by(db.gpg_keys.c.created_at, db.gpg_keys.c.fingerprint)
        if role is not None:
            query = query.where(db.gpg_keys.c.role == role)
        return [dict(row) for row in conn.execute(query).mappings()]

    def _verify_gpg(
        self, role: str, data: bytes, signature: str | None, what: str
    ) -> frozenset[str]:
        """If keys of ``role`` are registered, ``signature`` must verify with one of them.

        Returns the fingerprints it checked against: GnuPG runs outside the change's
        transaction, so the change must see the same set (:meth:`_same_gpg_keys`).
        """
        registered = self.gpg_keys(role)
        checked = frozenset(str(key["fingerprint"]) for key in registered)
        keys = [key["armored"] for key in registered]
        if not keys:
            return checked
        if signature is None:
            raise InvalidInputError(f"{what} carries no {role} GnuPG signature")
        try:
            verify_by_role(role, keys, data, signature)
        except WavesignError as exc:
            raise InvalidInputError(f"{what}: {exc}") from None
        return checked

    def _same_gpg_keys(self, conn: Connection, role: str, checked: frozenset[str]) -> None:
        """Refuse the change if the ``role`` keys changed since the signature was checked
        (a key registered meanwhile must not let an unchecked signature through)."""
        now = frozenset(str(key["fingerprint"]) for key in self._gpg_keys(conn, role))
        if now != checked:
            raise ConflictError(
                f"the registered {role} GnuPG keys changed while the signature was checked: "
                "try again"
            )

    # -- roots ----------------------------------------------------------------------
    def latest_root(self, conn: Connection) -> Metadata[Root] | None:
        row = conn.execute(
            select(db.roots.c.root_json).order_by(db.roots.c.version.desc()).limit(1)
        ).first()
        return None if row is None else Metadata[Root].from_bytes(row.root_json.encode())

    def add_root(self, actor: str, root_bytes: bytes) -> int:
        """Restore a signed root made elsewhere (admin only; migrations, disaster recovery).

        The root ceremony (:meth:`propose_root`, then :meth:`import_response`) is how
        roots are made. This stores a root that already exists: it must follow the latest
        one (old and new root thresholds) and name this broker's online keys for
        snapshot and timestamp, and its online targets key beside an offline one.
        """
        try:
            new = Metadata[Root].from_bytes(root_bytes)
        except Exception as exc:
            raise InvalidInputError(f"not a signed root: {exc}") from None
        with self.change(actor, "root-added", f"root v{new.signed.version}") as ch:
            if self.keys is not None:
                check_restored_root(new, self.keys.public_keys())
            previous = self.latest_root(ch.conn)
            verify_root_update(previous, new)
            # A root made elsewhere is published byte for byte as it was signed.
            text = root_bytes.decode("utf-8")
            sha256 = digest_bytes(root_bytes)
            ch.conn.execute(
                db.roots.insert().values(
                    version=new.signed.version, root_json=text, sha256=sha256, created_at=utcnow()
                )
            )
            ch.detail = {"version": new.signed.version, "sha256": sha256, "restored": True}
            # A restored root came from no ceremony of this broker: its publication names
            # no request the evidence holds, and an audit says so.
            ch.publications.append(
                PublicationDraft(
                    "root", text, new.signed.version, f"restored-root-v{new.signed.version}", "root"
                )
            )
        return new.signed.version

    def propose_root(
        self,
        actor: str,
        *,
        root_threshold: int = 1,
        expires_days: int = planning.DEFAULT_EXPIRES_DAYS,
    ) -> dict[str, Any]:
        """A root ceremony's signing request: the online keys and the policy, as root vN+1."""
        if self.keys is None:
            raise StateError("this store has no online keys to propose")
        if not 1 <= expires_days <= 3650:
            raise InvalidInputError("--expires-days must be between 1 and 3650")
        now = datetime.now(UTC)
        expires = planning.format_expires(planning.compute_expiry(now, expires_days, None))
        online = self.keys.public_keys()
        with self.change(actor, "root-proposed", "root") as ch:
            conn = ch.conn
            previous = self.latest_root(conn)
            current = previous.signed.version if previous is not None else 0
            pending = conn.execute(
                select(db.signing_requests.c.id).where(
                    db.signing_requests.c.purpose == "root",
                    db.signing_requests.c.status == "pending",
                )
            ).scalar()
            if pending is not None:
                raise ConflictError(
                    f"root request {pending} is still awaiting signatures: import its response"
                )
            proposal = root_proposal(
                online, version=current + 1, expires=expires, root_threshold=root_threshold
            )
            request = SigningRequest(
                id="req-" + secrets.token_hex(6),
                factory=self._factory(conn),
                created=format_utc(now),
                purpose=Purpose(kind="root", root_version=current + 1),
                payloads=(Payload.create("root", "root", proposal, []),),
                context=Context(root_version=current),
            )
            self._insert_request(conn, actor, request, "root")
            ch.subject = f"root v{current + 1}"
            ch.detail = {"request_id": request.id, "version": current + 1}
        return {
            "request_id": request.id,
            "request_sha256": request.digest(),
            "version": current + 1,
            "expires": expires,
            "root_threshold": root_threshold,
        }

    def _factory(self, conn: Connection) -> str:
        value = conn.execute(
            select(db.settings.c.value).where(db.settings.c.key == "factory")
        ).scalar()
        return str(value or "wavesign")

    @staticmethod
    def _insert_request(
        conn: Connection,
        actor: str,
        request: SigningRequest,
        purpose: str,
        wave_id: int | None = None,
    ) -> None:
        conn.execute(
            db.signing_requests.insert().values(
                id=request.id,
                purpose=purpose,
                status="pending",
                wave_id=wave_id,
                request_sha256=request.digest(),
                request_json=request.to_bytes().decode("utf-8"),
                created_at=utcnow(),
                created_by=actor,
            )
        )

    def show_root(self, version: int | None = None) -> dict[str, Any]:
        """The signed root metadata (the latest, or ``version``) as stored and published."""
        with self.read() as conn:
            query = select(db.roots.c.root_json, db.roots.c.version)
            if version is None:
                query = query.order_by(db.roots.c.version.desc()).limit(1)
            else:
                query = query.where(db.roots.c.version == version)
            row = conn.execute(query).first()
        if row is None:
            if version is None:
                raise NotFoundError("no root yet: run `wavesign root propose` first")
            raise NotFoundError(f"no root version {version}")
        document: dict[str, Any] = json.loads(row.root_json)
        return document

    def renew_production(
        self, actor: str, tag: str, *, expires_days: int = planning.DEFAULT_EXPIRES_DAYS
    ) -> dict[str, Any]:
        """A renewal's signing request: the tag's production targets, re-versioned."""
        check_name(tag, "tag")
        if not 1 <= expires_days <= 3650:
            raise InvalidInputError("--expires-days must be between 1 and 3650")
        now = datetime.now(UTC)
        with self.change(actor, "renewal-requested", tag) as ch:
            conn = ch.conn
            tag_row = self._tag_row(conn, tag, lock=True)
            if tag_row is None or not tag_row.production_json:
                raise NotFoundError(f"tag {tag} has no production targets yet: nothing to renew")
            blocking = conn.execute(
                select(db.waves.c.name).where(
                    db.waves.c.tag == tag, db.waves.c.status.in_(db.OPEN_WAVE_STATUSES)
                )
            ).scalar()
            production = json.loads(tag_row.production_json)["signed"]
            plan = planning.plan_renewal(
                tag,
                planning.ProductionState(
                    tag=tag, signed=production, highest_planned=tag_row.last_planned_version
                ),
                now=now,
                expires_days=expires_days,
                open_wave=blocking,
            )
            root = self.latest_root(conn)
            if root is None:
                raise StateError("no root yet: the root ceremony must come first")
            request = SigningRequest(
                id="req-" + secrets.token_hex(6),
                factory=self._factory(conn),
                created=format_utc(now),
                purpose=Purpose(kind="renew", tag=tag),
                payloads=(
                    Payload.create("renew", "targets", plan.signed, self._targets_keyids(conn)),
                ),
                context=Context(
                    root_version=root.signed.version,
                    production_version=tag_row.production_version,
                    production_sha256=tag_row.production_sha256,
                ),
            )
            self._insert_request(conn, actor, request, "renew")
            conn.execute(
                db.tag_state.update()
                .where(db.tag_state.c.tag == tag)
                .values(last_planned_version=plan.highest_planned, updated_at=utcnow())
            )
            ch.detail = {"request_id": request.id, "version": plan.version, "sha256": plan.sha256}
        return {
            "request_id": request.id,
            "request_sha256": request.digest(),
            "tag": tag,
            "version": plan.version,
            "expires": plan.expires,
            "warnings": list(plan.warnings),
        }

    def _targets_keyids(self, conn: Connection) -> list[str]:
        """The offline targets keys a targets payload asks the appliance to sign with.

        The online targets key is not listed: the broker adds its signature itself at
        import, and the appliance refuses a payload naming a key it does not hold.
        """
        root = self.latest_root(conn)
        if root is None:
            return []
        online = self.keys.public_key("targets").keyid if self.keys is not None else None
        return sorted(k for k in root.signed.roles["targets"].keyids if k != online)

    # -- wave init ------------------------------------------------------------------
    def _wave_row(self, conn: Connection, name: str, lock: bool = False) -> Any:
        query = select(db.waves).where(db.waves.c.name == name)
        if lock:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise NotFoundError(f"no wave named {name}")
        return row

    def _tag_row(self, conn: Connection, tag: str, lock: bool = False) -> Any:
        query = select(db.tag_state).where(db.tag_state.c.tag == tag)
        if lock:
            query = query.with_for_update()
        return conn.execute(query).first()

    def init_wave(
        self,
        actor: str,
        *,
        name: str,
        version: int,
        tag: str,
        expires_days: int | None = None,
        expires_at: str | None = None,
        prune: list[int] | None = None,
        source_tag: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Plan W and R with the pure planner, store the wave and its signing request."""
        check_name(name, "wave name")
        check_name(tag, "tag")
        now = datetime.now(UTC)
        try:
            return self._init_wave(
                actor,
                name,
                version,
                tag,
                now,
                expires_days or planning.DEFAULT_EXPIRES_DAYS,
                planning.parse_expires_at(expires_at) if expires_at else None,
                prune or [],
                source_tag,
                dry_run,
            )
        except _DryRun as dry:
            return dry.result

    def _init_wave(
        self,
        actor: str,
        name: str,
        version: int,
        tag: str,
        now: datetime,
        expires_days: int,
        expires_at: datetime | None,
        prune: list[int],
        source_tag: str | None,
        dry_run: bool,
    ) -> dict[str, Any]:
        with self.change(actor, "wave-created", name) as ch:
            conn = ch.conn
            if conn.execute(select(db.waves.c.id).where(db.waves.c.name == name)).first():
                raise ConflictError(f"a wave named {name} exists already")
            blocking = conn.execute(
                select(db.waves.c.name).where(
                    db.waves.c.tag == tag, db.waves.c.status.in_(db.OPEN_WAVE_STATUSES)
                )
            ).scalar()
            tag_row = self._tag_row(conn, tag, lock=True)
            production_doc = (
                json.loads(tag_row.production_json)
                if tag_row is not None and tag_row.production_json
                else None
            )
            state = planning.ProductionState(
                tag=tag,
                signed=production_doc["signed"] if production_doc else None,
                highest_planned=tag_row.last_planned_version if tag_row is not None else 0,
            )
            ci = [
                planning.CITarget.from_entry(n, e)
                for n, e in self.ci_targets(conn, version=version).items()
            ]
            plan = planning.plan_wave(
                name,
                version,
                tag,
                ci,
                state,
                now=now,
                expires_days=expires_days,
                expires_at=expires_at,
                prune=prune,
                source_tag=source_tag,
                open_wave=blocking,
            )
            revert = plan.revert.signed
            summary = {
                "name": name,
                "version": version,
                "tag": tag,
                "status": "awaiting-signatures",
                "expires": plan.expires,
                "wave_version": plan.version,
                "revert_version": plan.revert.version,
                "wave_sha256": plan.wave_sha256,
                "revert_sha256": plan.revert.sha256,
                "added": list(plan.new_targets),
                "pruned": list(plan.pruned),
                "targets": sorted(plan.wave["targets"]),
                "warnings": list(plan.warnings),
            }
            if dry_run:
                summary["wave"] = plan.wave
                summary["revert"] = revert
                summary["dry_run"] = True
                # Nothing may be written: leave the transaction without its event.
                raise _DryRun(summary)
            root = self.latest_root(conn)
            if root is None:
                raise StateError(
                    "no root yet: the root ceremony must come first (`wavesign root propose`)"
                )
            keyids = self._targets_keyids(conn)
            request_id = "req-" + secrets.token_hex(6)
            request = SigningRequest(
                id=request_id,
                factory=str(
                    conn.execute(
                        select(db.settings.c.value).where(db.settings.c.key == "factory")
                    ).scalar()
                    or "wavesign"
                ),
                created=format_utc(now),
                purpose=Purpose(kind="wave", wave=name, tag=tag, ci_version=version),
                payloads=(
                    Payload.create("wave", "targets", plan.wave, keyids),
                    Payload.create("revert", "targets", revert, keyids),
                ),
                context=Context(
                    root_version=root.signed.version if root is not None else 0,
                    production_version=tag_row.production_version if production_doc else None,
                    production_sha256=tag_row.production_sha256 if production_doc else None,
                ),
            )
            try:
                result = conn.execute(
                    db.waves.insert().values(
                        name=name,
                        version=version,
                        tag=tag,
                        status="awaiting-signatures",
                        created_at=utcnow(),
                        created_by=actor,
                        expires=plan.expires,
                        plan=_json({"prune": sorted(prune), "source_tag": source_tag}),
                        wave_version=plan.version,
                        wave_sha256=summary["wave_sha256"],
                        wave_payload=_json(plan.wave),
                        revert_version=plan.revert.version,
                        revert_sha256=summary["revert_sha256"],
                        revert_payload=_json(revert),
                        request_id=request_id,
                    )
                )
            except IntegrityError:
                raise ConflictError(f"another wave for tag {tag} was created meanwhile") from None
            wave_id = _primary_key(result)
            new_counter = plan.highest_planned
            if tag_row is None:
                conn.execute(
                    db.tag_state.insert().values(
                        tag=tag, last_planned_version=new_counter, updated_at=utcnow()
                    )
                )
            else:
                conn.execute(
                    db.tag_state.update()
                    .where(db.tag_state.c.tag == tag)
                    .values(last_planned_version=new_counter, updated_at=utcnow())
                )
            request_bytes = request.to_bytes()
            conn.execute(
                db.signing_requests.insert().values(
                    id=request_id,
                    purpose="wave",
                    status="pending",
                    wave_id=wave_id,
                    request_sha256=request.digest(),
                    request_json=request_bytes.decode("utf-8"),
                    created_at=utcnow(),
                    created_by=actor,
                )
            )
            summary["request_id"] = request_id
            summary["request_sha256"] = request.digest()
            ch.detail = {
                k: summary[k]
                for k in ("version", "tag", "wave_sha256", "revert_sha256", "request_id")
            }
        return summary

    # -- listing --------------------------------------------------------------------
    def list_waves(self, status: str | None = None, tag: str | None = None) -> list[dict[str, Any]]:
        if status is not None and status not in db.WAVE_STATUSES:
            raise InvalidInputError(
                f"status {status!r} is not one of {', '.join(db.WAVE_STATUSES)}"
            )
        query = select(db.waves).order_by(db.waves.c.id)
        if status is not None:
            query = query.where(db.waves.c.status == status)
        if tag is not None:
            query = query.where(db.waves.c.tag == tag)
        with self.read() as conn:
            return [self._wave_summary(r) for r in conn.execute(query)]

    @staticmethod
    def _wave_summary(row: Any) -> dict[str, Any]:
        return {
            "name": row.name,
            "version": row.version,
            "tag": row.tag,
            "status": row.status,
            "created_at": row.created_at,
            "created_by": row.created_by,
            "finished_at": row.finished_at,
            "finished_by": row.finished_by,
        }

    def show_wave(self, name: str, show_targets: bool = False) -> dict[str, Any]:
        with self.read() as conn:
            row = self._wave_row(conn, name)
            result = self._wave_summary(row)
            rollouts = conn.execute(
                select(
                    db.rollouts.c.created_at,
                    db.rollouts.c.created_by,
                    db.rollouts.c.device_count,
                    db.rollouts.c.full_group,
                    db.device_groups.c.name.label("group"),
                )
                .select_from(
                    db.rollouts.outerjoin(
                        db.device_groups, db.device_groups.c.id == db.rollouts.c.group_id
                    )
                )
                .where(db.rollouts.c.wave_id == row.id)
                .order_by(db.rollouts.c.id)
            )
            result["rollouts"] = [
                {
                    "at": r.created_at,
                    "by": r.created_by,
                    "group": r.group,
                    "devices": r.device_count,
                    "full_group": bool(r.full_group),
                }
                for r in rollouts
            ]
            result["devices"] = conn.execute(
                select(func.count())
                .select_from(db.wave_devices)
                .where(db.wave_devices.c.wave_id == row.id)
            ).scalar()
            result.update(
                expires=row.expires,
                wave_version=row.wave_version,
                revert_version=row.revert_version,
                wave_sha256=row.wave_sha256,
                revert_sha256=row.revert_sha256,
                request_id=row.request_id,
                plan=json.loads(row.plan),
            )
            if show_targets:
                result["targets"] = (
                    json.loads(row.wave_signed) if row.wave_signed else json.loads(row.wave_payload)
                )
            return result

    # -- rollout --------------------------------------------------------------------
    def rollout(
        self,
        actor: str,
        name: str,
        *,
        group: str | None = None,
        limit: str | None = None,
        uuids: list[str] | None = None,
        dry_run: bool = False,
        return_uuids: bool = False,
    ) -> dict[str, Any]:
        """Show the active wave ``name`` to more devices of its tag.

        Selection follows :func:`wavesign.online.rollout_rules.select_rollout` (fioctl's rules).
        A group alone is a full-group rollout: every device of the group now, and any
        that joins it while the wave is active; it is done in SQL (INSERT ... SELECT), so
        a 100,000-device group costs one statement.
        """
        if uuids is not None and not uuids:
            uuids = None
        try:
            with self.change(actor, "wave-rolled-out", name) as ch:
                result = self._rollout(ch.conn, actor, name, group, limit, uuids, dry_run)
                if return_uuids or dry_run:
                    result["uuids"] = list(result.pop("_uuids"))
                else:
                    result.pop("_uuids")
                if dry_run:
                    raise _DryRun(result)
                ch.detail = {
                    "group": group,
                    "devices": result["devices"],
                    "full_group": result["full_group"],
                }
                self._publish_on_first_rollout(ch, name)
        except _DryRun as dry:
            return dry.result
        return result

    def _rollout(
        self,
        conn: Connection,
        actor: str,
        name: str,
        group: str | None,
        limit: str | None,
        uuids: list[str] | None,
        dry_run: bool,
    ) -> dict[str, Any]:
        # The row lock serializes concurrent rollouts of this wave (PostgreSQL; SQLite
        # already holds the database write lock since BEGIN IMMEDIATE).
        wave = self._wave_row(conn, name, lock=True)
        rollout_rules.ensure_rollout_allowed(name, wave.status)
        gid = self.group_id(conn, group)
        on_tag = [db.devices.c.tag == wave.tag]
        if gid is not None:
            on_tag.append(db.devices.c.group_id == gid)
        full_group = group is not None and limit is None and uuids is None
        id_by_uuid: dict[str, int] = {}
        if full_group:
            # The difference is taken here, not in SQL: an anti-join against the
            # table being inserted into is planned as a nested loop while the
            # statistics still describe an empty wave_devices (right after a bulk
            # import), which took minutes for 100,000 devices on PostgreSQL.
            members = set(
                conn.execute(
                    select(db.wave_devices.c.device_id).where(db.wave_devices.c.wave_id == wave.id)
                ).scalars()
            )
            selected_uuids = [
                uuid
                for device_id, uuid in conn.execute(
                    select(db.devices.c.id, db.devices.c.uuid).where(*on_tag)
                ).all()
                if device_id not in members
            ]
            count = len(selected_uuids)
            verb = "would be" if dry_run else "is being"
            also = "would also be" if dry_run else "will also be"
            message = f"A Wave {verb} rolled out to {count} devices in group {group}."
            note: str | None = f"It {also} rolled out to all new devices in group {group}."
        else:
            candidates, id_by_uuid = self._device_refs(conn, on_tag, uuids)
            already = set(
                conn.execute(
                    select(db.devices.c.uuid)
                    .join(db.wave_devices, db.wave_devices.c.device_id == db.devices.c.id)
                    .where(db.wave_devices.c.wave_id == wave.id, *on_tag)
                ).scalars()
            )
            selection = rollout_rules.select_rollout(
                candidates,
                tag=wave.tag,
                already_in_wave=already,
                group=group,
                limit=limit,
                uuids=uuids,
                dry_run=dry_run,
            )
            selected_uuids = list(selection.uuids)
            count, message, note = selection.device_count, selection.message, selection.note
        result: dict[str, Any] = {
            "wave": name,
            "group": group,
            "devices": count,
            "full_group": full_group,
            "dry_run": dry_run,
            "message": message,
            "note": note,
            "_uuids": selected_uuids,
        }
        if dry_run:
            return result
        rollout_id = _primary_key(
            conn.execute(
                db.rollouts.insert().values(
                    wave_id=wave.id,
                    created_at=utcnow(),
                    created_by=actor,
                    group_id=gid,
                    device_count=count,
                    full_group=full_group,
                )
            )
        )
        if full_group:
            # One statement; the primary key (wave_id, device_id) skips the devices
            # already in the wave with an index probe each, whatever the planner thinks.
            conn.execute(
                db.insert_skipping_duplicates(conn, db.wave_devices).from_select(
                    ["wave_id", "device_id", "rollout_id"],
                    select(
                        literal(wave.id, Integer),
                        db.devices.c.id,
                        literal(rollout_id, Integer),
                    ).where(*on_tag),
                )
            )
        else:
            conn.execute(
                db.wave_devices.insert(),
                [
                    {"wave_id": wave.id, "device_id": id_by_uuid[u], "rollout_id": rollout_id}
                    for u in selected_uuids
                ],
            )
        return result

    @staticmethod
    def _rollout_count(conn: Connection, wave_id: int) -> int:
        return int(
            conn.execute(
                select(func.count())
                .select_from(db.rollouts)
                .where(db.rollouts.c.wave_id == wave_id)
            ).scalar()
            or 0
        )

    def _publish_on_first_rollout(self, ch: Change, name: str) -> None:
        """The first rollout makes W visible in the wave view (later ones show the same
        file to more devices, and devices joining a rolled-out group see it too)."""
        wave = self._wave_row(ch.conn, name)
        if self._rollout_count(ch.conn, wave.id) == 1:
            self._publish_targets(
                ch,
                body=wave.wave_signed,
                version=wave.wave_version,
                request=wave.request_id,
                payload="wave",
                view="wave",
                tag=wave.tag,
                wave=name,
            )

    def _device_refs(
        self, conn: Connection, on_tag: list[Any], uuids: list[str] | None
    ) -> tuple[list[rollout_rules.DeviceRef], dict[str, int]]:
        """The devices a selection may draw from (and every device named by uuid).

        Also returns their row ids by uuid, for recording the selection.
        """
        query = select(
            db.devices.c.id,
            db.devices.c.uuid,
            db.devices.c.tag,
            db.device_groups.c.name.label("group"),
            db.devices.c.last_seen,
        ).select_from(
            db.devices.outerjoin(db.device_groups, db.device_groups.c.id == db.devices.c.group_id)
        )
        rows: list[Any] = []
        if uuids is not None:
            for start in range(0, len(uuids), 5000):
                chunk = uuids[start : start + 5000]
                rows.extend(conn.execute(query.where(db.devices.c.uuid.in_(chunk))).all())
        else:
            rows.extend(conn.execute(query.where(*on_tag)).all())
        refs = [rollout_rules.DeviceRef(r.uuid, r.tag, r.group, r.last_seen) for r in rows]
        return refs, {r.uuid: r.id for r in rows}

    # -- cancel / complete ----------------------------------------------------------
    def cancel_wave(self, actor: str, name: str) -> dict[str, Any]:
        """Cancel: the wave's devices are to see R; no devices are added any more."""
        with self.change(actor, "wave-canceled", name) as ch:
            # Lock order: the signing request, then the wave, as `requests import` does;
            # the other order deadlocks against a concurrent import on PostgreSQL.
            unlocked = self._wave_row(ch.conn, name)
            ch.conn.execute(
                select(db.signing_requests.c.id)
                .where(db.signing_requests.c.wave_id == unlocked.id)
                .with_for_update()
            ).all()
            wave = self._wave_row(ch.conn, name, lock=True)
            if wave.status == "complete":
                raise StateError(
                    f"wave {name} is complete: a completed wave cannot be canceled "
                    "(init a new wave with --prune to undo it)"
                )
            if wave.status == "canceled":
                raise StateError(f"wave {name} is canceled already")
            if wave.status == "awaiting-signatures":
                ch.conn.execute(
                    db.signing_requests.update()
                    .where(
                        db.signing_requests.c.wave_id == wave.id,
                        db.signing_requests.c.status == "pending",
                    )
                    .values(status="canceled", completed_at=utcnow())
                )
            ch.conn.execute(
                db.waves.update()
                .where(db.waves.c.id == wave.id)
                .values(status="canceled", finished_at=utcnow(), finished_by=actor)
            )
            ch.detail = {"was": wave.status, "revert_sha256": wave.revert_sha256}
            if wave.revert_signed and self._rollout_count(ch.conn, wave.id):
                # The devices that were shown W now see R (the revert view).
                self._publish_targets(
                    ch,
                    body=wave.revert_signed,
                    version=wave.revert_version,
                    request=wave.request_id,
                    payload="revert",
                    view="revert",
                    tag=wave.tag,
                    wave=name,
                )
        return self.show_wave(name)

    def complete_wave(self, actor: str, name: str) -> dict[str, Any]:
        """Complete: W's exact signed bytes become the tag's production targets."""
        with self.change(actor, "wave-completed", name) as ch:
            conn = ch.conn
            wave = self._wave_row(conn, name, lock=True)
            if wave.status != "active":
                raise StateError(f"wave {name} is {wave.status}: only an active wave can complete")
            if not wave.wave_signed:
                raise StateError(f"wave {name} has no signed targets")
            tag_row = self._tag_row(conn, wave.tag, lock=True)
            ensure_production_advances(
                wave.tag, tag_row.production_version if tag_row else None, wave.wave_version
            )
            conn.execute(
                db.tag_state.update()
                .where(db.tag_state.c.tag == wave.tag)
                .values(
                    production_json=wave.wave_signed,
                    production_version=wave.wave_version,
                    production_ci_version=wave.version,
                    production_sha256=wave.wave_sha256,
                    updated_at=utcnow(),
                )
            )
            conn.execute(
                db.waves.update()
                .where(db.waves.c.id == wave.id)
                .values(status="complete", finished_at=utcnow(), finished_by=actor)
            )
            ch.detail = {"tag": wave.tag, "production_sha256": wave.wave_sha256}
            # W's exact bytes, re-published as the tag's production targets.
            self._publish_targets(
                ch,
                body=wave.wave_signed,
                version=wave.wave_version,
                request=wave.request_id,
                payload="wave",
                view="production",
                tag=wave.tag,
                wave=name,
            )
        return self.show_wave(name)

    # -- signing requests -----------------------------------------------------------
    def list_requests(self) -> list[dict[str, Any]]:
        with self.read() as conn:
            rows = conn.execute(
                select(
                    db.signing_requests.c.id,
                    db.signing_requests.c.purpose,
                    db.signing_requests.c.status,
                    db.signing_requests.c.created_at,
                    db.signing_requests.c.request_sha256,
                    db.waves.c.name.label("wave"),
                )
                .select_from(
                    db.signing_requests.outerjoin(
                        db.waves, db.waves.c.id == db.signing_requests.c.wave_id
                    )
                )
                .order_by(
                    db.signing_requests.c.created_at,
                    db.signing_requests.c.wave_id,
                    db.signing_requests.c.id,
                )
            )
            return [
                {
                    "id": r.id,
                    "purpose": r.purpose,
                    "status": r.status,
                    "wave": r.wave,
                    "created_at": r.created_at,
                    "request_sha256": r.request_sha256,
                }
                for r in rows
            ]

    def _request_row(self, conn: Connection, request_id: str) -> Any:
        row = conn.execute(
            select(db.signing_requests).where(db.signing_requests.c.id == request_id)
        ).first()
        if row is None:
            raise NotFoundError(f"no signing request {request_id}")
        return row

    def show_request(self, request_id: str) -> dict[str, Any]:
        with self.read() as conn:
            row = self._request_row(conn, request_id)
        request = SigningRequest.from_bytes(row.request_json.encode())
        return {
            "id": row.id,
            "purpose": row.purpose,
            "status": row.status,
            "created_at": row.created_at,
            "created_by": row.created_by,
            "completed_at": row.completed_at,
            "request_sha256": row.request_sha256,
            "description": request.purpose.describe(),
            "payloads": [
                {
                    "name": p.name,
                    "role": p.role,
                    "sha256": p.sha256,
                    "version": p.full().get("version"),
                    "expires": p.full().get("expires"),
                    "targets": len(p.full().get("targets", {})),
                    "keyids": list(p.keyids),
                }
                for p in request.payloads
            ],
            "context": request.context.to_dict(),
            "operator_signed": request.operator_signature is not None,
            "response": json.loads(row.response_json) if row.response_json else None,
        }

    def request_bytes(self, request_id: str, full: bool = True) -> bytes:
        """The request as exported. Unless ``full``, each targets payload travels as a delta
        against the tag's production targets, a payload the appliance signed before."""
        with self.read() as conn:
            row = self._request_row(conn, request_id)
            data = str(row.request_json).encode("utf-8")
            if full:
                return data
            request = SigningRequest.from_bytes(data)
            base = None
            if request.purpose.tag is not None:
                tag_row = self._tag_row(conn, request.purpose.tag)
                if tag_row is not None and tag_row.production_json:
                    base = json.loads(tag_row.production_json)["signed"]
        if base is None or digest(base) != request.context.production_sha256:
            return data
        payloads = [
            p.as_delta_against(base) if p.role == "targets" else p for p in request.payloads
        ]
        return request.with_payloads(payloads).to_bytes()

    def export_request(self, actor: str, request_id: str, full: bool = False) -> bytes:
        """The request bytes as exported (see :meth:`request_bytes`), logged as
        ``request-exported`` with their sha256: the log records what crossed the gap."""
        data = self.request_bytes(request_id, full)
        with self.change(actor, "request-exported", request_id) as ch:
            row = self._request_row(ch.conn, request_id)
            if row.status != "pending":
                raise StateError(f"request {request_id} is {row.status}: nothing to export")
            ch.detail = {"full": full, "sha256": digest_bytes(data)}
        return data

    def attach_operator_signature(
        self, actor: str, request_id: str, signature: str
    ) -> dict[str, Any]:
        """Store the operator's detached GnuPG signature over the request digest bytes.

        The signature is made client-side (the operator's key never reaches the
        server); the offline appliance verifies it against its trusted operators.
        """
        try:
            raw = base64.b64decode(signature.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, AttributeError):
            raw = b""
        if not raw or len(raw) > 16 * 1024:
            raise InvalidInputError("the operator signature must be a base64 GnuPG signature")
        with self.read() as conn:
            unsigned = SigningRequest.from_bytes(
                str(self._request_row(conn, request_id).request_json).encode("utf-8")
            )
        checked = self._verify_gpg(
            "operator",
            unsigned.signing_bytes(),
            signature,
            f"the operator signature of request {request_id}",
        )
        with self.change(actor, "request-operator-signed", request_id) as ch:
            self._same_gpg_keys(ch.conn, "operator", checked)
            row = self._request_row(ch.conn, request_id)
            if row.status != "pending":
                raise StateError(f"request {request_id} is {row.status}")
            request = SigningRequest.from_bytes(row.request_json.encode())
            signed = request.with_operator_signature(signature)
            ch.conn.execute(
                db.signing_requests.update()
                .where(db.signing_requests.c.id == request_id)
                .values(request_json=signed.to_bytes().decode("utf-8"))
            )
        return {"id": request_id, "operator_signed": True}

    def import_response(self, actor: str, response_bytes: bytes) -> dict[str, Any]:
        """Import the appliance's response to any request: a wave, a root, a renewal.

        A wave's or renewal's offline signatures must verify against the latest root's
        targets keys over the exact payloads the request names; each payload must then
        reach the targets threshold with the online signature. A root must be the
        proposal completed by the appliance and signed as a root chain. Otherwise
        nothing changes. The same response imported again changes nothing either.
        """
        response = SigningResponse.from_bytes(response_bytes)
        if self.keys is None:
            raise StateError("this store has no online keys to countersign with")
        with self.read() as conn:
            row = conn.execute(
                select(db.signing_requests).where(
                    db.signing_requests.c.request_sha256 == response.request_sha256
                )
            ).first()
        if row is None:
            raise NotFoundError(f"no signing request has digest {response.request_sha256[:16]}…")
        if row.status == "signed" and row.response_json:
            stored = SigningResponse.from_bytes(str(row.response_json).encode("utf-8"))
            if stored.digest() == response.digest():
                return {
                    "request_id": row.id,
                    "purpose": row.purpose,
                    "status": "unchanged",
                    "noop": True,
                    "message": f"this response for request {row.id} was imported already: "
                    "nothing changed",
                }
        checked = self._verify_gpg(
            "officer",
            response.signing_bytes(),
            response.attestation,
            f"the response to request {row.id} (officer attestation)",
        )
        with self.change(actor, "signatures-imported", response.request_sha256) as ch:
            conn = ch.conn
            self._same_gpg_keys(conn, "officer", checked)
            row = conn.execute(
                select(db.signing_requests)
                .where(db.signing_requests.c.request_sha256 == response.request_sha256)
                .with_for_update()
            ).first()
            if row is None:
                raise NotFoundError(f"no signing request {response.request_sha256[:16]}…")
            if row.status == "signed":
                raise StateError(
                    f"request {row.id} is signed already, by another response: nothing changed"
                )
            if row.status != "pending":
                raise StateError(f"request {row.id} is {row.status}: its response is refused")
            request = SigningRequest.from_bytes(row.request_json.encode())
            if row.purpose == "root":
                result = self._import_root(conn, row, request, response)
                ch.publications.append(
                    PublicationDraft("root", result.pop("_text"), result["version"], row.id, "root")
                )
            else:
                result = self._import_targets(conn, row, request, response)
                renewed = result.pop("_published", None)
                if renewed is not None:
                    self._publish_targets(
                        ch,
                        body=renewed,
                        version=result["version"],
                        request=row.id,
                        payload="renew",
                        view="production",
                        tag=result["tag"],
                        wave=None,
                    )
            conn.execute(
                db.signing_requests.update()
                .where(db.signing_requests.c.id == row.id)
                .values(
                    status="signed",
                    response_json=response.to_bytes().decode("utf-8"),
                    completed_at=utcnow(),
                )
            )
            ch.detail = {
                "request_id": row.id,
                "purpose": row.purpose,
                "response_sha256": response.digest(),
                **{k: v for k, v in result.items() if k in ("wave", "tag", "version", "sha256")},
            }
        return result

    def _import_targets(
        self, conn: Connection, row: Any, request: SigningRequest, response: SigningResponse
    ) -> dict[str, Any]:
        """A wave (W and R) or a renewal: countersign and activate or publish."""
        assert self.keys is not None
        root = self.latest_root(conn)
        if root is None:
            raise StateError("no root yet: the root ceremony must come first")
        signatures_for(response, [p.name for p in request.payloads])
        online = self.keys.signer("targets")
        if row.purpose == "renew":
            return self._publish_renewal(conn, row, request, response, root.signed, online)
        if row.purpose != "wave":
            raise StateError(f"request {row.id} is a {row.purpose} request: not handled here")
        wave = conn.execute(
            select(db.waves).where(db.waves.c.id == row.wave_id).with_for_update()
        ).first()
        if wave is None or wave.status != "awaiting-signatures":
            raise StateError(f"the wave of request {row.id} is not awaiting signatures")
        signed_docs = {
            payload.name: _json(countersign(root.signed, payload, response, online))
            for payload in request.payloads
        }
        conn.execute(
            db.waves.update()
            .where(db.waves.c.id == wave.id)
            .values(
                status="active",
                wave_signed=signed_docs["wave"],
                revert_signed=signed_docs["revert"],
            )
        )
        return {
            "request_id": row.id,
            "purpose": "wave",
            "wave": wave.name,
            "status": "active",
            "message": f"wave {wave.name} is active",
        }

    def _publish_renewal(
        self,
        conn: Connection,
        row: Any,
        request: SigningRequest,
        response: SigningResponse,
        root: Root,
        online: Any,
    ) -> dict[str, Any]:
        payload = request.payload("renew")
        tag = str(request.purpose.tag)
        document = countersign(root, payload, response, online)
        version = int(document["signed"]["version"])
        tag_row = self._tag_row(conn, tag, lock=True)
        if tag_row is None or not tag_row.production_json:
            raise StateError(f"tag {tag} has no production targets to renew")
        ensure_production_advances(tag, tag_row.production_version, version)
        conn.execute(
            db.tag_state.update()
            .where(db.tag_state.c.tag == tag)
            .values(
                production_json=_json(document),
                production_version=version,
                production_sha256=payload.sha256,
                updated_at=utcnow(),
            )
        )
        expires = document["signed"]["expires"]
        return {
            "_published": _json(document),
            "request_id": row.id,
            "purpose": "renew",
            "tag": tag,
            "version": version,
            "sha256": payload.sha256,
            "status": "published",
            "message": f"production targets of tag {tag} renewed: version {version}, "
            f"expires {expires}",
        }

    def _import_root(
        self, conn: Connection, row: Any, request: SigningRequest, response: SigningResponse
    ) -> dict[str, Any]:
        """A ceremony's root: the proposal completed, signed as the next link of the chain."""
        assert self.keys is not None
        new = parse_response_root(response)
        check_ceremony_root(new, request.payload("root").full(), self.keys.public_keys())
        previous = self.latest_root(conn)
        expected = (previous.signed.version if previous is not None else 0) + 1
        if new.signed.version != expected:
            raise StateError(
                f"the response holds root v{new.signed.version}, but the next root is "
                f"v{expected}: propose again"
            )
        verify_root_update(previous, new)
        text = root_json(new)
        sha256 = digest_bytes(text.encode("utf-8"))
        conn.execute(
            db.roots.insert().values(
                version=new.signed.version, root_json=text, sha256=sha256, created_at=utcnow()
            )
        )
        return {
            "_text": text,
            "request_id": row.id,
            "purpose": "root",
            "version": new.signed.version,
            "sha256": sha256,
            "status": "signed",
            "message": f"root v{new.signed.version} is in place",
        }


def _primary_key(result: Any) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


class _DryRun(WavesignError):
    """Leaves a transaction without committing: a dry run writes nothing."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__("dry run")
        self.result = result
