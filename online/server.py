"""The operator API: FastAPI under ``/api/v1``, OpenAPI at ``/api/v1/openapi.json``.

Every route authenticates a bearer API token (stored as its sha256). Roles:

- ``admin``: everything, including API tokens;
- ``operator``: everything but API tokens;
- ``auditor``: reads only (every ``GET``).

Device tokens are refused here with 403: devices have their own lean endpoints.
Errors are JSON ``{"detail": "<one line>"}`` with 400 (bad input), 401, 403, 404 or 409
(conflict or wrong state); the CLI prints the detail as ``error: ...``.

Run with ``wavesign server run`` (uvicorn), or ``uvicorn --factory
wavesign.online.app:app_from_env`` with ``WAVESIGN_DATA`` set.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from wavesign.shared.errors import WavesignError

from .api_auth import Admin, Reader, Writer
from .datadir import DataDir
from .log_api import log_router
from .onlinekeys import OnlineKeys
from .status_api import status_router
from .store import (
    AuthError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    StateError,
)
from .store_waves import WaveStore

__all__ = ["app_from_env", "create_app"]

STATUS_OF: list[tuple[type[WavesignError], int]] = [
    (AuthError, 401),
    (ForbiddenError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (StateError, 409),
]


def _status(exc: WavesignError) -> int:
    for kind, code in STATUS_OF:
        if isinstance(exc, kind):
            return code
    return 400


# -- request bodies -------------------------------------------------------------------
class TokenCreate(BaseModel):
    role: str = Field(description="admin, operator or auditor")
    name: str | None = None


class GroupCreate(BaseModel):
    name: str


class DeviceMove(BaseModel):
    group: str


class WaveInit(BaseModel):
    name: str
    version: int = Field(ge=0)
    tag: str
    expires_days: int | None = Field(default=None, ge=1, le=3650)
    expires_at: str | None = None
    prune: list[int] = Field(default_factory=list)
    source_tag: str | None = None
    dry_run: bool = False


class WaveRollout(BaseModel):
    group: str | None = None
    limit: str | None = Field(default=None, description="N or N%")
    uuids: list[str] | None = None
    dry_run: bool = False
    return_uuids: bool = False


class RootPropose(BaseModel):
    root_threshold: int = Field(default=1, ge=1, le=16)
    expires_days: int = Field(default=365, ge=1, le=3650)


class ProductionRenew(BaseModel):
    expires_days: int = Field(default=365, ge=1, le=3650)


def create_app(data_dir: str | os.PathLike[str]) -> FastAPI:
    """The API app over the data folder ``data_dir`` (config, database, online keys)."""
    data = DataDir.resolve(str(data_dir))
    store = WaveStore(data.db_url, keys=OnlineKeys(data.path))
    app = FastAPI(
        title="wavesign broker",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.store = store

    @app.exception_handler(WavesignError)
    async def _wavesign_error(_request: Request, exc: WavesignError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=_status(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return JSONResponse(
            {"detail": f"invalid request: {where}: {first.get('msg')}"}, status_code=400
        )

    api = APIRouter(prefix="/api/v1")

    @api.get("/whoami")
    def whoami(who: Reader) -> dict[str, Any]:
        return {"name": who.name, "role": who.role, "factory": store.factory}

    # -- tokens ----------------------------------------------------------------------
    @api.post("/tokens", status_code=201)
    def create_token(body: TokenCreate, who: Admin) -> dict[str, Any]:
        name, token = store.create_token(who.name, body.role, body.name)
        return {"name": name, "role": body.role, "token": token}

    @api.get("/tokens")
    def list_tokens(who: Admin) -> list[dict[str, Any]]:
        return store.list_tokens()

    @api.delete("/tokens/{name}")
    def revoke_token(name: str, who: Admin) -> dict[str, Any]:
        store.revoke_token(who.name, name)
        return {"name": name, "revoked": True}

    # -- CI targets -------------------------------------------------------------------
    @api.post("/targets", status_code=201)
    def add_targets(
        who: Writer, targets: Annotated[dict[str, Any], Body(embed=True)]
    ) -> dict[str, Any]:
        return store.add_targets(who.name, targets)

    @api.get("/targets")
    def list_targets(
        who: Reader,
        version: int | None = None,
        tag: str | None = None,
        production: str | None = None,
    ) -> dict[str, Any]:
        return store.list_targets(version, tag, production)

    # -- groups and devices -----------------------------------------------------------
    @api.post("/groups", status_code=201)
    def create_group(body: GroupCreate, who: Writer) -> dict[str, Any]:
        store.create_group(who.name, body.name)
        return {"name": body.name}

    @api.get("/groups")
    def list_groups(who: Reader) -> list[dict[str, Any]]:
        return store.list_groups()

    @api.post("/devices", status_code=201)
    def register_devices(
        who: Writer, devices: Annotated[list[dict[str, Any]], Body(embed=True)]
    ) -> list[dict[str, str]]:
        return store.register_devices(who.name, devices)

    @api.get("/devices")
    def list_devices(
        who: Reader, group: str | None = None, tag: str | None = None
    ) -> list[dict[str, Any]]:
        return store.list_devices(group, tag)

    @api.get("/devices/{device_uuid}")
    def show_device(device_uuid: str, who: Reader) -> dict[str, Any]:
        return store.show_device(device_uuid)

    @api.post("/devices/{device_uuid}/move")
    def move_device(device_uuid: str, body: DeviceMove, who: Writer) -> dict[str, Any]:
        store.move_device(who.name, device_uuid, body.group)
        return store.show_device(device_uuid)

    # -- waves ------------------------------------------------------------------------
    @api.post("/waves", status_code=201)
    def init_wave(body: WaveInit, who: Writer) -> dict[str, Any]:
        return store.init_wave(
            who.name,
            name=body.name,
            version=body.version,
            tag=body.tag,
            expires_days=body.expires_days,
            expires_at=body.expires_at,
            prune=body.prune,
            source_tag=body.source_tag,
            dry_run=body.dry_run,
        )

    @api.get("/waves")
    def list_waves(
        who: Reader,
        status: Annotated[str | None, Query()] = None,
        tag: str | None = None,
    ) -> list[dict[str, Any]]:
        return store.list_waves(status, tag)

    @api.get("/waves/{name}")
    def show_wave(name: str, who: Reader, show_targets: bool = False) -> dict[str, Any]:
        return store.show_wave(name, show_targets=show_targets)

    @api.post("/waves/{name}/rollout")
    def rollout_wave(name: str, body: WaveRollout, who: Writer) -> dict[str, Any]:
        return store.rollout(
            who.name,
            name,
            group=body.group,
            limit=body.limit,
            uuids=body.uuids,
            dry_run=body.dry_run,
            return_uuids=body.return_uuids,
        )

    @api.post("/waves/{name}/cancel")
    def cancel_wave(name: str, who: Writer) -> dict[str, Any]:
        return store.cancel_wave(who.name, name)

    @api.post("/waves/{name}/complete")
    def complete_wave(name: str, who: Writer) -> dict[str, Any]:
        return store.complete_wave(who.name, name)

    # -- roots and renewals ---------------------------------------------------------
    @api.post("/roots/propose", status_code=201)
    def propose_root(body: RootPropose, who: Writer) -> dict[str, Any]:
        """Start a root ceremony (v1) or rotation (vN+1): a signing request for the appliance."""
        return store.propose_root(
            who.name, root_threshold=body.root_threshold, expires_days=body.expires_days
        )

    @api.get("/roots/current")
    def current_root(who: Reader) -> dict[str, Any]:
        """The latest signed root metadata, as published to devices."""
        return store.show_root()

    @api.get("/roots/{version}")
    def root_version(version: int, who: Reader) -> dict[str, Any]:
        return store.show_root(version)

    @api.post("/roots", status_code=201)
    async def restore_root(request: Request, who: Admin) -> dict[str, Any]:
        """Admin only: restore a signed root made elsewhere (migration, disaster recovery).

        Roots are made by the ceremony (``POST /roots/propose``, then the appliance's
        response through ``POST /responses``). This stores an existing root (canonical
        JSON as the body) that follows the latest one as a root chain and names this
        broker's online keys.
        """
        body = await request.body()
        from starlette.concurrency import run_in_threadpool

        version = await run_in_threadpool(store.add_root, who.name, body)
        return {"version": version}

    @api.post("/production/{tag}/renew", status_code=201)
    def renew_production(tag: str, body: ProductionRenew, who: Writer) -> dict[str, Any]:
        """A signing request re-signing the tag's production targets with a new expiry."""
        return store.renew_production(who.name, tag, expires_days=body.expires_days)

    # -- signing requests -------------------------------------------------------------
    @api.get("/requests")
    def list_requests(who: Reader) -> list[dict[str, Any]]:
        return store.list_requests()

    @api.get("/requests/{request_id}")
    def show_request(request_id: str, who: Reader) -> dict[str, Any]:
        return store.show_request(request_id)

    @api.get("/requests/{request_id}/bundle")
    def request_bundle(request_id: str, who: Reader, full: bool = False) -> Response:
        """The request as canonical JSON bytes, for `requests export` (deltas unless full)."""
        return Response(store.request_bytes(request_id, full), media_type="application/json")

    @api.post("/requests/{request_id}/export")
    def export_request(request_id: str, who: Writer, full: bool = False) -> Response:
        """The request bundle for the appliance (deltas unless ``full``), logged as
        ``request-exported`` with the sha256 of the exact bytes handed out. Only a
        pending request can be exported."""
        data = store.export_request(who.name, request_id, full)
        return Response(data, media_type="application/json")

    @api.post("/requests/{request_id}/operator-signature")
    def sign_request(
        request_id: str, who: Writer, signature: Annotated[str, Body(embed=True)]
    ) -> dict[str, Any]:
        """Attach the operator's detached GnuPG signature (made client-side) to a request."""
        return store.attach_operator_signature(who.name, request_id, signature)

    @api.post("/responses")
    async def import_response(request: Request, who: Writer) -> dict[str, Any]:
        """Import a signing response (its canonical JSON bytes as the body)."""
        body = await request.body()
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(store.import_response, who.name, body)

    app.include_router(api)
    app.include_router(status_router)
    app.include_router(log_router)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory: the app over ``$WAVESIGN_DATA``."""
    return create_app(DataDir.resolve(None).path)
