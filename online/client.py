"""A thin client of the operator API (``/api/v1``), used by the ``wavesign`` CLI.

Every failure becomes a :class:`ClientError` carrying the server's one-line ``detail``,
so the CLI prints ``error: <detail>`` and exits 1.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from wavesign.shared.errors import WavesignError

__all__ = ["DEFAULT_URL", "ApiClient", "ClientError"]

DEFAULT_URL = "http://127.0.0.1:8700"
URL_ENV = "WAVESIGN_URL"
TOKEN_ENV = "WAVESIGN_TOKEN"


class ClientError(WavesignError):
    """The broker refused the request, or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ApiClient:
    """Calls the broker's API with a bearer token; returns decoded JSON."""

    def __init__(
        self, url: str | None = None, token: str | None = None, timeout: float = 600.0
    ) -> None:
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        token = token or os.environ.get(TOKEN_ENV)
        if not token:
            raise ClientError(f"no API token: set {TOKEN_ENV} (or pass --token)")
        self._http = httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        raw: bool = False,
    ) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, json=json, params=clean, content=content)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the broker at {self.url}: {exc}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = None
            if not isinstance(detail, str):
                detail = f"HTTP {response.status_code} from {method} {path}"
            raise ClientError(detail, response.status_code)
        if raw:
            return response.content
        try:
            return response.json()
        except ValueError:
            raise ClientError(f"the broker answered {method} {path} with non-JSON") from None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body if body is not None else {})

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
