"""The seed story end to end: a real broker, the operator CLI, and a real appliance.

Everything runs as separate processes, as in the field: ``wavesign server run`` on a
free port, the ``wavesign`` CLI against it, and ``wavesign-offline`` on its own home
with its own GnuPG keyring. Requests cross by USB file and by QR images; the broker
and the appliance share nothing but those files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.gpghelpers import GpgIdentity
from tests.online_support import ci_entry, live_server, run_cli
from tests.pg_harness import PgCluster, pg_cluster_fixture  # noqa: F401 (fixture pg_cluster)

OFFLINE = str(Path(sys.executable).with_name("wavesign-offline"))
PASSPHRASE = "seed story passphrase"
HARDWARE_IDS = ("intel-corei7-64", "raspberrypi4-64")


class Story:
    """The operator's and the officer's terminals, side by side."""

    def __init__(
        self, tmp: Path, url: str, token: str, operator: GpgIdentity, officer: GpgIdentity
    ) -> None:
        self.tmp = tmp
        self.url = url
        self.token = token
        self.usb = tmp / "usb"
        self.usb.mkdir()
        self.operator_env = {
            "GNUPGHOME": str(operator.home),
            "WAVESIGN_OPERATOR_GPG_KEY": operator.fingerprint,
        }
        self.officer_env = dict(
            os.environ,
            WAVESIGN_OFFLINE_HOME=str(tmp / "appliance"),
            WAVESIGN_OFFLINE_PASSPHRASE=PASSPHRASE,
            WAVESIGN_OFFLINE_SCRYPT_N="1024",
            GNUPGHOME=str(officer.home),
        )
        self.officer_fpr = officer.fingerprint
        (tmp / "operator.asc").write_text(operator.public_key)

    def op(self, *args: str) -> str:
        result = run_cli(*args, url=self.url, token=self.token, extra_env=self.operator_env)
        assert result.returncode == 0, f"wavesign {' '.join(args)}: {result.stderr}"
        return result.stdout

    def op_json(self, *args: str) -> Any:
        return json.loads(self.op(*args, "--json"))

    def officer(self, *args: str) -> str:
        result = subprocess.run(
            [OFFLINE, *args], capture_output=True, text=True, env=self.officer_env,
            stdin=subprocess.DEVNULL, check=False, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, f"wavesign-offline {' '.join(args)}: {result.stderr}"
        return result.stdout

    @staticmethod
    def request_id(output: str) -> str:
        lines = [line for line in output.splitlines() if line.startswith("request: ")]
        assert lines, output
        return lines[0].removeprefix("request: ").strip()

    def set_up_appliance(self) -> None:
        self.officer("init", "--officer-gpg-key", self.officer_fpr)
        self.officer("keys", "generate", "--role", "root")
        self.officer("keys", "generate", "--role", "targets")
        self.officer("operators", "add", str(self.tmp / "operator.asc"))

    def sign_by_file(self, request_id: str, confirm: str, *extra: str) -> None:
        request_file = self.usb / f"{request_id}.request.json"
        response_file = self.usb / f"{request_id}.response.json"
        self.op("requests", "export", request_id, "--out", str(request_file), *extra)
        review = self.officer("review", str(request_file))
        assert confirm in review
        self.officer("sign", str(request_file), "--confirm", confirm, "--out", str(response_file))
        self.op("requests", "import", str(response_file))

    def sign_by_qr(self, request_id: str, confirm: str) -> None:
        frames = self.usb / f"{request_id}-qr"
        answer = self.usb / f"{request_id}-answer-qr"
        self.op("requests", "export", request_id, "--qr-png", str(frames))
        images = sorted(str(p) for p in frames.glob("*.png") if "sheet" not in p.name)
        assert images
        self.officer("sign", "--qr-images", *images, "--confirm", confirm, "--qr-png", str(answer))
        answers = sorted(str(p) for p in answer.glob("*.png") if "sheet" not in p.name)
        assert len(answers) == 1, "a response must fit in one QR frame"
        self.op("requests", "import", "--qr-images", *answers)

    def root_ceremony(self) -> None:
        request_id = self.request_id(self.op("root", "propose"))
        self.sign_by_file(request_id, "root-v1")
        root = self.op_json("root", "show")
        assert root["signed"]["version"] == 1
        assert root["signed"]["roles"]["targets"]["threshold"] == 2

    def register_fleet(self) -> dict[str, str]:
        entries = {
            f"{hw}-lmp-{version}": ci_entry(version, hw, sha_byte=f"{version:02x}"[-2:])
            for version in (12, 42)
            for hw in HARDWARE_IDS
        }
        ci_file = self.tmp / "ci-targets.json"
        ci_file.write_text(json.dumps({"signed": {"_type": "targets", "targets": entries}}))
        self.op("targets", "add", "--from-json", str(ci_file))
        devices = {}
        for group in ("canary", "us-east-1"):
            self.op("groups", "create", group)
            for n in range(2):
                name = f"{group}-{n}"
                made = self.op_json(
                    "devices", "register", name, "--hardware-id", HARDWARE_IDS[n],
                    "--tag", "production", "--group", group,
                )  # fmt: skip
                devices[name] = made["uuid"]
        return devices

    def wave(self, name: str) -> dict[str, Any]:
        shown: dict[str, Any] = self.op_json("wave", "show", name)
        return shown

    def production_names(self) -> set[str]:
        listed = self.op_json("targets", "list", "--production", "production")
        return {entry["name"] for entry in listed}

    def populate(self) -> None:
        request_id = self.request_id(
            self.op("wave", "init", "populate-targets", "12", "production")
        )
        assert self.wave("populate-targets")["status"] == "awaiting-signatures"
        self.sign_by_qr(request_id, "populate-targets")
        assert self.wave("populate-targets")["status"] == "active"
        self.op("wave", "complete", "populate-targets")
        assert self.production_names() == {f"{hw}-lmp-12" for hw in HARDWARE_IDS}

    def start_update(self) -> None:
        request_id = self.request_id(self.op("wave", "init", "v2.0-update", "42", "production"))
        self.sign_by_file(request_id, "v2.0-update")  # a delta against production by default
        assert self.wave("v2.0-update")["status"] == "active"
        out = self.op("wave", "rollout", "v2.0-update", "canary")
        assert "A Wave is being rolled out to 2 devices in group canary." in out

    def renew(self) -> None:
        """`production renew`: the same targets, a higher version, signed by the appliance."""
        before = self.op_json("targets", "list", "--production", "production")
        out = self.op("production", "renew", "production", "--expires-days", "200")
        request_id = self.request_id(out)
        self.sign_by_file(request_id, "renew-production")
        shown = self.op_json("requests", "show", request_id)
        assert (shown["purpose"], shown["status"]) == ("renew", "signed")
        # Above W (3) and R (4) of v2.0-update: the tag's counter, not the CI build.
        assert shown["payloads"][0]["version"] == 5
        assert self.op_json("targets", "list", "--production", "production") == before


def _play(tmp: Path, operator: GpgIdentity, officer: GpgIdentity, db: str | None, cancel: bool):
    data = tmp / "data"
    init = ["server", "init", "--data", str(data), "--factory", "acme"]
    if db is not None:
        init += ["--db", db]
    result = run_cli(*init)
    assert result.returncode == 0, result.stderr
    token = (data / "admin.token").read_text().strip()
    with live_server(data) as url:
        story = Story(tmp, url, token, operator, officer)
        story.set_up_appliance()
        story.root_ceremony()
        story.register_fleet()
        story.populate()
        story.start_update()
        if cancel:
            story.op("wave", "cancel", "v2.0-update")
            assert story.wave("v2.0-update")["status"] == "canceled"
            assert story.production_names() == {f"{hw}-lmp-12" for hw in HARDWARE_IDS}
            refused = run_cli("wave", "complete", "v2.0-update", url=url, token=token)
            assert refused.returncode == 1 and refused.stderr.startswith("error: ")
        else:
            out = story.op("wave", "rollout", "v2.0-update", "us-east-1")
            assert "2 devices in group us-east-1" in out
            story.op("wave", "complete", "v2.0-update")
            shown = story.wave("v2.0-update")
            assert shown["status"] == "complete"
            assert len(shown["rollouts"]) == 2
            assert story.production_names() == {
                f"{hw}-lmp-{v}" for hw in HARDWARE_IDS for v in (12, 42)
            }
            refused = run_cli("wave", "cancel", "v2.0-update", url=url, token=token)
            assert refused.returncode == 1 and refused.stderr.startswith("error: ")
            if db is None:
                story.renew()
        journal = story.officer("journal", "verify")
        assert journal.startswith("journal intact: ")


@pytest.mark.parametrize("cancel", [False, True], ids=["complete", "cancel"])
def test_seed_story_on_sqlite(
    tmp_path: Path, operator_gpg: GpgIdentity, officer_gpg: GpgIdentity, cancel: bool
) -> None:
    _play(tmp_path, operator_gpg, officer_gpg, None, cancel)


@pytest.mark.parametrize("cancel", [False, True], ids=["complete", "cancel"])
def test_seed_story_on_postgres(
    tmp_path: Path,
    operator_gpg: GpgIdentity,
    officer_gpg: GpgIdentity,
    pg_cluster: PgCluster,
    cancel: bool,
) -> None:
    _play(tmp_path, operator_gpg, officer_gpg, pg_cluster.new_database(), cancel)
