"""The offline wheelhouse installs a working appliance and auditor with no network.

``scripts/build_offline_bundle.py`` (``make offline-bundle``) builds the wheels of
``wavesign[offline]``; the bundle's ``install.sh`` installs them into an empty
virtualenv with ``pip --no-index --require-hashes``. This is also a normal
(non-editable) install, so it proves that the online/ offline/ shared/ folder mapping
works outside an editable install, and that ``[offline]`` pulls no server package.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.evidence_builder import build_evidence

ROOT = Path(__file__).resolve().parents[1]
SERVER_SIDE = {"fastapi", "uvicorn", "sqlalchemy", "httpx", "starlette", "alembic", "psycopg"}


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, env=env, timeout=900
    )


def test_offline_bundle_installs_without_network_and_runs(
    tmp_path: Path, operator_gpg: Any, officer_gpg: Any
) -> None:
    bundle = tmp_path / "offline-bundle"
    built = run(sys.executable, ROOT / "scripts" / "build_offline_bundle.py", "--out", bundle)
    assert built.returncode == 0, built.stderr[-3000:]
    requirements = (bundle / "requirements.txt").read_text().splitlines()
    assert any(line.startswith("wavesign==") for line in requirements)
    assert all("--hash=sha256:" in line for line in requirements)

    venv = tmp_path / "venv"
    # No index at all: everything must come from the bundle's wheels.
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull)
    installed = run(bundle / "install.sh", venv, env=env)
    assert installed.returncode == 0, installed.stderr[-3000:]

    listed = run(venv / "bin" / "pip", "list", "--format", "json")
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "wavesign" in names and "tuf" in names
    assert not names & SERVER_SIDE, names & SERVER_SIDE

    for tool in ("wavesign-offline", "wavesign-audit"):
        result = run(venv / "bin" / tool, "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout

    officer_env = dict(
        os.environ,
        WAVESIGN_OFFLINE_HOME=str(tmp_path / "home"),
        WAVESIGN_OFFLINE_PASSPHRASE="correct horse battery",
        GNUPGHOME=str(tmp_path / "gnupg"),
    )
    offline = venv / "bin" / "wavesign-offline"
    assert run(offline, "init", env=officer_env).returncode == 0
    generated = run(offline, "keys", "generate", "--role", "targets", "--json", env=officer_env)
    assert generated.returncode == 0, generated.stderr
    key = json.loads(generated.stdout)
    listed_keys = run(offline, "keys", "list", "--json", env=officer_env)
    assert key["keyid"] in listed_keys.stdout
    assert "correct horse battery" not in generated.stdout + listed_keys.stdout

    # The broker's modules ship in the distribution, but their server packages do not.
    server = run(venv / "bin" / "python", "-c", "import wavesign.online.server")
    assert server.returncode != 0 and "ModuleNotFoundError" in server.stderr

    # Auditors use offline machines: the installed auditor verifies an evidence export
    # (built with real keys and GnuPG by tests/evidence_builder.py) and its journal.
    built = build_evidence(tmp_path / "audit", operator_gpg, officer_gpg)
    audited = run(
        venv / "bin" / "wavesign-audit", "verify", built.folder,
        "--offline-journal", built.journal, "--trusted-root", built.trusted_root, "--json",
    )  # fmt: skip
    assert audited.returncode == 0, audited.stdout + audited.stderr
    checks = json.loads(audited.stdout)
    assert len(checks) == 9 and all(check["ok"] for check in checks), checks
