"""Operators racing each other: an import of signatures against a cancel of the same wave.

Two broker connections change the same wave at the same moment, many times over.
Whichever wins, the other must get a clear refusal (never a database error such as a
deadlock), and the wave and its request must agree afterwards: the request is signed
exactly when the wave holds its signed payloads.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from sqlalchemy import select
from wavesign.online import db
from wavesign.online.datadir import init_data_dir
from wavesign.online.onlinekeys import OnlineKeys
from wavesign.online.store_waves import WaveStore
from wavesign.shared.errors import WavesignError

from tests.online_support import ci_entry, offline_response, root_by_ceremony
from tests.pg_harness import PgCluster, pg_cluster_fixture  # noqa: F401 (fixture pg_cluster)
from tests.test_online_postgres import _run_at_once

HW = "intel-corei7-64"
ROUNDS = 6


def _race_import_against_cancel(data: Path, url: str | None, signers: list[CryptoSigner]) -> None:
    result = init_data_dir(str(data), url, "acme")
    store = WaveStore(result.db_url, keys=OnlineKeys(data))
    root_by_ceremony(store, signers[0], signers[1].public_key)
    store.add_targets("ci", {"lmp-12": ci_entry(12, HW, "12"), "lmp-42": ci_entry(42, HW, "42")})
    plan = store.init_wave("op", name="w12", version=12, tag="production")
    store.import_response(
        "op", offline_response(store.request_bytes(plan["request_id"]), [signers[1]])
    )
    store.complete_wave("op", "w12")

    importer = WaveStore(result.db_url, keys=OnlineKeys(data))
    canceler = WaveStore(result.db_url, keys=OnlineKeys(data))
    try:
        for round_ in range(ROUNDS):
            name = f"w42-{round_}"
            plan = store.init_wave("op", name=name, version=42, tag="production")
            response = offline_response(store.request_bytes(plan["request_id"]), [signers[1]])
            results, errors = _run_at_once(
                [
                    lambda r=response: ("import", importer.import_response("op", r)),
                    lambda name=name: ("cancel", canceler.cancel_wave("op", name)),
                ]
            )
            # A refusal is fine; anything else (a deadlock, a serialization failure) is not.
            assert all(isinstance(e, WavesignError) for e in errors), errors
            assert len(results) + len(errors) == 2
            with store.read() as conn:
                wave = conn.execute(select(db.waves).where(db.waves.c.name == name)).one()
                request = conn.execute(
                    select(db.signing_requests).where(db.signing_requests.c.wave_id == wave.id)
                ).one()
            if wave.status == "awaiting-signatures":
                pytest.fail(f"{name}: neither the import nor the cancel took effect")
            assert wave.status == "canceled" or (wave.status == "active" and not any(
                kind == "cancel" for kind, _ in results
            ))  # fmt: skip
            assert (request.status == "signed") == (wave.wave_signed is not None)
            if wave.status == "active":  # the cancel lost: tidy up for the next round
                store.cancel_wave("op", name)
    finally:
        importer.close()
        canceler.close()
        store.close()


@pytest.mark.postgres
def test_import_racing_cancel_on_postgres(
    pg_cluster: PgCluster, tmp_path: Path, ed25519_signers: list[CryptoSigner]
) -> None:
    _race_import_against_cancel(tmp_path / "data", pg_cluster.new_database(), ed25519_signers)


def test_import_racing_cancel_on_sqlite(
    tmp_path: Path, ed25519_signers: list[CryptoSigner]
) -> None:
    _race_import_against_cancel(tmp_path / "data", None, ed25519_signers)
