"""`wavesign server run --server uvicorn` serves the operator API and the device routes.

granian, the default server, runs every other live-server test.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.online_support import live_server, run_cli


def test_uvicorn_serves_the_operator_api_and_the_device_repository(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert run_cli("server", "init", "--data", str(data), "--factory", "acme").returncode == 0
    admin = (data / "admin.token").read_text().strip()
    with live_server(data, engine="uvicorn") as url:
        tokens = run_cli("tokens", "list", "--json", url=url, token=admin)
        assert tokens.returncode == 0, tokens.stderr
        assert isinstance(json.loads(tokens.stdout), list)
        # The lean device app sits in front of the API: no device token, no metadata.
        answer = httpx.get(url + "/device/v1/repo/timestamp.json", timeout=5)
        assert answer.status_code == 401
        refused = run_cli("groups", "create", "x", url=url, token="not-a-token")
        assert refused.returncode == 1 and refused.stderr.startswith("error: ")
