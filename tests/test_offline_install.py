"""`pip install '.[offline]'` alone gives a working appliance and auditor.

This is a normal (non-editable) install into an empty virtualenv, so it also proves
that the online/ offline/ shared/ folder mapping works outside an editable install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_SIDE = {"fastapi", "uvicorn", "sqlalchemy", "httpx", "starlette", "alembic", "psycopg"}


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, env=env, timeout=600
    )


def test_offline_extra_alone_runs_the_appliance_and_the_auditor(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    pip = run(venv / "bin" / "pip", "install", "-q", f"{ROOT}[offline]")
    assert pip.returncode == 0, pip.stderr[-2000:]

    listed = run(venv / "bin" / "pip", "list", "--format", "json")
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "wavesign" in installed and "tuf" in installed
    assert not installed & SERVER_SIDE, installed & SERVER_SIDE

    for tool in ("wavesign-offline", "wavesign-audit"):
        result = run(venv / "bin" / tool, "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout

    env = dict(
        os.environ,
        WAVESIGN_OFFLINE_HOME=str(tmp_path / "home"),
        WAVESIGN_OFFLINE_PASSPHRASE="correct horse battery",
        GNUPGHOME=str(tmp_path / "gnupg"),
    )
    offline = venv / "bin" / "wavesign-offline"
    assert run(offline, "init", env=env).returncode == 0
    generated = run(offline, "keys", "generate", "--role", "targets", "--json", env=env)
    assert generated.returncode == 0, generated.stderr
    key = json.loads(generated.stdout)
    listed_keys = run(offline, "keys", "list", "--json", env=env)
    assert key["keyid"] in listed_keys.stdout
    assert "correct horse battery" not in generated.stdout + listed_keys.stdout

    # The broker's modules are in the distribution, but their server dependencies are not.
    server = run(venv / "bin" / "python", "-c", "import wavesign.online.server")
    assert server.returncode != 0 and "ModuleNotFoundError" in server.stderr
