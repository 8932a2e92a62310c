"""The broker on PostgreSQL (a throwaway cluster), and concurrent changes on both databases."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from securesystemslib.signer import CryptoSigner
from sqlalchemy import func, select
from wavesign.online import db
from wavesign.online.datadir import init_data_dir
from wavesign.online.onlinekeys import OnlineKeys
from wavesign.online.store_waves import WaveStore
from wavesign.shared.errors import WavesignError

from tests.online_support import (
    WAVESIGN,
    ci_entry,
    live_server,
    offline_response,
    root_by_ceremony,
    run_cli,
)
from tests.pg_harness import PgCluster, pg_cluster_fixture  # noqa: F401 (fixture pg_cluster)

pytestmark = pytest.mark.postgres
HW = "intel-corei7-64"


def _active_wave_store(data: Path, url: str | None, signers: list[CryptoSigner]) -> WaveStore:
    """A broker with production at 12, wave 'w42' active and 120 devices in group 'fleet'."""
    result = init_data_dir(str(data), url, "acme")
    store = WaveStore(result.db_url, keys=OnlineKeys(data))
    root_by_ceremony(store, signers[0], signers[1].public_key)
    store.add_targets("ci", {"lmp-12": ci_entry(12, HW, "12"), "lmp-42": ci_entry(42, HW, "42")})
    for name, version in (("w12", 12), ("w42", 42)):
        plan = store.init_wave("op", name=name, version=version, tag="production")
        response = offline_response(store.request_bytes(plan["request_id"]), [signers[1]])
        store.import_response("op", response)
        if version == 12:
            store.complete_wave("op", name)
    store.create_group("op", "fleet")
    store.register_devices(
        "op",
        [
            {"name": f"d{i}", "hardware_id": HW, "tag": "production", "group": "fleet"}
            for i in range(120)
        ],
    )
    return store


def _run_at_once(calls: list[Callable[[], Any]]) -> tuple[list[Any], list[BaseException]]:
    barrier = threading.Barrier(len(calls))
    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            value = call()
            with lock:
                results.append(value)
        except BaseException as exc:  # collected and asserted on by the test
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results, errors


def _check_concurrent_rollouts(store: WaveStore, url: str) -> None:
    # Six stores = six engines = six connections racing for the same wave.
    racers = [WaveStore(url) for _ in range(6)]
    try:
        results, errors = _run_at_once(
            [lambda s=s: s.rollout("op", "w42", group="fleet", limit="15") for s in racers]
        )
    finally:
        for racer in racers:
            racer.close()
    assert errors == []
    assert sorted(r["devices"] for r in results) == [15] * 6
    with store.read() as conn:
        in_wave = conn.execute(select(func.count()).select_from(db.wave_devices)).scalar()
        recorded = conn.execute(select(func.sum(db.rollouts.c.device_count))).scalar()
    assert in_wave == 90  # no device was lost or counted twice
    assert recorded == 90
    assert store.show_wave("w42")["devices"] == 90


def test_postgres_migrations_create_the_declared_schema(pg_cluster: PgCluster) -> None:
    store = WaveStore(pg_cluster.new_database())
    try:
        assert store.migrate() == "0003"
        with store.engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), db.metadata) == []
    finally:
        store.close()


def test_concurrent_rollouts_lose_no_update_on_postgres(
    pg_cluster: PgCluster, tmp_path: Path, ed25519_signers: list[CryptoSigner]
) -> None:
    url = pg_cluster.new_database()
    store = _active_wave_store(tmp_path / "data", url, ed25519_signers)
    try:
        _check_concurrent_rollouts(store, url)
    finally:
        store.close()


def test_concurrent_rollouts_lose_no_update_on_sqlite(
    tmp_path: Path, ed25519_signers: list[CryptoSigner]
) -> None:
    store = _active_wave_store(tmp_path / "data", None, ed25519_signers)
    try:
        _check_concurrent_rollouts(store, store.url)
    finally:
        store.close()


def test_two_wave_inits_for_one_tag_at_once_let_exactly_one_through(
    pg_cluster: PgCluster, tmp_path: Path, ed25519_signers: list[CryptoSigner]
) -> None:
    url = pg_cluster.new_database()
    init_data_dir(str(tmp_path / "data"), url, "acme")
    store = WaveStore(url, keys=OnlineKeys(tmp_path / "data"))
    root_by_ceremony(store, ed25519_signers[0], ed25519_signers[1].public_key)
    store.add_targets("ci", {"lmp-12": ci_entry(12, HW)})
    racers = [WaveStore(url, keys=OnlineKeys(tmp_path / "data")) for _ in range(4)]
    try:
        results, errors = _run_at_once(
            [
                lambda s=s, i=i: s.init_wave("op", name=f"w{i}", version=12, tag="production")
                for i, s in enumerate(racers)
            ]
        )
    finally:
        for racer in racers:
            racer.close()
    assert len(results) == 1
    assert len(errors) == 3 and all(isinstance(e, WavesignError) for e in errors)
    assert len(store.list_waves()) == 1
    assert sorted(r["purpose"] for r in store.list_requests()) == ["root", "wave"]
    store.close()


def test_refusals_leave_postgres_unchanged(
    pg_cluster: PgCluster, tmp_path: Path, ed25519_signers: list[CryptoSigner]
) -> None:
    url = pg_cluster.new_database()
    store = _active_wave_store(tmp_path / "data", url, ed25519_signers)
    try:
        before = store.dump()
        refusals: list[tuple[Callable[[], Any], str]] = [
            (lambda: store.cancel_wave("op", "w12"), "a completed wave cannot be canceled"),
            (
                lambda: store.init_wave("op", name="x", version=42, tag="production"),
                "wave w42 is still open",
            ),
            (lambda: store.rollout("op", "w12", group="fleet"), "only an active wave"),
            (
                lambda: store.add_targets("ci", {"bad": {"length": 1}}),
                "target bad: hashes.sha256 is missing",
            ),
            (
                lambda: store.register_devices(
                    "op",
                    [
                        {"name": "new", "hardware_id": HW, "tag": "production"},
                        {"name": "d1", "hardware_id": HW, "tag": "production"},
                    ],
                ),
                "device d1 is registered already",
            ),
        ]
        for action, message in refusals:
            with pytest.raises(WavesignError, match=message):
                action()
            assert store.dump() == before, message
    finally:
        store.close()


def test_two_cli_rollouts_at_once_against_two_server_workers_on_postgres(
    pg_cluster: PgCluster, tmp_path: Path, ed25519_signers: list[CryptoSigner]
) -> None:
    """The whole path: `server init --db postgresql...`, a 2-worker server, two CLI calls."""
    url = pg_cluster.new_database()
    data = tmp_path / "data"
    init = run_cli("server", "init", "--data", str(data), "--db", url)
    assert init.returncode == 0, init.stderr
    assert "postgresql+psycopg://postgres@127.0.0.1" in init.stdout
    store = WaveStore(url, keys=OnlineKeys(data))
    root_by_ceremony(store, ed25519_signers[0], ed25519_signers[1].public_key)
    store.add_targets("ci", {"lmp-42": ci_entry(42, HW, "42")})
    plan = store.init_wave("op", name="w42", version=42, tag="production")
    store.import_response(
        "op", offline_response(store.request_bytes(plan["request_id"]), [ed25519_signers[1]])
    )
    store.create_group("op", "fleet")
    store.register_devices(
        "op",
        [
            {"name": f"d{i}", "hardware_id": HW, "tag": "production", "group": "fleet"}
            for i in range(100)
        ],
    )
    token = (data / "admin.token").read_text().strip()
    with live_server(data, workers=2) as base:
        env = dict(os.environ, WAVESIGN_URL=base, WAVESIGN_TOKEN=token)
        command = [WAVESIGN, "wave", "rollout", "w42", "fleet", "--limit", "30"]
        procs = [
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    for stdout, _ in outputs:
        assert stdout.decode().splitlines()[0] == (
            "A Wave is being rolled out to 30 devices in group fleet."
        )
    shown = store.show_wave("w42")
    assert shown["devices"] == 60
    assert [r["devices"] for r in shown["rollouts"]] == [30, 30]
    store.close()
