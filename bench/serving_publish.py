"""Benchmark: how long a server process takes to publish a change to a big fleet.

After any change (a rollout, a cancel, a device registered) each server process reloads
the serving state and republishes every view (``online/serving.py``): it reads every
device's token hash, tag and group, selects the views, signs them and builds its token
table, then switches. This measures the phases for one process over a fleet of N
devices (the fleet of ``bench/fleet_status.py``: groups canary 5 %, us-east-1 45 %,
eu 50 %, a canceled wave w42 on canary and an active wave w50 on us-east-1).

**Anchor:** ``SELECT uuid, token_sha256, tag, group_id FROM devices``, fetched: the
floor of any full reload.

Usage::

    .venv/bin/python bench/serving_publish.py [--devices 1000000] [--postgres]

Not a test: it prints its figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from fleet_status import prepared  # noqa: E402
from sqlalchemy import text  # noqa: E402
from wavesign.online.device_api import DeviceDirectory  # noqa: E402
from wavesign.online.serving import Serving, ServingConfig, assign_views, load_state  # noqa: E402
from wavesign.online.store_waves import WaveStore  # noqa: E402

from tests.pg_harness import PgCluster  # noqa: E402


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = action()
    return time.perf_counter() - start, result


def measure(store: WaveStore, label: str, devices: int) -> None:
    serving = Serving(store.engine, store.keys, DeviceDirectory(), ServingConfig())
    figures: dict[str, float] = {}

    def anchor() -> Any:
        with store.read() as conn:
            return conn.execute(text("SELECT uuid, token_sha256, tag, group_id FROM devices")).all()

    figures["anchor: read the device columns"], _ = timed(anchor)

    def load() -> Any:
        with serving._read() as conn, conn.begin():
            return load_state(conn)

    figures["load_state"], state = timed(load)
    figures["assign_views"], _ = timed(lambda: assign_views(state.devices, state.view_state))
    figures["first publication (whole cycle)"], _ = timed(lambda: serving.refresh(force=True))
    store.create_group("bench", "after")  # any change: the marker moves
    figures["a change (whole cycle)"], _ = timed(serving.refresh)
    anchor_seconds = figures["anchor: read the device columns"]
    print(f"serving publication, {label}, {devices:,} devices")
    for name, seconds in figures.items():
        print(f"  {name:<34} {seconds:7.2f} s   ({seconds / anchor_seconds:5.1f}x anchor)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wavesign-bench-") as tmp:
        store = prepared(Path(tmp) / "sqlite", None, args.devices)
        measure(store, "SQLite", args.devices)
        store.close()
        if args.postgres:
            cluster = PgCluster()
            cluster.start()
            try:
                store = prepared(Path(tmp) / "pg", cluster.new_database(), args.devices)
                measure(store, "PostgreSQL", args.devices)
                store.close()
            finally:
                cluster.stop()


if __name__ == "__main__":
    main()
