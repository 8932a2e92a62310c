"""Helpers for the broker's tests: CI targets, a root, offline responses, a live server."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from securesystemslib.signer import CryptoSigner, Key
from tuf.api.metadata import Metadata, Root
from wavesign.shared.bundles import SignatureEntry, SigningRequest, SigningResponse
from wavesign.shared.canonical import digest
from wavesign.shared.delta import resolve_payloads
from wavesign.shared.signing import sign_payload

from tests.tuf_builders import make_root

BIN = Path(sys.executable).parent
WAVESIGN = str(BIN / "wavesign")


def ci_entry(
    version: int, hardware_id: str, sha_byte: str = "ab", tags: list[str] | None = None
) -> dict[str, Any]:
    """A CI target entry as CI writes it (custom.version is a string)."""
    custom: dict[str, Any] = {
        "version": str(version),
        "hardwareIds": [hardware_id],
        "targetFormat": "OSTREE",
        "name": hardware_id + "-lmp",
    }
    if tags is not None:
        custom["tags"] = tags
    return {"length": 1000 + version, "hashes": {"sha256": sha_byte * 32}, "custom": custom}


def signed_root_bytes(
    root_signer: CryptoSigner,
    online_targets: Key,
    offline_targets: Key,
    version: int = 1,
    *,
    snapshot: Key | None = None,
    timestamp: Key | None = None,
) -> bytes:
    """A root made elsewhere: root key offline; targets = online + offline, threshold 2.

    For ``POST /api/v1/roots`` (restoring a root): the broker accepts it only if
    ``snapshot`` and ``timestamp`` are its own online keys.
    """
    root = make_root(
        [root_signer.public_key], [online_targets, offline_targets], targets_threshold=2
    )
    root.version = version
    for role, key in (("snapshot", snapshot), ("timestamp", timestamp)):
        if key is not None:
            root.add_key(key, role)
    md = Metadata(root)
    md.sign(root_signer)
    return md.to_bytes()


def ceremony_response(
    request_bytes: bytes,
    root_signers: list[CryptoSigner],
    offline_targets: list[Key],
    *,
    previous_signers: list[CryptoSigner] | None = None,
    edit: Callable[[Root], None] | None = None,
) -> bytes:
    """What the appliance returns to a root proposal, built independently of the broker.

    The proposal gets the appliance's root keys (replacing the root role's keys, as the
    appliance does) and its offline targets keys, and is signed by the new root keys
    and, for a rotation, by ``previous_signers`` too.
    """
    request = SigningRequest.from_bytes(request_bytes)
    proposal = copy.deepcopy(request.payload("root").full())
    root = Root.from_dict(proposal)
    root.roles["root"].keyids = []
    for signer in root_signers:
        root.add_key(signer.public_key, "root")
    for key in offline_targets:
        root.add_key(key, "targets")
    if edit is not None:
        edit(root)  # an appliance that does not return what it was asked for
    md = Metadata(root)
    entries = []
    root_sha256 = digest(root.to_dict())
    for signer in [*root_signers, *(previous_signers or [])]:
        sig = md.sign(signer, append=True)
        entries.append(SignatureEntry("root", root_sha256, sig.keyid, sig.signature))
    return SigningResponse(request.digest(), tuple(entries), root=md.to_dict()).to_bytes()


def root_by_ceremony(
    store: Any, root_signer: CryptoSigner, offline_targets: Key, actor: str = "admin"
) -> int:
    """Root v1 through the ceremony, on a store (``WaveStore``): propose, sign, import."""
    proposed = store.propose_root(actor)
    response = ceremony_response(
        store.request_bytes(proposed["request_id"]), [root_signer], [offline_targets]
    )
    result = store.import_response(actor, response)
    return int(result["version"])


def offline_response(
    request_bytes: bytes,
    signers: list[CryptoSigner],
    payloads: tuple[str, ...] | None = None,
    known: dict[str, dict[str, Any]] | None = None,
) -> bytes:
    """What the appliance would return: its signatures over the request's payloads.

    ``known`` (sha256 -> signed) plays the appliance's store of payloads signed before:
    delta payloads are rebuilt from it, and every payload signed here is added to it.
    """
    request = resolve_payloads(
        SigningRequest.from_bytes(request_bytes), lambda sha: (known or {}).get(sha)
    )
    if known is not None:
        known.update({p.sha256: p.full() for p in request.payloads})
    entries = []
    for payload in request.payloads:
        if payloads is not None and payload.name not in payloads:
            continue
        for signer in signers:
            sig = sign_payload(signer, payload.full())
            entries.append(SignatureEntry(payload.name, payload.sha256, sig.keyid, sig.signature))
    return SigningResponse(request.digest(), tuple(entries)).to_bytes()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def live_server(data_dir: Path, workers: int = 1, engine: str | None = None) -> Iterator[str]:
    """``wavesign server run`` in a subprocess on a free port; yields its base URL.

    ``engine``: ``--server`` (None: the default server, as operators run it)."""
    port = free_port()
    log = open(data_dir.parent / f"server-{port}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [WAVESIGN, "server", "run", "--data", str(data_dir), "--port", str(port),
         "--workers", str(workers), *(["--server", engine] if engine else [])],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"server exited: {(data_dir.parent / f'server-{port}.log').read_text()}"
                )
            try:
                if httpx.get(url + "/api/v1/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start within 30 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run_cli(
    *args: str, url: str | None = None, token: str | None = None, stdin: str | None = None,
    cwd: Path | None = None, extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run ``wavesign ARGS`` as a subprocess with WAVESIGN_URL/TOKEN set."""
    env = dict(os.environ)
    env.pop("WAVESIGN_TOKEN", None)
    env.pop("WAVESIGN_URL", None)
    env.pop("WAVESIGN_DATA", None)
    if url is not None:
        env["WAVESIGN_URL"] = url
    if token is not None:
        env["WAVESIGN_TOKEN"] = token
    env.update(extra_env or {})
    return subprocess.run(
        [WAVESIGN, *args],
        capture_output=True,
        text=True,
        input=stdin if stdin is not None else "",
        env=env,
        cwd=cwd,
        check=False,
        timeout=120,
    )


def wait_for_publication(db_url: str, timeout: float = 20.0) -> None:
    """Wait until the server's device publisher has caught up with the last change.

    A server republishes the device views in the background after each change (and
    records that in ``settings``). Tests that compare a database dump before and after
    a refused command wait for it first, so the dump is not taken mid-publication.
    """
    from sqlalchemy import create_engine, select
    from wavesign.online import db
    from wavesign.online.serving import PUBLICATION_KEY, state_marker

    engine = create_engine(db_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                if conn.execute(select(db.roots.c.version).limit(1)).first() is None:
                    return  # nothing is served before the root ceremony
                marker = state_marker(conn)
                record = conn.execute(
                    select(db.settings.c.value).where(db.settings.c.key == PUBLICATION_KEY)
                ).scalar()
            if record is not None and json.loads(record).get("marker") == marker:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the device views were not republished within {timeout} s")
            time.sleep(0.1)
    finally:
        engine.dispose()
