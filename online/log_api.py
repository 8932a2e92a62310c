"""Operator API routes of the transparency log and the evidence export (``/api/v1``).

Reads (any API token: admin, operator, auditor):

- ``GET /api/v1/log/head``: the newest signed tree head ``{"signed": {"size",
  "root_hash", "timestamp"}, "signatures": [...]}`` (signed with the online timestamp
  key, the ``log`` key of the evidence format);
- ``GET /api/v1/log/heads``: every signed tree head, oldest first;
- ``GET /api/v1/log/inclusion?index=I[&tree_size=N]``: the event at leaf ``I`` and its
  RFC 9162 inclusion proof in the tree of ``N`` leaves (default: the newest head's size);
- ``GET /api/v1/log/consistency?old_size=M[&new_size=N]``: the RFC 9162 consistency
  proof that the tree of ``M`` leaves is a prefix of the tree of ``N``;
- ``GET /api/v1/evidence``: the whole evidence folder as ``{"files": {path: base64}}``
  (``wavesign evidence export`` writes it).

Admin only: ``POST /api/v1/gpg-keys`` ``{"role": "operator"|"officer", "armored"}``
registers a GnuPG public key the broker then checks signatures of that role with.

Proofs are only meaningful against a signed head: take (size, root) from
``/log/head`` (or a head you kept), never from the proof's answer.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from .api_auth import Admin, Reader
from .eventlog import log_events, log_tree, signed_heads
from .evidence_export import evidence_files
from .store import InvalidInputError, NotFoundError
from .store_waves import WaveStore

__all__ = ["log_router"]


log_router = APIRouter(prefix="/api/v1")


class GpgKeyAdd(BaseModel):
    role: str = Field(description="operator or officer")
    armored: str = Field(description="the ASCII-armoured GnuPG public key")


def _store(request: Request) -> WaveStore:
    store: WaveStore = request.app.state.store
    return store


def _newest_size(store: WaveStore) -> int:
    with store.read() as conn:
        heads = signed_heads(conn)
    if not heads:
        raise NotFoundError("the log has no signed tree head yet")
    return int(heads[-1]["signed"]["size"])


@log_router.get("/log/head")
def log_head(request: Request, who: Reader) -> dict[str, Any]:
    """The newest signed tree head of the transparency log."""
    with _store(request).read() as conn:
        heads = signed_heads(conn)
    if not heads:
        raise NotFoundError("the log has no signed tree head yet")
    return heads[-1]


@log_router.get("/log/heads")
def log_heads(request: Request, who: Reader) -> list[dict[str, Any]]:
    """Every signed tree head, oldest first."""
    with _store(request).read() as conn:
        return signed_heads(conn)


@log_router.get("/log/inclusion")
def log_inclusion(
    request: Request,
    who: Reader,
    index: Annotated[int, Query(description="leaf index, from 0")],
    tree_size: Annotated[int | None, Query(description="default: newest head")] = None,
) -> dict[str, Any]:
    """The event at ``index`` and its inclusion proof in the tree of ``tree_size`` leaves."""
    store = _store(request)
    size = _newest_size(store) if tree_size is None else tree_size
    if size < 1:
        raise InvalidInputError(f"tree_size {size}: a tree with an event has at least 1 leaf")
    if not 0 <= index < size:
        raise InvalidInputError(f"index {index} is outside a tree of {size} leaves (0..{size - 1})")
    with store.read() as conn:
        events = log_events(conn)
    if size > len(events):
        raise NotFoundError(f"the log has {len(events)} events, not {size}")
    tree = log_tree(events[:size])
    return {
        "index": index,
        "tree_size": size,
        "root_hash": tree.root().hex(),
        "event": events[index].to_dict(),
        "leaf_hash": events[index].leaf().hex(),
        "proof": [node.hex() for node in tree.inclusion_proof(index, size)],
    }


@log_router.get("/log/consistency")
def log_consistency(
    request: Request,
    who: Reader,
    old_size: Annotated[int, Query(description="size of the older tree")],
    new_size: Annotated[int | None, Query(description="default: newest head")] = None,
) -> dict[str, Any]:
    """The proof that the tree of ``old_size`` leaves is a prefix of ``new_size``."""
    store = _store(request)
    size = _newest_size(store) if new_size is None else new_size
    if not 0 <= old_size <= size:
        raise InvalidInputError(
            f"old_size {old_size} and new_size {size}: need 0 <= old_size <= new_size"
        )
    with store.read() as conn:
        events = log_events(conn, size)
    if size > len(events):
        raise NotFoundError(f"the log has {len(events)} events, not {size}")
    tree = log_tree(events)
    return {
        "old_size": old_size,
        "new_size": size,
        "old_root_hash": tree.root(old_size).hex(),
        "new_root_hash": tree.root(size).hex(),
        "proof": [node.hex() for node in tree.consistency_proof(old_size, size)],
    }


@log_router.get("/evidence")
def evidence(request: Request, who: Reader) -> dict[str, Any]:
    """Every file of the evidence folder (``docs/formats/evidence.md``), base64."""
    files = evidence_files(_store(request))
    return {"files": {path: base64.b64encode(data).decode("ascii") for path, data in files.items()}}


@log_router.post("/gpg-keys", status_code=201)
def add_gpg_key(request: Request, body: GpgKeyAdd, who: Admin) -> dict[str, Any]:
    """Trust a GnuPG public key of an operator or a security officer (admin only)."""
    return _store(request).add_gpg_key(who.name, body.role, body.armored)


@log_router.get("/gpg-keys")
def list_gpg_keys(request: Request, who: Reader) -> list[dict[str, Any]]:
    """The registered GnuPG keys (fingerprint, role, when and by whom)."""
    return [
        {k: key[k] for k in ("fingerprint", "role", "created_at", "created_by")}
        for key in _store(request).gpg_keys()
    ]
