"""Operator API routes for ``status`` and ``wave status`` (an ``APIRouter`` under ``/api/v1``).

Include it in the operator app with ``app.include_router(status_router)``. Both routes
are reads: any API token (admin, operator, auditor) may call them; device tokens are
refused by the store's ``authenticate``. Each answers ``{"report": {...}, "text": "..."}``:
the JSON report (``wavesign status --json``) and the fioctl-style text.

- ``GET /api/v1/status?offline_threshold=H``
- ``GET /api/v1/status/wave?name=W&offline_threshold=H`` (no name: the newest active
  wave, or the newest wave)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from .api_auth import Reader
from .status import DEFAULT_OFFLINE_THRESHOLD_HOURS
from .status_queries import StatusError, fleet_status, wave_status
from .store import NotFoundError

__all__ = ["status_router"]


Threshold = Annotated[
    float,
    Query(gt=0, le=24 * 365, description="Hours: a device seen within them is online."),
]

status_router = APIRouter(prefix="/api/v1")


@status_router.get("/status")
def get_status(
    request: Request, who: Reader, offline_threshold: Threshold = DEFAULT_OFFLINE_THRESHOLD_HOURS
) -> dict[str, Any]:
    """The fleet: devices per tag, on latest, on an orphan target, online."""
    with request.app.state.store.read() as conn:
        report = fleet_status(
            conn, now=datetime.now(UTC), offline_threshold_hours=offline_threshold
        )
    return {"report": report.to_dict(), "text": report.render()}


@status_router.get("/status/wave")
def get_wave_status(
    request: Request,
    who: Reader,
    name: str | None = None,
    offline_threshold: Threshold = DEFAULT_OFFLINE_THRESHOLD_HOURS,
) -> dict[str, Any]:
    """One wave's progress per device group."""
    with request.app.state.store.read() as conn:
        try:
            report = wave_status(
                conn, name, now=datetime.now(UTC), offline_threshold_hours=offline_threshold
            )
        except StatusError as exc:
            raise NotFoundError(str(exc)) from None
    return {"report": report.to_dict(), "text": report.render()}
