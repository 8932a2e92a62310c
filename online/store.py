"""The broker's state: every change is one transaction that also appends an event.

:class:`Store` is the library the HTTP API (and tests) call. Each public method that
changes anything runs inside :meth:`Store.change`, which opens one transaction
(``BEGIN IMMEDIATE`` on SQLite, row locks on PostgreSQL), lets the method write, and
appends one row to ``events`` before committing. A method that raises leaves the
database exactly as it was: nothing is committed, not even the event.

Waves and signing requests live in :mod:`wavesign.online.store_waves` (a mixin of this
class); this module holds tokens, CI targets, groups and devices.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from securesystemslib.signer import Signer
from sqlalchemy import Connection, Engine, Integer, func, literal, select
from sqlalchemy.exc import IntegrityError
from wavesign.shared.canonical import canonical_bytes
from wavesign.shared.errors import WavesignError
from wavesign.shared.timefmt import utc_now_text

from . import db
from .eventlog import LogEntry, PublicationDraft, append_to_log
from .targets_input import TargetsInputError, ci_version_of, validate_entry

__all__ = [
    "ROLES",
    "AuthError",
    "ConflictError",
    "ForbiddenError",
    "InvalidInputError",
    "NotFoundError",
    "Principal",
    "StateError",
    "Store",
    "hash_token",
    "new_token",
    "utcnow",
]

#: API roles: admin manages tokens, operator changes state, auditor reads.
ROLES = ("admin", "operator", "auditor")
API_TOKEN_PREFIX = "wsk_"
DEVICE_TOKEN_PREFIX = "wsd_"
MAX_NAME = 200


class NotFoundError(WavesignError):
    """The named object does not exist."""


class ConflictError(WavesignError):
    """The object exists already, or another one is in the way."""


class InvalidInputError(WavesignError):
    """The request's input is malformed."""


class StateError(WavesignError):
    """The object is not in a state that allows this operation."""


class AuthError(WavesignError):
    """No valid token."""


class ForbiddenError(WavesignError):
    """A valid token whose role may not do this."""


class _DuplicateDevice(WavesignError):
    """An insert of devices hit a unique index (named after the rollback)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's name and role."""

    name: str
    role: str


def utcnow() -> str:
    return utc_now_text()


def new_token(prefix: str) -> str:
    """A 256-bit random bearer token; prefixed so a leaked one is recognizable."""
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """sha256 of the token: tokens are 256-bit random, so a fast hash is enough."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise InvalidInputError(f"{what} must be a non-empty name of at most {MAX_NAME} chars")
    if value.strip() != value or any(ch in value for ch in "\n\r\t,"):
        raise InvalidInputError(f"{what} {value!r} has spaces at its ends or a , or control char")
    return value


def _json(value: Any) -> str:
    return canonical_bytes(value).decode("utf-8")


@dataclass
class Change:
    """The open transaction of one change and the event(s) it will append.

    ``publications`` are files the change makes visible to devices: each is logged
    as a ``published`` event right after the change's own event.
    """

    conn: Connection
    actor: str
    kind: str
    subject: str
    detail: dict[str, Any] = field(default_factory=dict)
    publications: list[PublicationDraft] = field(default_factory=list)


class StoreBase:
    """Engine, migrations, and the one-transaction-per-change rule."""

    def __init__(self, url: str, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine if engine is not None else db.make_engine(url)
        self.is_sqlite = db.is_sqlite(url)

    def close(self) -> None:
        self.engine.dispose()

    # -- schema -------------------------------------------------------------------
    def migrate(self) -> str:
        """Bring the schema to the newest Alembic revision; return that revision."""
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext

        location = resources.files("wavesign.online") / "migrations"
        config = Config()
        config.set_main_option("script_location", str(location))
        config.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        with self.engine.connect() as conn:
            revision = MigrationContext.configure(conn).get_current_revision()
        return str(revision)

    # -- transactions -------------------------------------------------------------
    def log_signer(self) -> Signer | None:
        """The key that signs the transparency log's tree heads (None: heads unsigned)."""
        return None

    @contextmanager
    def change(self, actor: str, kind: str, subject: str) -> Iterator[Change]:
        """One transaction; on success appends the event ``kind`` (and the change's
        publications) to the transparency log, signs the new tree head, and commits."""
        try:
            with self.engine.begin() as conn:
                ch = Change(conn, actor, kind, subject)
                yield ch
                entries = [LogEntry(ch.kind, ch.subject, ch.detail)]
                entries += [
                    LogEntry("published", draft.subject(), {}, draft) for draft in ch.publications
                ]
                append_to_log(
                    conn, at=utcnow(), actor=actor, entries=entries, signer=self.log_signer()
                )
        except IntegrityError:
            # A concurrent change got there first (a unique name, the one open wave per
            # tag): nothing of this one was committed.
            raise ConflictError(
                f"{kind} of {subject} conflicts with a concurrent change: nothing was changed"
            ) from None

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only connection (one snapshot per transaction, no write lock)."""
        with self.engine.connect().execution_options(wavesign_read_only=True) as conn:
            yield conn

    def setting(self, key: str, default: str | None = None) -> str | None:
        with self.read() as conn:
            value = conn.execute(
                select(db.settings.c.value).where(db.settings.c.key == key)
            ).scalar()
        return default if value is None else str(value)

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        with self.read() as conn:
            rows = conn.execute(
                select(db.events).where(db.events.c.id > after).order_by(db.events.c.id)
            ).mappings()
            return [dict(row, detail=json.loads(row["detail"])) for row in rows]

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table, ordered: what refusal tests compare (without the
        servers' heartbeats)."""
        result: dict[str, list[tuple[Any, ...]]] = {}
        with self.read() as conn:
            for table in db.metadata.sorted_tables:
                query = select(table)
                if table is db.settings:
                    query = query.where(~db.settings.c.key.startswith(db.HEARTBEAT_PREFIX))
                rows = conn.execute(query).all()
                result[table.name] = sorted((tuple(r) for r in rows), key=repr)
        return result


class Store(StoreBase):
    """Tokens, CI targets, groups and devices (waves: see ``store_waves``)."""

    # -- setup --------------------------------------------------------------------
    def initialize(self, factory: str) -> str:
        """First-time setup after migrating: the factory name and the admin token."""
        check_name(factory, "factory name")
        with self.change("server-init", "server-initialized", factory) as ch:
            existing = ch.conn.execute(select(func.count()).select_from(db.tokens)).scalar()
            if existing:
                raise ConflictError("this database is initialized already")
            ch.conn.execute(db.settings.insert().values(key="factory", value=factory))
            ch.conn.execute(db.settings.insert().values(key="metadata_counter", value="0"))
            token = new_token(API_TOKEN_PREFIX)
            ch.conn.execute(
                db.tokens.insert().values(
                    name="admin",
                    role="admin",
                    token_sha256=hash_token(token),
                    created_at=utcnow(),
                    created_by="server-init",
                )
            )
        return token

    @property
    def factory(self) -> str:
        return self.setting("factory", "wavesign") or "wavesign"

    # -- tokens -------------------------------------------------------------------
    def authenticate(self, token: str) -> Principal:
        """The principal of an API token; device tokens are refused here."""
        token_hash = hash_token(token)
        with self.read() as conn:
            row = conn.execute(
                select(db.tokens.c.name, db.tokens.c.role, db.tokens.c.revoked_at).where(
                    db.tokens.c.token_sha256 == token_hash
                )
            ).first()
            if row is None:
                device = conn.execute(
                    select(db.devices.c.id).where(db.devices.c.token_sha256 == token_hash)
                ).first()
                if device is not None:
                    raise ForbiddenError("a device token cannot use the operator API")
                raise AuthError("unknown API token")
        if row.revoked_at is not None:
            raise AuthError(f"API token {row.name} was revoked")
        return Principal(row.name, row.role)

    def create_token(self, actor: str, role: str, name: str | None = None) -> tuple[str, str]:
        """A new API token: returns (name, token). The token is shown once, stored hashed."""
        if role not in ROLES:
            raise InvalidInputError(f"role {role!r} is not one of {', '.join(ROLES)}")
        token = new_token(API_TOKEN_PREFIX)
        name = check_name(name, "token name") if name else f"{role}-{secrets.token_hex(4)}"
        with self.change(actor, "token-created", name) as ch:
            ch.detail = {"role": role}
            if ch.conn.execute(select(db.tokens.c.id).where(db.tokens.c.name == name)).first():
                raise ConflictError(f"a token named {name} exists already")
            ch.conn.execute(
                db.tokens.insert().values(
                    name=name,
                    role=role,
                    token_sha256=hash_token(token),
                    created_at=utcnow(),
                    created_by=actor,
                )
            )
        return name, token

    def list_tokens(self) -> list[dict[str, Any]]:
        with self.read() as conn:
            rows = conn.execute(
                select(
                    db.tokens.c.name,
                    db.tokens.c.role,
                    db.tokens.c.created_at,
                    db.tokens.c.created_by,
                    db.tokens.c.revoked_at,
                ).order_by(db.tokens.c.id)
            ).mappings()
            return [dict(r) for r in rows]

    def revoke_token(self, actor: str, name: str) -> None:
        with self.change(actor, "token-revoked", name) as ch:
            row = ch.conn.execute(
                select(db.tokens.c.id, db.tokens.c.revoked_at).where(db.tokens.c.name == name)
            ).first()
            if row is None:
                raise NotFoundError(f"no token named {name}")
            if row.revoked_at is not None:
                raise StateError(f"token {name} is revoked already")
            if name == actor:
                raise StateError("a token cannot revoke itself")
            ch.conn.execute(
                db.tokens.update().where(db.tokens.c.id == row.id).values(revoked_at=utcnow())
            )

    # -- CI targets ---------------------------------------------------------------
    def add_targets(self, actor: str, entries: dict[str, Any]) -> dict[str, list[str]]:
        """Register CI targets, all or nothing. An identical re-upload is a no-op per entry.

        Returns ``{"added": [...], "unchanged": [...]}``. A name registered with other
        content is refused (CI targets are immutable once registered).
        """
        if not isinstance(entries, dict) or not entries:
            raise InvalidInputError("no targets given")
        try:
            normalized = {name: validate_entry(name, entry) for name, entry in entries.items()}
            encoded = {name: _json(entry) for name, entry in normalized.items()}
        except (TargetsInputError, WavesignError) as exc:
            raise InvalidInputError(str(exc)) from None
        added: list[str] = []
        unchanged: list[str] = []
        with self.change(actor, "targets-added", f"{len(entries)} targets") as ch:
            existing = {
                row.name: row.entry
                for row in ch.conn.execute(
                    select(db.ci_targets.c.name, db.ci_targets.c.entry).where(
                        db.ci_targets.c.name.in_(list(normalized))
                    )
                )
            }
            rows = []
            now = utcnow()
            for name, entry in normalized.items():
                if name in existing:
                    if existing[name] != encoded[name]:
                        raise ConflictError(
                            f"target {name} is registered already with other content"
                        )
                    unchanged.append(name)
                    continue
                rows.append(
                    {
                        "name": name,
                        "version": ci_version_of(entry["custom"], f"target {name}"),
                        "sha256": entry["hashes"]["sha256"],
                        "length": entry["length"],
                        "entry": encoded[name],
                        "created_at": now,
                    }
                )
                added.append(name)
            if rows:
                ch.conn.execute(db.ci_targets.insert(), rows)
            ch.detail = {
                "added": {r["name"]: r["sha256"] for r in rows},
                "unchanged": len(unchanged),
            }
        return {"added": sorted(added), "unchanged": sorted(unchanged)}

    def ci_targets(
        self, conn: Connection, version: int | None = None, tag: str | None = None
    ) -> dict[str, dict[str, Any]]:
        query = select(db.ci_targets.c.name, db.ci_targets.c.entry).order_by(db.ci_targets.c.name)
        if version is not None:
            query = query.where(db.ci_targets.c.version == version)
        result = {row.name: json.loads(row.entry) for row in conn.execute(query)}
        if tag is not None:
            result = {
                n: e for n, e in result.items() if tag in (e.get("custom", {}).get("tags") or [])
            }
        return result

    def list_targets(
        self, version: int | None = None, tag: str | None = None, production: str | None = None
    ) -> dict[str, dict[str, Any]]:
        """CI targets (filtered), or the production targets of a tag."""
        with self.read() as conn:
            if production is not None:
                row = conn.execute(
                    select(db.tag_state.c.production_json).where(db.tag_state.c.tag == production)
                ).first()
                if row is None or row.production_json is None:
                    raise NotFoundError(f"tag {production} has no production targets yet")
                targets: dict[str, dict[str, Any]] = json.loads(row.production_json)["signed"][
                    "targets"
                ]
                if version is not None:
                    targets = {
                        n: e
                        for n, e in targets.items()
                        if str(e.get("custom", {}).get("version")) == str(version)
                    }
                if tag is not None:
                    targets = {
                        n: e
                        for n, e in targets.items()
                        if tag in (e.get("custom", {}).get("tags") or [])
                    }
                return targets
            return self.ci_targets(conn, version, tag)

    # -- groups -------------------------------------------------------------------
    def create_group(self, actor: str, name: str) -> None:
        check_name(name, "group name")
        with self.change(actor, "group-created", name) as ch:
            if ch.conn.execute(
                select(db.device_groups.c.id).where(db.device_groups.c.name == name)
            ).first():
                raise ConflictError(f"group {name} exists already")
            ch.conn.execute(db.device_groups.insert().values(name=name, created_at=utcnow()))

    def list_groups(self) -> list[dict[str, Any]]:
        with self.read() as conn:
            counts = select(db.devices.c.group_id, func.count().label("n")).group_by(
                db.devices.c.group_id
            )
            sub = counts.subquery()
            rows = conn.execute(
                select(db.device_groups.c.name, db.device_groups.c.created_at, sub.c.n)
                .select_from(
                    db.device_groups.outerjoin(sub, sub.c.group_id == db.device_groups.c.id)
                )
                .order_by(db.device_groups.c.name)
            )
            return [
                {"name": r.name, "created_at": r.created_at, "devices": int(r.n or 0)} for r in rows
            ]

    @staticmethod
    def group_id(conn: Connection, name: str | None) -> int | None:
        if name is None or name == "":
            return None
        gid = conn.execute(
            select(db.device_groups.c.id).where(db.device_groups.c.name == name)
        ).scalar()
        if gid is None:
            raise NotFoundError(f"no group named {name}: create it with `wavesign groups create`")
        return int(gid)

    # -- devices ------------------------------------------------------------------
    def _device_rows(
        self, conn: Connection, specs: Sequence[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        """Validated insert rows and the (name, uuid, token) the caller hands back once."""
        groups = {
            r.name: r.id
            for r in conn.execute(select(db.device_groups.c.name, db.device_groups.c.id))
        }
        now = utcnow()
        rows: list[dict[str, Any]] = []
        issued: list[dict[str, str]] = []
        seen: set[str] = set()
        for index, spec in enumerate(specs):
            where = f"device {index + 1}" if len(specs) > 1 else "device"
            if not isinstance(spec, dict):
                raise InvalidInputError(f"{where}: expected an object")
            name = check_name(spec.get("name"), f"{where}: name")
            hardware_id = check_name(spec.get("hardware_id"), f"{where} ({name}): hardware_id")
            tag = check_name(spec.get("tag"), f"{where} ({name}): tag")
            group = spec.get("group") or None
            if group is not None and group not in groups:
                raise NotFoundError(f"{where} ({name}): no group named {group}")
            if name in seen:
                raise ConflictError(f"{where}: device name {name} is given twice")
            seen.add(name)
            device_uuid = str(uuid.uuid4())
            token = new_token(DEVICE_TOKEN_PREFIX)
            rows.append(
                {
                    "uuid": device_uuid,
                    "name": name,
                    "hardware_id": hardware_id,
                    "tag": tag,
                    "group_id": groups[group] if group is not None else None,
                    "token_sha256": hash_token(token),
                    "created_at": now,
                }
            )
            issued.append({"uuid": device_uuid, "name": name, "token": token})
        return rows, issued

    def _registered_name(self, names: Sequence[str]) -> str | None:
        """The first of ``names`` that is registered already (after a refused insert)."""
        with self.read() as conn:
            for start in range(0, len(names), 5000):
                chunk = list(names[start : start + 5000])
                found = conn.execute(
                    select(db.devices.c.name).where(db.devices.c.name.in_(chunk))
                ).scalars()
                existing = sorted(found)
                if existing:
                    return existing[0]
        return None

    def register_devices(self, actor: str, specs: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
        """Register devices (one or a CSV's worth) in one transaction; all or nothing.

        Returns ``[{"uuid", "name", "token"}]``: device tokens exist only in this answer.
        """
        if not specs:
            raise InvalidInputError("no devices given")
        subject = specs[0].get("name", "?") if len(specs) == 1 else f"{len(specs)} devices"
        kind = "device-registered" if len(specs) == 1 else "devices-imported"
        try:
            with self.change(actor, kind, str(subject)) as ch:
                rows, issued = self._device_rows(ch.conn, specs)
                try:
                    ch.conn.execute(db.devices.insert(), rows)
                except IntegrityError:
                    # The unique indexes are the check: a query for existing names before
                    # the insert cost minutes on PostgreSQL right after a large import
                    # (a 5,000-name IN list planned on stale statistics). Named below.
                    raise _DuplicateDevice() from None
                group_ids = {r["group_id"] for r in rows if r["group_id"] is not None}
                self._join_full_group_rollouts(ch.conn, group_ids)
                ch.detail = {"count": len(rows)}
                if len(rows) == 1:
                    ch.detail.update(uuid=rows[0]["uuid"], group_id=rows[0]["group_id"])
        except _DuplicateDevice:
            name = self._registered_name([str(spec.get("name")) for spec in specs])
            if name is None:
                raise ConflictError("a device name or uuid is registered already") from None
            raise ConflictError(f"device {name} is registered already") from None
        return issued

    def _join_full_group_rollouts(self, conn: Connection, group_ids: set[int]) -> None:
        """Devices now in a group that a still-active wave was fully rolled out to join it."""
        if not group_ids:
            return
        full = conn.execute(
            select(db.rollouts.c.id, db.rollouts.c.wave_id, db.rollouts.c.group_id, db.waves.c.tag)
            .join(db.waves, db.waves.c.id == db.rollouts.c.wave_id)
            .where(
                db.rollouts.c.full_group.is_(True),
                db.rollouts.c.group_id.in_(group_ids),
                db.waves.c.status == "active",
            )
        ).all()
        for rollout in full:
            already = select(db.wave_devices.c.device_id).where(
                db.wave_devices.c.wave_id == rollout.wave_id,
                db.wave_devices.c.device_id == db.devices.c.id,
            )
            joiners = select(
                literal(rollout.wave_id, Integer),
                db.devices.c.id,
                literal(rollout.id, Integer),
            ).where(
                db.devices.c.group_id == rollout.group_id,
                db.devices.c.tag == rollout.tag,
                ~already.exists(),
            )
            conn.execute(
                db.wave_devices.insert().from_select(
                    ["wave_id", "device_id", "rollout_id"], joiners
                )
            )

    def list_devices(
        self, group: str | None = None, tag: str | None = None
    ) -> list[dict[str, Any]]:
        with self.read() as conn:
            query = self._device_query()
            if group is not None:
                query = query.where(db.devices.c.group_id == self.group_id(conn, group))
            if tag is not None:
                query = query.where(db.devices.c.tag == tag)
            return [self._device_dict(r) for r in conn.execute(query.order_by(db.devices.c.id))]

    @staticmethod
    def _device_query() -> Any:
        return select(
            db.devices.c.uuid,
            db.devices.c.name,
            db.devices.c.hardware_id,
            db.devices.c.tag,
            db.device_groups.c.name.label("group"),
            db.devices.c.current_target,
            db.devices.c.last_seen,
            db.devices.c.created_at,
        ).select_from(
            db.devices.outerjoin(db.device_groups, db.device_groups.c.id == db.devices.c.group_id)
        )

    @staticmethod
    def _device_dict(row: Any) -> dict[str, Any]:
        return {
            "uuid": row.uuid,
            "name": row.name,
            "hardware_id": row.hardware_id,
            "tag": row.tag,
            "group": row.group,
            "current_target": row.current_target,
            "last_seen": row.last_seen,
        }

    def show_device(self, device_uuid: str) -> dict[str, Any]:
        with self.read() as conn:
            row = conn.execute(self._device_query().where(db.devices.c.uuid == device_uuid)).first()
            if row is None:
                raise NotFoundError(f"no device with uuid {device_uuid}")
            result = self._device_dict(row)
            result["created_at"] = row.created_at
            device_id = conn.execute(
                select(db.devices.c.id).where(db.devices.c.uuid == device_uuid)
            ).scalar()
            result["waves"] = list(
                conn.execute(
                    select(db.waves.c.name)
                    .join(db.wave_devices, db.wave_devices.c.wave_id == db.waves.c.id)
                    .where(db.wave_devices.c.device_id == device_id)
                    .order_by(db.waves.c.id)
                ).scalars()
            )
            return result

    def move_device(self, actor: str, device_uuid: str, group: str) -> None:
        """Move a device to another group; it stays in every active wave it is in."""
        with self.change(actor, "device-moved", device_uuid) as ch:
            row = ch.conn.execute(
                select(db.devices.c.id).where(db.devices.c.uuid == device_uuid)
            ).first()
            if row is None:
                raise NotFoundError(f"no device with uuid {device_uuid}")
            gid = self.group_id(ch.conn, group)
            ch.conn.execute(
                db.devices.update().where(db.devices.c.id == row.id).values(group_id=gid)
            )
            if gid is not None:
                self._join_full_group_rollouts(ch.conn, {gid})
            ch.detail = {"group": group}

    def device_ids_by_uuid(self, conn: Connection, uuids: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for start in range(0, len(uuids), 5000):
            chunk = list(uuids[start : start + 5000])
            for r in conn.execute(
                select(
                    db.devices.c.uuid, db.devices.c.id, db.devices.c.tag, db.devices.c.group_id
                ).where(db.devices.c.uuid.in_(chunk))
            ):
                found[r.uuid] = r
        return found
