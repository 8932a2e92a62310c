"""Benchmark: `wave rollout` of an active wave to a 100,000-device group (target: < 2 s).

For SQLite and for PostgreSQL (a throwaway cluster from ``tests/pg_harness.py``), in
one run on one machine:

1. **full group**: ``WaveStore.rollout(wave, group=...)``: the wave row locked, the
   selection counted, one ``INSERT ... SELECT`` recording 100,000 devices, the event;
2. **--limit 10000**: the same group, an explicit selection (fioctl's per-call cap);
3. **anchor**: a bare ``INSERT INTO wave_devices SELECT ... FROM devices`` of the same
   100,000 rows in one transaction on the same database: the floor of any rollout.

Usage::

    .venv/bin/python bench/wave_rollout.py [--devices 100000] [--no-postgres]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402
from wavesign.online.datadir import init_data_dir  # noqa: E402
from wavesign.online.onlinekeys import OnlineKeys  # noqa: E402
from wavesign.online.store_waves import WaveStore  # noqa: E402
from wavesign.shared.keys import generate_signer  # noqa: E402

from tests.online_support import ci_entry, offline_response, root_by_ceremony  # noqa: E402
from tests.pg_harness import PgCluster  # noqa: E402


def prepared(folder: Path, url: str | None, devices: int) -> WaveStore:
    """An active wave 'w42' and groups 'big' and 'big2' of ``devices`` devices each."""
    result = init_data_dir(str(folder), url, "bench")
    store = WaveStore(result.db_url, keys=OnlineKeys(folder))
    root_key, offline = generate_signer(), generate_signer()
    root_by_ceremony(store, root_key, offline.public_key, actor="bench")
    store.add_targets("ci", {"lmp-42": ci_entry(42, "intel-corei7-64", "42")})
    plan = store.init_wave("bench", name="w42", version=42, tag="production")
    store.import_response("bench", offline_response(store.request_bytes(plan["request_id"]),
                                                    [offline]))  # fmt: skip
    for group in ("big", "big2", "anchor"):
        store.create_group("bench", group)
        store.register_devices(
            "bench",
            [
                {"name": f"{group}-{i}", "hardware_id": "intel-corei7-64", "tag": "production",
                 "group": group}
                for i in range(devices)
            ],
        )  # fmt: skip
    return store


def measure(store: WaveStore) -> dict[str, float]:
    figures: dict[str, float] = {}
    start = time.perf_counter()
    store.rollout("bench", "w42", group="big")
    figures["full group"] = time.perf_counter() - start
    start = time.perf_counter()
    store.rollout("bench", "w42", group="big2", limit="10000")
    figures["--limit 10000"] = time.perf_counter() - start
    with store.engine.begin() as conn:
        rollout_id = conn.execute(text("SELECT max(id) FROM rollouts")).scalar()
        start = time.perf_counter()
        conn.execute(
            text(
                "INSERT INTO wave_devices (wave_id, device_id, rollout_id) "
                "SELECT 1, d.id, :rollout FROM devices d JOIN device_groups g "
                "ON g.id = d.group_id WHERE g.name = 'anchor'"
            ),
            {"rollout": rollout_id},
        )
    figures["anchor"] = time.perf_counter() - start
    return figures


def report(name: str, devices: int, figures: dict[str, float]) -> None:
    anchor = figures["anchor"]
    print(f"wave rollout, {name}, group of {devices} devices")
    print(f"  anchor   bare INSERT ... SELECT      {anchor:6.2f} s")
    for label in ("full group", "--limit 10000"):
        seconds = figures[label]
        print(
            f"  {label:<15} WaveStore.rollout  {seconds:6.2f} s   ({seconds / anchor:5.1f}x anchor)"
        )
    verdict = "met" if figures["full group"] < 2 else "NOT met"
    print(f"  target   full group < 2 s: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wavesign-bench-") as tmp:
        store = prepared(Path(tmp) / "sqlite", None, args.devices)
        report("SQLite", args.devices, measure(store))
        store.close()
        if not args.no_postgres:
            cluster = PgCluster()
            cluster.start()
            try:
                store = prepared(Path(tmp) / "pg", cluster.new_database(), args.devices)
                report("PostgreSQL 15", args.devices, measure(store))
                store.close()
            finally:
                cluster.stop()


if __name__ == "__main__":
    main()
