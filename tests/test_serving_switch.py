"""Several server processes switch to a new publication together (``Serving``'s barrier).

Two (or three) ``Serving`` instances share one database, as two processes would; the
test steps them by hand, so every interleaving it checks is deterministic. What a
device polling both must never meet: one process serving a publication while the
other still serves an older one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from wavesign.online.device_api import DeviceDirectory
from wavesign.online.onlinekeys import OnlineKeys
from wavesign.online.serving import Serving, ServingConfig, read_publication

from tests.test_serving import Fleet, target

CONFIG = ServingConfig(poll_interval=0.2, flush_interval=1.0, node_timeout=1.0)


_STARTED: list[Serving] = []


@pytest.fixture(autouse=True)
def _stop_heartbeats() -> Iterator[None]:
    yield
    while _STARTED:
        _STARTED.pop().stop_heartbeat()


def process(fleet: Fleet) -> Serving:
    serving = Serving(fleet.store.engine, OnlineKeys(fleet.data), DeviceDirectory(), CONFIG)
    _STARTED.append(serving)
    return serving


def served_timestamp(serving: Serving, fleet: Fleet, device: str = "c1") -> int | None:
    """The timestamp version ``serving`` hands ``device`` now (None: no view)."""
    token = hashlib.sha256(fleet.tokens[device].encode()).hexdigest()
    entry = serving.directory.lookup(token)
    assert entry is not None
    view = entry[1]
    return None if view is None else view.timestamp.version


def wait_for_switch_time(serving: Serving) -> None:
    """Sleep until the switch time the database record names (set by any process)."""
    with serving.engine.connect() as conn:
        record = read_publication(conn)
    assert record is not None and record.serve_at_ms is not None
    time.sleep(max(0.0, record.serve_at_ms / 1000 - time.time()) + 0.01)


def test_processes_switch_together_and_never_serve_apart(
    tmp_path: Path, ed25519_signers: list[CryptoSigner]
) -> None:
    fleet = Fleet(tmp_path / "data", ed25519_signers)
    fleet.populate()
    a, b = process(fleet), process(fleet)
    a.start()  # alone: switches at once
    b.start()  # joins: adopts what a serves
    first = served_timestamp(a, fleet)
    assert first is not None and served_timestamp(b, fleet) == first

    fleet.wave("w42", 42)
    fleet.store.rollout("op", "w42", group="canary")
    a.step()  # a prepared the rollout, but b is alive and not ready: nobody switches
    assert (served_timestamp(a, fleet), served_timestamp(b, fleet)) == (first, first)
    b.step()  # b is the last one ready: it sets a switch time ahead of now
    assert (served_timestamp(a, fleet), served_timestamp(b, fleet)) == (first, first)
    pending = b._pending
    assert pending is not None and pending.publication is not None
    due = pending.publication.serve_at_ms
    assert due is not None and due > time.time() * 1000

    # A change before the switch waits for it: the promised publication is kept.
    fleet.store.cancel_wave("op", "w42")
    a.step()
    assert a._pending is not None and a._pending.publication == pending.publication
    assert served_timestamp(a, fleet) == first

    wait_for_switch_time(a)
    a.step()
    b.step()
    second = served_timestamp(a, fleet)
    assert second is not None and second > first
    assert served_timestamp(b, fleet) == second
    entry = a.directory.lookup(hashlib.sha256(fleet.tokens["c1"].encode()).hexdigest())
    assert entry is not None and entry[1] is not None
    assert target(42).encode() in entry[1].targets.body  # c1 is served the wave now

    # Then the cancel is claimed and switched to the same way.
    a.step()
    b.step()
    wait_for_switch_time(a)
    a.step()
    b.step()
    third = served_timestamp(a, fleet)
    assert third is not None and third > second
    assert served_timestamp(b, fleet) == third


def two_processes(fleet: Fleet) -> tuple[Serving, Serving]:
    """Two processes over a populated store, both serving its first publication."""
    fleet.populate()
    a, b = process(fleet), process(fleet)
    a.start()
    b.start()
    return a, b


def test_a_silent_process_holds_the_switch_back_only_until_its_timeout(
    tmp_path: Path, ed25519_signers: list[CryptoSigner]
) -> None:
    fleet = Fleet(tmp_path / "data", ed25519_signers)
    a, silent = two_processes(fleet)
    before = served_timestamp(a, fleet)
    silent.stop_heartbeat()  # it crashes: it neither polls nor leaves

    fleet.wave("w42", 42)
    fleet.store.rollout("op", "w42", group="canary")
    a.step()
    assert served_timestamp(a, fleet) == before, "switched while another process is not ready"
    time.sleep(CONFIG.node_timeout + 0.1)
    a.step()
    after = served_timestamp(a, fleet)
    assert after is not None and before is not None and after > before


def test_a_process_that_leaves_no_longer_holds_the_switch_back(
    tmp_path: Path, ed25519_signers: list[CryptoSigner]
) -> None:
    fleet = Fleet(tmp_path / "data", ed25519_signers)
    a, b = two_processes(fleet)
    before = served_timestamp(a, fleet)
    b.leave()  # a clean shutdown
    fleet.wave("w42", 42)
    fleet.store.rollout("op", "w42", group="canary")
    a.step()
    after = served_timestamp(a, fleet)
    assert after is not None and before is not None and after > before


def test_a_live_process_that_cannot_prepare_blocks_the_switch_and_is_named(
    tmp_path: Path, ed25519_signers: list[CryptoSigner], caplog: pytest.LogCaptureFixture
) -> None:
    fleet = Fleet(tmp_path / "data", ed25519_signers)
    a, stuck = two_processes(fleet)
    before = served_timestamp(a, fleet)
    fleet.wave("w42", 42)
    fleet.store.rollout("op", "w42", group="canary")
    deadline = time.monotonic() + CONFIG.node_timeout + 0.5
    with caplog.at_level(logging.WARNING, logger="wavesign.online.serving"):
        while time.monotonic() < deadline:
            stuck.heartbeat()  # alive, but never prepares the new publication
            a.step()
            time.sleep(0.1)
    # Serving apart would show devices polling both a rollback: a waits, and says why.
    assert served_timestamp(a, fleet) == before
    waiting = [r.getMessage() for r in caplog.records if "has waited" in r.getMessage()]
    assert len(waiting) == 1, caplog.text
    assert stuck.node_id in waiting[0]


def test_a_late_process_still_serves_the_promised_publication_before_anything_newer(
    tmp_path: Path, ed25519_signers: list[CryptoSigner]
) -> None:
    fleet = Fleet(tmp_path / "data", ed25519_signers)
    a, late = two_processes(fleet)
    first = served_timestamp(a, fleet)
    fleet.wave("w42", 42)
    fleet.store.rollout("op", "w42", group="canary")
    a.step()
    late.step()  # both ready: the switch time is set
    wait_for_switch_time(a)
    a.step()  # a switches on time; `late` stalls past the switch time
    promised = served_timestamp(a, fleet)
    assert promised is not None and first is not None and promised > first
    fleet.store.cancel_wave("op", "w42")  # a newer state arrives meanwhile
    a.step()
    # No newer publication may be claimed while `late` still serves the older one...
    assert (
        a._pending is None
        or a._pending.publication is None
        or (a._pending.publication.generation == promised)
    )
    assert served_timestamp(late, fleet) == first
    # ...and when it wakes up, it serves the promised one, not the cancel directly.
    late.step()
    assert served_timestamp(late, fleet) == promised
    # Then the cancel is claimed, prepared by both and switched to together.
    for _ in range(3):
        a.step()
        late.step()
    wait_for_switch_time(a)
    a.step()
    late.step()
    newest = served_timestamp(a, fleet)
    assert newest is not None and newest > promised
    assert served_timestamp(late, fleet) == newest
