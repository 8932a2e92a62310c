"""Signing bundles: what crosses the air gap, in both directions.

A :class:`SigningRequest` goes from the broker to the appliance; a
:class:`SigningResponse` comes back. Both are canonical JSON documents with a format
tag and a version, parsed strictly (see :mod:`wavesign.shared.strictjson`): an unknown
version, a missing or extra field, a wrong type, a duplicate key, a float, or a
payload whose content does not hash to its ``sha256`` is refused with an error that
names the field. The byte-level specification is ``docs/formats/bundles.md``.

The *request digest* is the sha256 of the canonical request with every payload in
full form and without the operator's signature. It is the same whether the request
travelled with deltas or in full, so the officer can compare it with the operator's
screen, and the operator's GnuPG signature covers exactly those bytes.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

from tuf.api.metadata import Root, Targets

from .canonical import canonical_bytes, digest, digest_bytes
from .delta import Delta, make_delta
from .errors import WavesignError
from .strictjson import HEX64, FieldReader, JSONInputError, loads_strict, read_list

__all__ = [
    "MAX_BUNDLE_BYTES",
    "BundleError",
    "Context",
    "Payload",
    "Purpose",
    "SignatureEntry",
    "SigningRequest",
    "SigningResponse",
    "parse_bundle",
]

REQUEST_FORMAT = "wavesign-signing-request"
RESPONSE_FORMAT = "wavesign-signing-response"
FORMAT_VERSION = 1
#: No bundle is larger: a 5,000-target full request is about 3 MiB.
MAX_BUNDLE_BYTES = 16 * 1024 * 1024

PURPOSE_KINDS = ("wave", "root", "renew")
PAYLOAD_NAMES = ("wave", "revert", "root", "renew")
ROLES = ("targets", "root")
#: Which payloads each purpose carries, in order.
PAYLOADS_FOR_PURPOSE = {"wave": ("wave", "revert"), "renew": ("renew",), "root": ("root",)}

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


class BundleError(JSONInputError):
    """A signing request or response is malformed; the message names the field."""


F = TypeVar("F", bound=Callable[..., Any])


def _bundle_errors(parse: F) -> F:
    """Report every parsing failure inside a bundle as a :class:`BundleError`."""

    @functools.wraps(parse)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return parse(*args, **kwargs)
        except BundleError:
            raise
        except WavesignError as exc:
            raise BundleError(str(exc)) from None

    return cast(F, wrapper)


@dataclass(frozen=True)
class Purpose:
    """Why a request exists: a wave, a root ceremony or rotation, or a renewal."""

    kind: str
    wave: str | None = None
    tag: str | None = None
    ci_version: int | None = None
    root_version: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind}
        for name in ("wave", "tag", "ci_version", "root_version"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_dict(cls, data: Any, path: str = "purpose") -> Purpose:
        reader = FieldReader(data, path)
        kind = reader.choice("kind", PURPOSE_KINDS)
        purpose = cls(
            kind=kind,
            wave=reader.string("wave", optional=True, pattern=_NAME),
            tag=reader.string("tag", optional=True, pattern=_NAME),
            ci_version=reader.integer("ci_version", optional=True, minimum=0),
            root_version=reader.integer("root_version", optional=True, minimum=1),
        )
        reader.done()
        required = {"wave": ("wave", "tag", "ci_version"), "renew": ("tag",), "root": ()}
        for name in required[kind]:
            if getattr(purpose, name) is None:
                raise BundleError(f"{path}.{name}: missing (required for a {kind} request)")
        return purpose

    def confirmation_text(self, root_version: int | None = None) -> str:
        """What the officer must type to sign a request of this purpose."""
        if self.kind == "wave":
            return str(self.wave)
        if self.kind == "renew":
            return f"renew-{self.tag}"
        return f"root-v{root_version or self.root_version}"

    def describe(self) -> str:
        if self.kind == "wave":
            return f"wave {self.wave} (tag {self.tag}, CI version {self.ci_version})"
        if self.kind == "renew":
            return f"renewal of production targets for tag {self.tag}"
        return f"root v{self.root_version} ceremony"


def _check_signed(role: str, signed: dict[str, Any], path: str) -> None:
    """The payload must be valid TUF metadata of its role (a root proposal may be partial)."""
    if signed.get("_type") != role:
        raise BundleError(f"{path}._type: expected {role!r}, got {signed.get('_type')!r}")
    if role == "targets":
        try:
            Targets.from_dict(copy.deepcopy(signed))
        except Exception as exc:  # python-tuf raises a variety of types for bad metadata
            raise BundleError(f"{path}: not valid TUF targets metadata ({exc})") from None
    elif role == "root" and signed.get("keys") and signed.get("roles"):
        try:
            Root.from_dict(copy.deepcopy(signed))
        except Exception as exc:
            raise BundleError(f"{path}: not valid TUF root metadata ({exc})") from None


@dataclass(frozen=True)
class Payload:
    """One unsigned ``signed`` object to sign, in full or as a delta on the wire."""

    name: str
    role: str
    sha256: str
    keyids: tuple[str, ...]
    signed: dict[str, Any] | None = None
    delta: Delta | None = None

    @classmethod
    def create(cls, name: str, role: str, signed: dict[str, Any], keyids: Iterable[str]) -> Payload:
        """A full payload; its sha256 is computed here, the one place it is made."""
        payload = cls(name, role, digest(signed), tuple(keyids), signed=signed)
        _check_signed(role, signed, f"payload {name}")
        return payload

    @property
    def resolved(self) -> bool:
        return self.signed is not None

    def full(self) -> dict[str, Any]:
        """The full ``signed`` object; a delta must have been resolved first."""
        if self.signed is None:
            raise BundleError(f"payload {self.name!r} is still a delta: resolve it first")
        return self.signed

    def with_signed(self, signed: dict[str, Any]) -> Payload:
        if digest(signed) != self.sha256:
            raise BundleError(f"payload {self.name!r}: content does not match its sha256")
        _check_signed(self.role, signed, f"payload {self.name}")
        return replace(self, signed=signed, delta=None)

    def as_delta_against(self, base: dict[str, Any]) -> Payload:
        """This payload as a delta against ``base``, or unchanged if no delta fits."""
        delta = make_delta(base, self.full())
        return self if delta is None else replace(self, signed=None, delta=delta)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "role": self.role,
            "sha256": self.sha256,
            "keyids": list(self.keyids),
        }
        if self.signed is not None:
            data["signed"] = self.signed
        else:
            assert self.delta is not None
            data["delta"] = self.delta.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any, path: str) -> Payload:
        reader = FieldReader(data, path)
        name = reader.choice("name", PAYLOAD_NAMES)
        role = reader.choice("role", ROLES)
        sha256 = reader.string("sha256", pattern=HEX64)
        keyids = reader.sequence("keyids")
        signed = reader.mapping("signed", optional=True)
        delta_data = reader.mapping("delta", optional=True)
        reader.done()
        for index, keyid in enumerate(keyids):
            if not isinstance(keyid, str) or not HEX64.fullmatch(keyid):
                raise BundleError(f"{path}.keyids[{index}]: expected a 64-hex key id")
        if len(set(keyids)) != len(keyids):
            raise BundleError(f"{path}.keyids: a key id is listed twice")
        if (signed is None) == (delta_data is None):
            raise BundleError(f"{path}: needs exactly one of 'signed' and 'delta'")
        if signed is not None:
            if digest(signed) != sha256:
                raise BundleError(f"{path}.sha256: does not match the canonical 'signed' content")
            _check_signed(role, signed, f"{path}.signed")
            return cls(name, role, sha256, tuple(keyids), signed=signed)
        if role != "targets":
            raise BundleError(f"{path}.delta: only targets payloads can be deltas")
        try:
            delta = Delta.from_dict(delta_data, f"{path}.delta")
        except WavesignError as exc:
            raise BundleError(str(exc)) from None
        return cls(name, role, sha256, tuple(keyids), delta=delta)


@dataclass(frozen=True)
class Context:
    """What the request is relative to: the production targets and root it replaces."""

    root_version: int
    production_version: int | None = None
    production_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"root_version": self.root_version}
        if self.production_version is not None:
            data["production_version"] = self.production_version
            data["production_sha256"] = self.production_sha256
        return data

    @classmethod
    def from_dict(cls, data: Any, path: str = "context") -> Context:
        reader = FieldReader(data, path)
        context = cls(
            root_version=reader.integer("root_version", minimum=0),
            production_version=reader.integer("production_version", optional=True, minimum=1),
            production_sha256=reader.string("production_sha256", optional=True, pattern=HEX64),
        )
        reader.done()
        if (context.production_version is None) != (context.production_sha256 is None):
            raise BundleError(f"{path}: production_version and production_sha256 go together")
        return context


@dataclass(frozen=True)
class SigningRequest:
    """A request for offline signatures over one or more payloads."""

    id: str
    factory: str
    created: str
    purpose: Purpose
    payloads: tuple[Payload, ...]
    context: Context
    operator_signature: str | None = None

    def payload(self, name: str) -> Payload:
        for payload in self.payloads:
            if payload.name == name:
                return payload
        raise BundleError(f"request {self.id} has no {name!r} payload")

    def with_payloads(self, payloads: Iterable[Payload]) -> SigningRequest:
        return replace(self, payloads=tuple(payloads))

    def with_operator_signature(self, signature: str | None) -> SigningRequest:
        return replace(self, operator_signature=signature)

    def unsigned_dict(self) -> dict[str, Any]:
        return {
            "format": REQUEST_FORMAT,
            "version": FORMAT_VERSION,
            "id": self.id,
            "factory": self.factory,
            "created": self.created,
            "purpose": self.purpose.to_dict(),
            "payloads": [payload.to_dict() for payload in self.payloads],
            "context": self.context.to_dict(),
        }

    def to_dict(self) -> dict[str, Any]:
        data = self.unsigned_dict()
        if self.operator_signature is not None:
            data["operator_signature"] = self.operator_signature
        return data

    def to_bytes(self) -> bytes:
        return canonical_bytes(self.to_dict())

    def signing_bytes(self) -> bytes:
        """What the operator's signature covers: the full-form request without it."""
        for payload in self.payloads:
            payload.full()  # a delta request must be resolved before it can be checked
        return canonical_bytes(self.unsigned_dict())

    def digest(self) -> str:
        """The request digest: sha256 of :meth:`signing_bytes`."""
        return digest_bytes(self.signing_bytes())

    @classmethod
    @_bundle_errors
    def from_dict(cls, data: Any) -> SigningRequest:
        reader = FieldReader(data, "request")
        reader.format_header(REQUEST_FORMAT, FORMAT_VERSION, "wavesign signing request")
        request_id = reader.string("id", pattern=_ID)
        factory = reader.string("factory", pattern=_NAME)
        created = reader.string("created", pattern=_TIME)
        purpose = Purpose.from_dict(reader.mapping("purpose"), "request.purpose")
        payloads = read_list(reader.sequence("payloads"), "request.payloads", Payload.from_dict)
        context = Context.from_dict(reader.mapping("context"), "request.context")
        signature = reader.string("operator_signature", optional=True)
        reader.done()
        names = tuple(payload.name for payload in payloads)
        if names != PAYLOADS_FOR_PURPOSE[purpose.kind]:
            raise BundleError(
                f"request.payloads: a {purpose.kind} request carries "
                f"{', '.join(PAYLOADS_FOR_PURPOSE[purpose.kind])}, not {', '.join(names) or 'none'}"
            )
        return cls(request_id, factory, created, purpose, tuple(payloads), context, signature)

    @classmethod
    @_bundle_errors
    def from_bytes(cls, data: bytes) -> SigningRequest:
        return cls.from_dict(loads_strict(data, what="signing request", max_size=MAX_BUNDLE_BYTES))


@dataclass(frozen=True)
class SignatureEntry:
    """One signature over one payload of the request."""

    payload: str
    sha256: str
    keyid: str
    sig: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "payload": self.payload,
            "sha256": self.sha256,
            "keyid": self.keyid,
            "sig": self.sig,
        }

    @classmethod
    def from_dict(cls, data: Any, path: str) -> SignatureEntry:
        reader = FieldReader(data, path)
        entry = cls(
            payload=reader.choice("payload", PAYLOAD_NAMES),
            sha256=reader.string("sha256", pattern=HEX64),
            keyid=reader.string("keyid", pattern=HEX64),
            sig=reader.string("sig", pattern=re.compile(r"[0-9a-f]{2,2048}")),
        )
        reader.done()
        return entry


@dataclass(frozen=True)
class SigningResponse:
    """The appliance's answer: signatures, and for ceremonies the new root and keys."""

    request_sha256: str
    signatures: tuple[SignatureEntry, ...]
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    root: dict[str, Any] | None = None
    attestation: str | None = None
    journal_head: str | None = None

    def unsigned_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": RESPONSE_FORMAT,
            "version": FORMAT_VERSION,
            "request_sha256": self.request_sha256,
            "signatures": [entry.to_dict() for entry in self.signatures],
        }
        if self.keys:
            data["keys"] = self.keys
        if self.root is not None:
            data["root"] = self.root
        if self.journal_head is not None:
            data["journal_head"] = self.journal_head
        return data

    def to_dict(self) -> dict[str, Any]:
        data = self.unsigned_dict()
        if self.attestation is not None:
            data["attestation"] = self.attestation
        return data

    def to_bytes(self) -> bytes:
        return canonical_bytes(self.to_dict())

    def signing_bytes(self) -> bytes:
        """What the officer's attestation covers: the response without it."""
        return canonical_bytes(self.unsigned_dict())

    def digest(self) -> str:
        return digest_bytes(self.signing_bytes())

    def with_attestation(self, attestation: str | None) -> SigningResponse:
        return replace(self, attestation=attestation)

    @classmethod
    @_bundle_errors
    def from_dict(cls, data: Any) -> SigningResponse:
        reader = FieldReader(data, "response")
        reader.format_header(RESPONSE_FORMAT, FORMAT_VERSION, "wavesign signing response")
        request_sha256 = reader.string("request_sha256", pattern=HEX64)
        signatures = read_list(
            reader.sequence("signatures"), "response.signatures", SignatureEntry.from_dict
        )
        keys = reader.mapping("keys", optional=True) or {}
        root = reader.mapping("root", optional=True)
        journal_head = reader.string("journal_head", optional=True, pattern=HEX64)
        attestation = reader.string("attestation", optional=True)
        reader.done()
        seen = set()
        for index, entry in enumerate(signatures):
            if (entry.payload, entry.keyid) in seen:
                raise BundleError(f"response.signatures[{index}]: a second signature by that key")
            seen.add((entry.payload, entry.keyid))
        for keyid, key in keys.items():
            if not HEX64.fullmatch(keyid) or not isinstance(key, dict):
                raise BundleError(f"response.keys.{keyid[:16]}: expected a key id and a key")
        return cls(request_sha256, tuple(signatures), keys, root, attestation, journal_head)

    @classmethod
    @_bundle_errors
    def from_bytes(cls, data: bytes) -> SigningResponse:
        return cls.from_dict(loads_strict(data, what="signing response", max_size=MAX_BUNDLE_BYTES))


@_bundle_errors
def parse_bundle(data: bytes) -> SigningRequest | SigningResponse:
    """Parse either kind of bundle, telling them apart by their format tag."""
    document = loads_strict(data, what="bundle", max_size=MAX_BUNDLE_BYTES)
    fmt = document.get("format") if isinstance(document, dict) else None
    if fmt == REQUEST_FORMAT:
        return SigningRequest.from_dict(document)
    if fmt == RESPONSE_FORMAT:
        return SigningResponse.from_dict(document)
    raise BundleError(f"format: {fmt!r} is neither a signing request nor a signing response")
