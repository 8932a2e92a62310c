"""Benchmark: `wavesign devices import` of 100,000 rows on SQLite (target: < 60 s).

What is timed, in one run on one machine:

1. **end to end**: `wavesign devices import fleet.csv --tokens-out FILE` (the CLI as a
   subprocess) against `wavesign server run` (a real server process): CSV parsing, one
   HTTP request, validation, token generation and hashing, one transaction, the tokens
   file written;
2. **store only**: ``Store.register_devices`` called directly (no HTTP);
3. **anchor**: plain ``sqlite3`` ``executemany`` of the same 100,000 rows into a table of
   the same shape with the same unique indexes, in one transaction, WAL mode: the floor
   that any importer on this database pays.

It prints the three times and the ratios to the anchor. Usage::

    .venv/bin/python bench/devices_import.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wavesign.online.datadir import init_data_dir  # noqa: E402
from wavesign.online.store import Store  # noqa: E402

from tests.online_support import WAVESIGN, live_server, run_cli  # noqa: E402

GROUPS = ("canary", "us-east-1", "eu-west-1", "ap-south-1")


def write_csv(path: Path, rows: int, prefix: str) -> None:
    lines = ["name,hardware_id,tag,group"]
    lines += [
        f"{prefix}-{i:07},intel-corei7-64,production,{GROUPS[i % len(GROUPS)]}" for i in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n")


def anchor(folder: Path, rows: int) -> float:
    conn = sqlite3.connect(folder / "anchor.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE devices (id INTEGER PRIMARY KEY, uuid TEXT UNIQUE NOT NULL, "
        "name TEXT UNIQUE NOT NULL, hardware_id TEXT NOT NULL, tag TEXT NOT NULL, "
        "group_id INTEGER, token_sha256 TEXT UNIQUE NOT NULL, current_target TEXT, "
        "last_seen TEXT, created_at TEXT NOT NULL)"
    )
    conn.execute("CREATE INDEX ix_g ON devices (group_id)")
    conn.execute("CREATE INDEX ix_t ON devices (tag)")
    start = time.perf_counter()
    data = [
        (
            str(uuid.uuid4()),
            f"a-{i:07}",
            "intel-corei7-64",
            "production",
            i % 4 + 1,
            hashlib.sha256(secrets.token_urlsafe(32).encode()).hexdigest(),
            "2026-01-01T00:00:00Z",
        )
        for i in range(rows)
    ]
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO devices (uuid, name, hardware_id, tag, group_id, token_sha256, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        data,
    )
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return elapsed


def store_only(folder: Path, rows: int) -> float:
    result = init_data_dir(str(folder / "store-data"), None, "bench")
    store = Store(result.db_url)
    for group in GROUPS:
        store.create_group("bench", group)
    specs = [
        {
            "name": f"s-{i:07}",
            "hardware_id": "intel-corei7-64",
            "tag": "production",
            "group": GROUPS[i % len(GROUPS)],
        }
        for i in range(rows)
    ]
    start = time.perf_counter()
    store.register_devices("bench", specs)
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed


def end_to_end(folder: Path, rows: int) -> float:
    data = folder / "e2e-data"
    init = subprocess.run(
        [WAVESIGN, "server", "init", "--data", str(data)], capture_output=True, check=True
    )
    del init
    token = (data / "admin.token").read_text().strip()
    csv_path = folder / "fleet.csv"
    write_csv(csv_path, rows, "e")
    with live_server(data) as url:
        for group in GROUPS:
            run_cli("groups", "create", group, url=url, token=token)
        start = time.perf_counter()
        result = run_cli(
            "devices", "import", str(csv_path), "--tokens-out", str(folder / "tokens.csv"),
            url=url, token=token,
        )  # fmt: skip
        elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"import failed: {result.stderr.strip()}")
    issued = len((folder / "tokens.csv").read_text().splitlines()) - 1
    if issued != rows:
        raise SystemExit(f"expected {rows} tokens, got {issued}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wavesign-bench-") as tmp:
        folder = Path(tmp)
        t_anchor = anchor(folder, args.rows)
        t_store = store_only(folder, args.rows)
        t_e2e = end_to_end(folder, args.rows)
    print(f"devices import, {args.rows} rows, SQLite (WAL)")
    print(f"  anchor  sqlite3 executemany       {t_anchor:7.2f} s")
    for label, seconds in (
        ("store   Store.register_devices", t_store),
        ("e2e     CLI -> HTTP -> server ", t_e2e),
    ):
        print(f"  {label}    {seconds:7.2f} s   ({seconds / t_anchor:5.1f}x anchor)")
    print(f"  target  < 60 s end to end: {'met' if t_e2e < 60 else 'NOT met'}")


if __name__ == "__main__":
    main()
