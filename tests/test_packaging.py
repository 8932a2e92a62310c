"""The air gap in packaging: what [offline] installs, and who imports whom."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN_OFFLINE = {
    "fastapi",
    "uvicorn",
    "sqlalchemy",
    "httpx",
    "starlette",
    "alembic",
    "psycopg",
    "psycopg-binary",
    "granian",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _closure(extras: set[str]) -> set[str]:
    """Names of every distribution `pip install wavesign[extras]` would pull, transitively."""
    seen: set[str] = set()
    todo: list[tuple[str, set[str]]] = [("wavesign", extras)]
    while todo:
        name, wanted = todo.pop()
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in (wanted or {""})]
            if req.marker and not any(req.marker.evaluate(env) for env in envs):
                continue
            dep = _norm(req.name)
            if dep not in seen:
                seen.add(dep)
                todo.append((dep, set(req.extras)))
    return seen


def test_offline_extra_pulls_no_server_database_or_http_package() -> None:
    closure = _closure({"offline"})
    assert "tuf" in closure and "python-gnupg" in closure
    assert not closure & FORBIDDEN_OFFLINE, closure & FORBIDDEN_OFFLINE


def test_online_extra_does_pull_the_server() -> None:
    assert {"fastapi", "sqlalchemy", "httpx"} <= _closure({"online"})


def _imports(folder: str) -> set[str]:
    names: set[str] = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                prefix = "." * node.level
                names.add(prefix + node.module)
    return names


def test_offline_never_imports_online() -> None:
    bad = {n for n in _imports("offline") if "online" in n.split(".")}
    assert not bad


def test_online_never_imports_offline() -> None:
    bad = {n for n in _imports("online") if "offline" in n.split(".")}
    assert not bad


def test_shared_imports_neither_half() -> None:
    bad = {n for n in _imports("shared") if {"online", "offline"} & set(n.split("."))}
    assert not bad


def test_console_scripts_show_help() -> None:
    for script in ("wavesign", "wavesign-offline", "wavesign-audit"):
        exe = Path(sys.executable).with_name(script)
        result = subprocess.run([exe, "--help"], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout
