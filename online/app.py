"""One ASGI app per server process: the device hot path in front of the operator API.

``build_app(data_dir)`` composes:

- the operator API (:func:`wavesign.online.server.create_app`, FastAPI under ``/api/v1``);
- the device routes (:class:`wavesign.online.device_api.DeviceApp`, ``/device/v1/...``),
  which hand every other path to the API;
- the serving tasks (:class:`wavesign.online.serving.Serving`), started and stopped by
  the ASGI lifespan: the first publication happens before the server accepts requests,
  then the change marker is polled every second, timestamps are re-signed before they
  expire, and ``last_seen`` is flushed every few seconds.

Run it with ``uvicorn --factory wavesign.online.app:app_from_env`` (``WAVESIGN_DATA``
names the data folder) or ``wavesign server run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI
from wavesign.shared.errors import WavesignError

from .datadir import DataDir
from .device_api import DeviceApp, DeviceDirectory
from .server import create_app
from .serving import Serving, ServingConfig, ServingError

__all__ = ["BrokerApp", "app_from_env", "build_app"]

log = logging.getLogger(__name__)

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[Mapping[str, Any]]]
Send = Callable[[Mapping[str, Any]], Awaitable[None]]


class BrokerApp:
    """The composed ASGI app; ``serving`` and ``api`` are exposed for tests and tools."""

    def __init__(self, api: FastAPI, serving: Serving, devices: DeviceApp) -> None:
        self.api = api
        self.serving = serving
        self.devices = devices
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self.devices(scope, receive, send)

    async def startup(self) -> None:
        # Publish before accepting requests: a device never meets an empty directory.
        try:
            await asyncio.to_thread(self.serving.start)
        except WavesignError as exc:
            # The operator API must stay up to fix what is wrong (the loop retries).
            log.error("publishing the device views failed: %s", exc)
        self._task = asyncio.create_task(self.serving.run(self.devices))

    async def shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:  # report to the server, which then exits
                    log.error("serving devices failed to start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def build_app(data_dir: str | os.PathLike[str], config: ServingConfig | None = None) -> BrokerApp:
    """The whole broker over the data folder ``data_dir`` (devices + operator API)."""
    api = create_app(data_dir)
    store = api.state.store
    directory = DeviceDirectory()
    serving = Serving(store.engine, store.keys, directory, config)
    devices = DeviceApp(directory, serving.store_events, fallback=api)
    app = BrokerApp(api, serving, devices)
    api.state.serving = serving
    return app


#: Seconds between two looks at the change marker (default 1; tests make it shorter).
POLL_ENV = "WAVESIGN_SERVING_POLL"


def app_from_env() -> BrokerApp:
    """uvicorn/granian factory: the broker over ``$WAVESIGN_DATA``."""
    config = ServingConfig()
    poll = os.environ.get(POLL_ENV)
    if poll:
        try:
            seconds = float(poll)
        except ValueError:
            raise ServingError(f"{POLL_ENV}={poll!r} is not a number of seconds") from None
        config = ServingConfig(poll_interval=seconds)
    return build_app(DataDir.resolve(None).path, config)
