"""End to end: a real `wavesign server run` process, driven by the `wavesign` CLI as a subprocess.

Each refused input is checked to leave every table exactly as it was.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from securesystemslib.signer import CryptoSigner
from wavesign.online.datadir import DataDir
from wavesign.online.onlinekeys import OnlineKeys
from wavesign.online.store import Store
from wavesign.shared.bundles import SigningRequest
from wavesign.shared.gpg import GnuPG
from wavesign.shared.qrtransport import export_qr, read_qr_images

from tests.gpghelpers import make_gpg_identity
from tests.online_support import (
    ceremony_response,
    ci_entry,
    live_server,
    offline_response,
    run_cli,
    signed_root_bytes,
    wait_for_publication,
)

HW = "intel-corei7-64"


@dataclass
class Env:
    data: Path
    url: str
    admin: str
    operator: str
    auditor: str
    offline: CryptoSigner
    work: Path
    signed_before: dict[str, Any]

    def cli(self, *args: str, token: str | None = None, **env: str) -> Any:
        return run_cli(
            *args, url=self.url, token=token or self.operator, cwd=self.work, extra_env=env
        )

    def ok(self, *args: str, token: str | None = None, **env: str) -> str:
        result = self.cli(*args, token=token, **env)
        assert result.returncode == 0, result.stderr
        return str(result.stdout)

    def dump(self) -> dict[str, Any]:
        store = Store(DataDir.resolve(str(self.data)).db_url)
        try:
            return store.dump()
        finally:
            store.close()

    def refused(self, *args: str, message: str, token: str | None = None) -> str:
        """Run a command that must be refused: exit 1, one error line, no change at all."""
        wait_for_publication(DataDir.resolve(str(self.data)).db_url)
        before = self.dump()
        result = self.cli(*args, token=token)
        assert result.returncode == 1, (result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert message in lines[0], lines[0]
        assert "Traceback" not in result.stderr
        assert self.dump() == before
        return lines[0]


@pytest.fixture(scope="module")
def env(
    tmp_path_factory: pytest.TempPathFactory, ed25519_signers: list[CryptoSigner]
) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("api")
    data = work / "data"
    init = run_cli("server", "init", "--data", str(data), "--factory", "acme", cwd=work)
    assert init.returncode == 0, init.stderr
    admin = (data / "admin.token").read_text().strip()
    assert init.stdout.count(admin) == 1  # printed once
    with live_server(data) as url:
        # The root ceremony through the CLI; the appliance's side is played in Python.
        proposed = run_cli("root", "propose", "--json", url=url, token=admin, cwd=work)
        assert proposed.returncode == 0, proposed.stderr
        request_id = json.loads(proposed.stdout)["request_id"]
        exported = work / "root.request.json"
        out = run_cli("requests", "export", request_id, "--out", str(exported), url=url,
                      token=admin)  # fmt: skip
        assert out.returncode == 0, out.stderr
        answer = work / "root.response.json"
        answer.write_bytes(
            ceremony_response(
                exported.read_bytes(), [ed25519_signers[0]], [ed25519_signers[1].public_key]
            )
        )
        out = run_cli("requests", "import", str(answer), url=url, token=admin)
        assert out.returncode == 0, out.stderr
        assert "root v1 is in place" in out.stdout
        tokens = {}
        for role in ("operator", "auditor"):
            out = run_cli("tokens", "create", "--role", role, "--name", role, url=url, token=admin)
            assert out.returncode == 0, out.stderr
            tokens[role] = out.stdout.strip()
        yield Env(
            data, url, admin, tokens["operator"], tokens["auditor"], ed25519_signers[1], work, {}
        )


# -- server and tokens ---------------------------------------------------------------------------
def test_server_init_files_and_refusal_of_a_second_init(env: Env) -> None:
    assert stat.S_IMODE((env.data / "admin.token").stat().st_mode) == 0o600
    assert (env.data / "wavesign.db").exists()
    result = run_cli("server", "init", "--data", str(env.data))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: {env.data} is initialized already"
    migrate = run_cli("server", "migrate", "--data", str(env.data))
    assert migrate.returncode == 0 and "revision 0003" in migrate.stdout


def test_openapi_is_served_under_the_api_prefix(env: Env) -> None:
    spec = httpx.get(env.url + "/api/v1/openapi.json").json()
    assert "/api/v1/waves/{name}/rollout" in spec["paths"]
    assert "/api/v1/devices" in spec["paths"]


def test_tokens_list_and_revoke(env: Env) -> None:
    listed = json.loads(env.ok("tokens", "list", "--json", token=env.admin))
    assert {(t["name"], t["role"]) for t in listed} >= {
        ("admin", "admin"),
        ("operator", "operator"),
        ("auditor", "auditor"),
    }
    assert all("token" not in t and "token_sha256" not in t for t in listed)
    token = env.ok("tokens", "create", "--role", "auditor", "--name", "tmp", token=env.admin)
    env.ok("tokens", "revoke", "tmp", token=env.admin)
    env.refused("groups", "list", message="API token tmp was revoked", token=token.strip())
    env.refused(
        "tokens", "create", "--role", "admin", message="may not do this", token=env.operator
    )


def test_auditor_reads_but_changes_nothing(env: Env) -> None:
    env.ok("groups", "list", "--json", token=env.auditor)
    env.refused("groups", "create", "nope", message="role auditor", token=env.auditor)
    env.refused(
        "devices", "register", "x", "--hardware-id", HW, "--tag", "production",
        message="role auditor", token=env.auditor,
    )  # fmt: skip


def test_a_device_token_is_refused_on_the_operator_api(env: Env) -> None:
    out = json.loads(
        env.ok("devices", "register", "lonely", "--hardware-id", HW, "--tag", "lab", "--json")
    )
    assert set(out) == {"uuid", "name", "token"}
    env.refused("groups", "list", message="a device token cannot use the operator API",
                token=out["token"])  # fmt: skip
    env.refused("groups", "create", "x", message="device token", token=out["token"])
    result = run_cli("groups", "list", url=env.url, token=None)
    assert result.returncode == 1 and "no API token" in result.stderr


# -- targets --------------------------------------------------------------------------------------
def test_targets_from_ci_files_and_flags(env: Env) -> None:
    ci = {
        "signed": {
            "_type": "targets",
            "version": 7,
            "expires": "2030-01-01T00:00:00Z",
            "targets": {f"{HW}-lmp-12": ci_entry(12, HW, "12")},
        },
        "signatures": [{"keyid": "00" * 32, "sig": "00"}],
    }
    path = env.work / "targets.json"
    path.write_text(json.dumps(ci))
    assert "added 1 targets" in env.ok("targets", "add", "--from-json", str(path))
    assert "0 targets, 1 unchanged" in env.ok("targets", "add", "--from-json", str(path))

    bad = env.work / "bad.json"
    bad.write_text(json.dumps([
        {"name": "ok-13", **ci_entry(13, HW, "13")},
        {"name": "bad-13", "length": 1, "hashes": {"sha256": "zz"}, "custom": {}},
    ]))  # fmt: skip
    env.refused("targets", "add", "--from-json", str(bad), message="target bad-13")
    truncated = env.work / "truncated.json"
    truncated.write_text(json.dumps(ci)[:50])
    env.refused("targets", "add", "--from-json", str(truncated), message="is not valid JSON")

    env.ok(
        "targets", "add", f"{HW}-lmp-42", "--version", "42", "--hardware-id", HW,
        "--sha256", "42" * 32, "--length", "4242", "--tag", "main",
        "--custom", '{"uri": "https://ci.example/42"}',
    )  # fmt: skip
    listed = json.loads(env.ok("targets", "list", "--version", "42", "--json"))
    assert listed == [
        {
            "name": f"{HW}-lmp-42",
            "length": 4242,
            "hashes": {"sha256": "42" * 32},
            "custom": {
                "version": "42",
                "hardwareIds": [HW],
                "tags": ["main"],
                "uri": "https://ci.example/42",
            },
        }
    ]


# -- devices --------------------------------------------------------------------------------------
def test_devices_import_list_show_move(env: Env) -> None:
    env.ok("groups", "create", "canary")
    env.ok("groups", "create", "us-east-1")
    csv_path = env.work / "fleet.csv"
    lines = ["name,hardware_id,tag,group"]
    lines += [f"gw-{i:03},{HW},production,{'canary' if i < 3 else 'us-east-1'}" for i in range(30)]
    csv_path.write_text("\n".join(lines) + "\n")
    out = env.work / "fleet-tokens.csv"
    assert "imported 30 devices" in env.ok("devices", "import", str(csv_path), "--tokens-out",
                                           str(out))  # fmt: skip
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    issued = out.read_text().splitlines()
    assert issued[0] == "name,uuid,token" and len(issued) == 31

    again = env.work / "again-tokens.csv"
    env.refused("devices", "import", str(csv_path), "--tokens-out", str(again),
                message="gw-000 is registered already")  # fmt: skip
    assert not again.exists()

    # A tokens file that cannot be written is found before any device is registered.
    fresh = env.work / "fresh.csv"
    fresh.write_text(f"name,hardware_id,tag,group\nnew-1,{HW},production,canary\n")
    nowhere = env.work / "no-such-folder" / "tokens.csv"
    env.refused("devices", "import", str(fresh), "--tokens-out", str(nowhere),
                message="is not a writable folder")  # fmt: skip

    canary = json.loads(env.ok("devices", "list", "--group", "canary", "--json"))
    assert [d["name"] for d in canary] == ["gw-000", "gw-001", "gw-002"]
    shown = json.loads(env.ok("devices", "show", canary[0]["uuid"], "--json"))
    assert {"uuid", "name", "hardware_id", "tag", "group", "current_target", "last_seen"} <= set(
        shown
    )
    assert (shown["group"], shown["tag"], shown["current_target"]) == ("canary", "production", None)
    env.ok("devices", "move", canary[0]["uuid"], "--group", "us-east-1")
    moved = json.loads(env.ok("devices", "show", canary[0]["uuid"], "--json"))
    assert moved["group"] == "us-east-1"
    env.ok("devices", "move", canary[0]["uuid"], "--group", "canary")
    env.refused("devices", "show", "00000000-0000-0000-0000-000000000000",
                message="no device with uuid")  # fmt: skip


# -- waves ----------------------------------------------------------------------------------------
def _init_wave(env: Env, *args: str) -> str:
    out = env.ok("wave", "init", *args)
    request_lines = [line for line in out.splitlines() if line.startswith("request: ")]
    assert len(request_lines) == 1, out
    return request_lines[0].removeprefix("request: ")


def _sign_and_import(env: Env, request_id: str, name: str, **gpg_env: str) -> None:
    exported = env.work / f"{request_id}.request.json"
    env.ok("requests", "export", request_id, "--out", str(exported), "--full", **gpg_env)
    response = env.work / f"{request_id}.response.json"
    response.write_bytes(
        offline_response(exported.read_bytes(), [env.offline], known=env.signed_before)
    )
    out = env.ok("requests", "import", str(response))
    assert f"wave {name} is active" in out


def _sign_and_import_by_qr(env: Env, request_id: str, name: str) -> None:
    """Both directions as QR images: a delta request out, the response back (zbar reads)."""
    out_dir = env.work / f"{request_id}-qr"
    env.ok("requests", "export", request_id, "--qr-png", str(out_dir))
    frames = sorted(str(p) for p in out_dir.glob("frame-*.png"))
    assert 1 <= len(frames) <= 3  # a delta against production fits in a few frames
    request_bytes = read_qr_images(frames)
    assert SigningRequest.from_bytes(request_bytes).payload("wave").delta is not None
    response = offline_response(request_bytes, [env.offline], known=env.signed_before)
    back_dir = env.work / f"{request_id}-response-qr"
    assert len(export_qr(response, png_dir=back_dir)) == 1  # a response is one frame
    images = [str(p) for p in back_dir.glob("frame-*.png")]
    out = env.ok("requests", "import", "--qr-images", *images)
    assert f"wave {name} is active" in out


def test_the_seed_story_through_the_cli(env: Env) -> None:
    request_id = first_request = _init_wave(env, "populate-targets", "12", "production")
    listed = json.loads(env.ok("requests", "list", "--json"))
    assert {"id": request_id, "purpose": "wave", "status": "pending"}.items() <= next(
        r for r in listed if r["id"] == request_id
    ).items()
    env.refused("wave", "rollout", "populate-targets", "canary", message="awaiting signatures")
    operator = make_gpg_identity(env.work / "gnupg", "Oscar Operator")
    gpg_env = {"GNUPGHOME": str(operator.home), "WAVESIGN_OPERATOR_GPG_KEY": operator.fingerprint}
    _sign_and_import(env, request_id, "populate-targets", **gpg_env)
    exported = SigningRequest.from_bytes((env.work / f"{request_id}.request.json").read_bytes())
    assert exported.operator_signature is not None
    verified = GnuPG(operator.home).verify_detached(
        exported.signing_bytes(), exported.operator_signature
    )
    assert verified.fingerprint == operator.fingerprint
    env.ok("wave", "complete", "populate-targets")
    production = json.loads(env.ok("targets", "list", "--production", "production", "--json"))
    assert [entry["name"] for entry in production] == [f"{HW}-lmp-12"]

    env.refused("wave", "cancel", "populate-targets",
                message="a completed wave cannot be canceled")  # fmt: skip
    env.refused("wave", "init", "w", "12", "production",
                message="Cannot create a Wave for a version lower than or equal")  # fmt: skip
    env.refused("wave", "init", "w", "99", "production", message="No targets found for version 99")
    env.refused("wave", "init", "w", "42", "production", "--prune", "42",
                message="Cannot prune current version")  # fmt: skip

    request_id = _init_wave(env, "v2.0-update", "42", "production")
    env.refused("wave", "init", "other", "42", "production",
                message="wave v2.0-update is still open")  # fmt: skip
    _sign_and_import_by_qr(env, request_id, "v2.0-update")
    out = env.ok("wave", "rollout", "v2.0-update", "canary")
    assert out.splitlines()[0] == "A Wave is being rolled out to 3 devices in group canary."
    out = env.ok("wave", "rollout", "v2.0-update", "--group", "us-east-1", "--limit", "2",
                 "--print-uuids")  # fmt: skip
    lines = out.splitlines()
    assert lines[0] == "A Wave is being rolled out to 2 devices in group us-east-1."
    assert len(lines[1:]) == 2
    shown = json.loads(env.ok("wave", "show", "v2.0-update", "--json"))
    assert (shown["name"], shown["version"], shown["tag"], shown["status"]) == (
        "v2.0-update", 42, "production", "active",
    )  # fmt: skip
    assert [(r["group"], r["devices"], r["full_group"]) for r in shown["rollouts"]] == [
        ("canary", 3, True),
        ("us-east-1", 2, False),
    ]
    text = env.ok("wave", "show", "v2.0-update")
    assert "Rollout history:" in text and "all devices in group canary" in text
    waves = json.loads(env.ok("wave", "list", "--json"))
    assert [(w["name"], w["status"]) for w in waves] == [
        ("populate-targets", "complete"),
        ("v2.0-update", "active"),
    ]
    env.ok("wave", "complete", "v2.0-update")
    production = json.loads(env.ok("targets", "list", "--production", "production", "--json"))
    assert sorted(e["name"] for e in production) == [f"{HW}-lmp-12", f"{HW}-lmp-42"]
    env.refused("wave", "rollout", "v2.0-update", "canary", message="is complete")
    # The first wave's response again: a no-op that says so, and changes nothing.
    first_response = env.work / f"{first_request}.response.json"
    before = env.dump()
    replay = env.ok("requests", "import", str(first_response))
    assert replay.strip() == (
        f"this response for request {first_request} was imported already: nothing changed"
    )
    assert env.dump() == before


def test_a_rolled_out_wave_is_canceled_and_stays_canceled(env: Env) -> None:
    env.ok(
        "targets", "add", f"{HW}-lmp-43", "--version", "43", "--hardware-id", HW,
        "--sha256", "43" * 32, "--length", "4343",
    )  # fmt: skip
    request_id = _init_wave(env, "v2.1-update", "43", "production", "--expires-days", "30")
    _sign_and_import(env, request_id, "v2.1-update")
    uuids_file = env.work / "two-canaries.txt"
    uuids_file.write_text("\n".join(_canary_uuids(env)[:2]) + "\n")
    out = env.ok("wave", "rollout", "v2.1-update", "--uuids", f"@{uuids_file}", "--dry-run")
    assert out.splitlines()[0] == "A Wave would be rolled out to 2 devices."
    env.ok("wave", "cancel", "v2.1-update")
    canceled = json.loads(env.ok("wave", "list", "--status", "canceled", "--json"))
    assert [(w["name"], w["version"], w["tag"]) for w in canceled] == [
        ("v2.1-update", 43, "production")
    ]
    assert json.loads(env.ok("wave", "show", "v2.1-update", "--json"))["rollouts"] == []
    env.refused("wave", "cancel", "v2.1-update", message="canceled already")
    env.refused("wave", "complete", "v2.1-update", message="only an active wave")


def _canary_uuids(env: Env) -> list[str]:
    return [d["uuid"] for d in json.loads(env.ok("devices", "list", "--group", "canary", "--json"))]


def test_one_line_errors_without_a_server_or_a_data_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run_cli("server", "run", "--data", str(missing))
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {missing} is not a wavesign data folder: run `wavesign server init` first\n"
    )
    result = run_cli("groups", "list", url="http://127.0.0.1:9", token="wsk_x")
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot reach the broker at http://127.0.0.1:9")
    assert len(result.stderr.splitlines()) == 1
    result = run_cli("wave", "rollout", "w", "--limit", "0", url="http://127.0.0.1:9", token="t")
    assert result.returncode == 1 and "A limit must be at least 1 device" in result.stderr


# -- root and renewal ---------------------------------------------------------------------------
def test_root_show_and_the_restore_endpoint(env: Env) -> None:
    shown = json.loads(env.ok("root", "show", "--json", token=env.auditor))
    assert shown["signed"]["_type"] == "root" and shown["signed"]["version"] == 1
    assert json.loads(env.ok("root", "show", "--version", "1", "--json")) == shown
    text = env.ok("root", "show")
    assert "Root version: 1" in text and "targets: threshold 2" in text
    env.refused("root", "show", "--version", "7", message="no root version 7")
    env.refused("root", "propose", message="may not do this", token=env.auditor)
    keys = OnlineKeys(env.data)
    restored = signed_root_bytes(
        CryptoSigner.generate_ed25519(),
        keys.public_key("targets"),
        env.offline.public_key,
        version=2,
        snapshot=keys.public_key("snapshot"),
        timestamp=keys.public_key("timestamp"),
    )
    before = env.dump()
    for token, status in ((env.operator, 403), (env.admin, 400)):
        answer = httpx.post(
            env.url + "/api/v1/roots", content=restored,
            headers={"Authorization": f"Bearer {token}"},
        )  # fmt: skip
        assert answer.status_code == status, answer.text
    # Root v2 from elsewhere must still be signed by root v1's keys.
    assert "is not signed by a threshold of root v1's root keys" in answer.json()["detail"]
    assert env.dump() == before


def test_production_renew_through_the_cli(env: Env) -> None:
    env.refused("production", "renew", "nowhere", message="tag nowhere has no production targets")
    env.ok(
        "targets", "add", f"{HW}-lmp-7", "--version", "7", "--hardware-id", HW,
        "--sha256", "07" * 32, "--length", "77", "--tag", "renewals",
    )  # fmt: skip
    _sign_and_import(env, _init_wave(env, "renewals-7", "7", "renewals"), "renewals-7")
    env.ok("wave", "complete", "renewals-7")
    out = env.ok("production", "renew", "renewals", "--expires-days", "90")
    request_id = next(ln for ln in out.splitlines() if ln.startswith("request: "))[9:]
    assert json.loads(env.ok("requests", "show", request_id, "--json"))["purpose"] == "renew"
    exported = env.work / f"{request_id}.request.json"
    env.ok("requests", "export", request_id, "--out", str(exported))
    request = SigningRequest.from_bytes(exported.read_bytes())
    assert request.purpose.confirmation_text() == "renew-renewals"
    response = env.work / f"{request_id}.response.json"
    assert request.payload("renew").delta is not None  # a delta against production
    response.write_bytes(
        offline_response(exported.read_bytes(), [env.offline], known=env.signed_before)
    )
    out = env.ok("requests", "import", str(response))
    assert "production targets of tag renewals renewed: version 3" in out
    listed = json.loads(env.ok("targets", "list", "--production", "renewals", "--json"))
    assert [entry["name"] for entry in listed] == [f"{HW}-lmp-7"]
