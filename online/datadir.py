"""The server's data folder: ``config.json``, the database, the online keys, the admin token.

Layout::

    DIR/config.json     {"db_url", "factory"} (0600: a PostgreSQL URL may hold a password)
    DIR/wavesign.db     the SQLite database (default)
    DIR/keys/*.key      online targets, snapshot and timestamp keys (0600)
    DIR/admin.token     the first admin token (0600)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wavesign.shared.errors import WavesignError
from wavesign.shared.fileio import atomic_write

from .onlinekeys import PASSPHRASE_ENV, create_online_keys
from .store import Store

__all__ = ["DataDir", "DataDirError", "InitResult", "init_data_dir", "redact_url"]

DATA_ENV = "WAVESIGN_DATA"
DEFAULT_DATA = "./wavesign-data"


class DataDirError(WavesignError):
    """The data folder is missing, not initialized, or initialized already."""


def redact_url(url: str) -> str:
    """A database URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


@dataclass(frozen=True)
class DataDir:
    path: Path

    @classmethod
    def resolve(cls, value: str | None) -> DataDir:
        return cls(Path(value or os.environ.get(DATA_ENV) or DEFAULT_DATA).absolute())

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def config(self) -> dict[str, Any]:
        try:
            config = json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise DataDirError(
                f"{self.path} is not a wavesign data folder: run `wavesign server init` first"
            ) from None
        except ValueError:
            raise DataDirError(f"{self.config_path} is not valid JSON") from None
        if not isinstance(config, dict) or not isinstance(config.get("db_url"), str):
            raise DataDirError(f"{self.config_path} has no db_url")
        return config

    @property
    def db_url(self) -> str:
        return str(self.config()["db_url"])

    def open_store(self) -> Store:
        return Store(self.db_url)


@dataclass(frozen=True)
class InitResult:
    data: DataDir
    db_url: str
    admin_token: str
    revision: str


def init_data_dir(path: str | None, db_url: str | None, factory: str) -> InitResult:
    """Create the folder, the database (migrated), the online keys and the admin token.

    All or nothing: if any step fails, what this call created is removed again.
    """
    data = DataDir.resolve(path)
    if data.config_path.exists():
        raise DataDirError(f"{data.path} is initialized already")
    created_folder = not data.path.exists()
    if not created_folder and any(data.path.iterdir()):
        raise DataDirError(f"{data.path} is not empty: choose a new or empty folder")
    url = db_url or f"sqlite:///{data.path / 'wavesign.db'}"
    if not (url.startswith("sqlite") or url.startswith("postgresql")):
        raise DataDirError(f"unsupported database URL {redact_url(url)}: use sqlite or postgresql")
    data.path.mkdir(mode=0o700, parents=True, exist_ok=True)
    store: Store | None = None
    try:
        store = Store(url)
        from sqlalchemy import inspect

        if url.startswith("postgresql") and inspect(store.engine).get_table_names():
            raise DataDirError(f"database {redact_url(url)} is not empty")
        revision = store.migrate()
        create_online_keys(data.path, passphrase=os.environ.get(PASSPHRASE_ENV) or None)
        token = store.initialize(factory)
        atomic_write(data.path / "admin.token", token.encode() + b"\n", mode=0o600)
        config = {"db_url": url, "factory": factory}
        atomic_write(data.config_path, json.dumps(config, indent=1).encode() + b"\n", mode=0o600)
    except BaseException:
        if store is not None:
            store.close()
        if created_folder:
            shutil.rmtree(data.path, ignore_errors=True)
        else:
            for child in data.path.iterdir():
                with contextlib.suppress(OSError):
                    shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise
    store.close()
    return InitResult(data, url, token, revision)
