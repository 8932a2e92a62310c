"""Benchmark: `status` and `wave status` over 1,000,000 devices (target: < 1 s each).

For SQLite and for PostgreSQL (a throwaway cluster from ``tests/pg_harness.py``), in
one run on one machine, over a fleet of N devices on tag ``production`` in groups
canary 5 %, us-east-1 45 %, eu 50 %, with a mix of current targets and last-seen times,
a canceled wave (w42, rolled out to canary) and an active one (w50, rolled out to
us-east-1):

1. ``status_queries.fleet_status`` (what ``GET /api/v1/status`` runs);
2. ``status_queries.wave_status`` of the active wave w50 and the canceled wave w42;
3. **anchor**: a bare ``SELECT tag, count(*) FROM devices GROUP BY tag``, the floor of
   any aggregate over the fleet.

The fleet's device rows are bulk-inserted (setup, not measured); waves go through the
store. Usage::

    .venv/bin/python bench/fleet_status.py [--devices 1000000] [--no-postgres] [--with-index]

``--with-index`` first creates the covering index ``ix_devices_status`` on
``devices (tag, group_id, current_target, last_seen)`` that the status queries are
written for (SQLite has no hash aggregate: without it, the GROUP BY over 1,000,000
rows sorts them in a temporary B-tree, ~1.3 s on a 2-core machine).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import select, text  # noqa: E402
from wavesign.online import db  # noqa: E402
from wavesign.online.datadir import init_data_dir  # noqa: E402
from wavesign.online.onlinekeys import OnlineKeys  # noqa: E402
from wavesign.online.status_queries import fleet_status, wave_status  # noqa: E402
from wavesign.online.store_waves import WaveStore  # noqa: E402
from wavesign.shared.keys import generate_signer  # noqa: E402

from tests.online_support import ci_entry, offline_response, signed_root_bytes  # noqa: E402
from tests.pg_harness import PgCluster  # noqa: E402

HW = "intel-corei7-64"
GROUPS = (("canary", 5), ("us-east-1", 45), ("eu", 50))
_CHUNK = 20_000


def _activate(store: WaveStore, offline: Any, name: str, version: int) -> None:
    store.add_targets("ci", {f"{HW}-lmp-{version}": ci_entry(version, HW, f"{version:02x}")})
    plan = store.init_wave("bench", name=name, version=version, tag="production")
    response = offline_response(store.request_bytes(plan["request_id"]), [offline])
    store.import_response("bench", response)


def _insert_devices(store: WaveStore, devices: int) -> None:
    with store.read() as conn:
        group_ids = {
            row.name: row.id
            for row in conn.execute(select(db.device_groups.c.name, db.device_groups.c.id))
        }
    now = datetime.now(UTC)
    recent = (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    old = (now - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    bounds = []
    start = 0
    for name, share in GROUPS:
        bounds.append((start + devices * share // 100, group_ids[name]))
        start += devices * share // 100
    rows: list[dict[str, Any]] = []
    with store.engine.begin() as conn:
        for index in range(devices):
            group = next((gid for bound, gid in bounds if index < bound), bounds[-1][1])
            rows.append(
                {
                    "uuid": str(uuid.UUID(int=index + 1)),
                    "name": f"dev-{index:07d}",
                    "hardware_id": HW,
                    "tag": "production",
                    "group_id": group,
                    "token_sha256": hashlib.sha256(index.to_bytes(8, "big")).hexdigest(),
                    "current_target": f"{HW}-lmp-12" if index % 10 else None,
                    "last_seen": recent if index % 3 else old,
                    "created_at": recent,
                }
            )
            if len(rows) == _CHUNK:
                conn.execute(db.devices.insert(), rows)
                rows = []
        if rows:
            conn.execute(db.devices.insert(), rows)


STATUS_INDEX = (
    "CREATE INDEX ix_devices_status ON devices (tag, group_id, current_target, last_seen)"
)


def prepared(folder: Path, url: str | None, devices: int, index: bool = False) -> WaveStore:
    result = init_data_dir(str(folder), url, "bench")
    store = WaveStore(result.db_url, keys=OnlineKeys(folder))
    root_key, offline = generate_signer("ed25519"), generate_signer("ed25519")
    keys = OnlineKeys(folder).public_keys()
    root = signed_root_bytes(
        root_key,
        keys["targets"],
        offline.public_key,
        snapshot=keys["snapshot"],
        timestamp=keys["timestamp"],
    )
    store.add_root("bench", root)
    for name, _share in GROUPS:
        store.create_group("bench", name)
    _activate(store, offline, "populate-12", 12)
    store.complete_wave("bench", "populate-12")
    _insert_devices(store, devices)
    if index:
        with store.engine.begin() as conn:
            conn.execute(text(STATUS_INDEX))
            conn.execute(text("ANALYZE"))
    _activate(store, offline, "w42", 42)
    store.rollout("bench", "w42", group="canary")
    with store.engine.begin() as conn:
        # A tenth of the canary installed 42 before the cancel: orphans.
        conn.execute(
            text(
                "UPDATE devices SET current_target = :t WHERE id IN (SELECT device_id FROM "
                "wave_devices WHERE wave_id = (SELECT id FROM waves WHERE name = 'w42')) "
                "AND id % 10 = 1"
            ),
            {"t": f"{HW}-lmp-42"},
        )
    store.cancel_wave("bench", "w42")
    _activate(store, offline, "w50", 50)
    store.rollout("bench", "w50", group="us-east-1")
    return store


def _timed(action: Callable[[], Any], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def measure(store: WaveStore) -> dict[str, float]:
    figures: dict[str, float] = {}

    def run(what: Callable[[Any], Any]) -> Callable[[], Any]:
        def action() -> Any:
            with store.read() as conn:
                return what(conn)

        return action

    figures["anchor"] = _timed(
        run(lambda c: c.execute(text("SELECT tag, count(*) FROM devices GROUP BY tag")).all())
    )
    figures["status"] = _timed(run(lambda c: fleet_status(c)))
    figures["wave status w50"] = _timed(run(lambda c: wave_status(c, "w50")))
    figures["wave status w42"] = _timed(run(lambda c: wave_status(c, "w42")))
    with store.read() as conn:
        report = fleet_status(conn).to_dict()
    print("  " + ", ".join(f"{r['tag']}{' (wave)' if r['wave'] else ''}: {r['devices']} devices, "
                           f"{r['on_orphan']} orphans" for r in report["tags"]))  # fmt: skip
    return figures


def report(name: str, devices: int, figures: dict[str, float]) -> None:
    anchor = figures["anchor"]
    print(f"status, {name}, {devices} devices (best of 3)")
    print(f"  anchor           bare GROUP BY tag   {anchor:6.3f} s")
    for label in ("status", "wave status w50", "wave status w42"):
        seconds = figures[label]
        print(f"  {label:<16} {seconds:6.3f} s   ({seconds / anchor:5.1f}x anchor)")
    worst = max(figures[k] for k in ("status", "wave status w50", "wave status w42"))
    print(f"  target   each < 1 s: {'met' if worst < 1 else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--with-index", action="store_true", help="create ix_devices_status")
    args = parser.parse_args()
    print(f"index ix_devices_status: {'yes' if args.with_index else 'no'}")
    with tempfile.TemporaryDirectory(prefix="wavesign-bench-") as tmp:
        store = prepared(Path(tmp) / "sqlite", None, args.devices, args.with_index)
        report("SQLite", args.devices, measure(store))
        store.close()
        if not args.no_postgres:
            cluster = PgCluster()
            cluster.start()
            try:
                store = prepared(
                    Path(tmp) / "pg", cluster.new_database(), args.devices, args.with_index
                )
                report("PostgreSQL 15", args.devices, measure(store))
                store.close()
            finally:
                cluster.stop()


if __name__ == "__main__":
    main()
