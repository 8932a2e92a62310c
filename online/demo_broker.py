"""The demo's embedded broker: the real broker app under uvicorn, in a thread.

It is the app ``wavesign server run`` serves (:func:`wavesign.online.app.build_app`),
on a free local port, with short serving intervals so that devices see each change
within a fraction of a second. :meth:`EmbeddedBroker.wait_published` waits until the
device views reflect the newest change, so that a poll right after a command sees it.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn

from .app import BrokerApp, build_app
from .demo_actors import DemoError
from .serving import ServingConfig

__all__ = ["EmbeddedBroker"]

_START_TIMEOUT = 30.0


class EmbeddedBroker:
    """``with EmbeddedBroker(data) as broker:`` serves ``broker.url`` until the block ends."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.url = ""
        self._app: BrokerApp | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> EmbeddedBroker:
        self._app = build_app(self.data_dir, ServingConfig(poll_interval=0.05, flush_interval=0.2))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(self._app, log_level="warning", access_log=False, lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="demo-broker", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive():
                raise DemoError("the embedded broker failed to start (see the log above)")
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise DemoError(f"the embedded broker did not start within {_START_TIMEOUT:.0f} s")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self._app is not None:
            self._app.api.state.store.close()

    def wait_published(self, timeout: float = 20.0) -> None:
        """Return once the device views serve the newest change in the database."""
        assert self._app is not None
        serving = self._app.serving
        wanted, _record = serving.current_marker()
        deadline = time.monotonic() + timeout
        while (serving.served_marker or 0) < wanted:
            if time.monotonic() > deadline:
                raise DemoError(f"the device views were not republished within {timeout:.0f} s")
            time.sleep(0.02)

    def settle(self) -> None:
        """Give the serving loop time to flush the devices' last-seen times."""
        time.sleep(0.3)
