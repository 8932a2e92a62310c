"""On a terminal the officer is asked: the passphrase twice, the confirmation typed."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from wavesign.shared.bundles import SigningResponse

from tests.test_offline_support import PASSPHRASE, SCRYPT_N, make_rig

EXE = str(Path(sys.executable).with_name("wavesign-offline"))


class Terminal:
    """A child process whose stdin and stderr are a pseudo-terminal; stdout is a pipe."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [EXE, *args],
            stdin=slave,
            stderr=slave,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.seen = b""

    def expect(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"never saw {text!r}; saw {self.seen!r}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    self.seen += os.read(self.master, 4096)
                except OSError:
                    break
        assert text.encode() in self.seen, self.seen
        self.seen = self.seen.split(text.encode(), 1)[1]

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def finish(self) -> tuple[int, str]:
        out, _ = self.process.communicate(timeout=30)
        os.close(self.master)
        return self.process.returncode, out.decode()


def test_passphrase_is_asked_twice_and_must_match(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {
        "PATH": "/usr/bin:/bin",
        "WAVESIGN_OFFLINE_HOME": str(home),
        "WAVESIGN_OFFLINE_SCRYPT_N": str(SCRYPT_N),
    }
    subprocess.run([EXE, "init"], env=env, check=True, capture_output=True)
    term = Terminal(["keys", "generate", "--role", "targets", "--json"], env)
    term.expect("New key passphrase:")
    term.type("first try")
    term.expect("Repeat the passphrase:")
    term.type("first typo")
    term.expect("do not match")
    term.expect("New key passphrase:")
    term.type("s3cret phrase")
    term.expect("Repeat the passphrase:")
    term.type("s3cret phrase")
    code, out = term.finish()
    assert code == 0
    assert json.loads(out)["role"] == "targets"
    assert b"s3cret" not in term.seen  # hidden input is not echoed


def test_sign_on_a_terminal_shows_the_review_and_asks(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    path = rig.write_request(rig.signed_wave(rig.production()))
    env = dict(rig.env, PATH="/usr/bin:/bin")
    del env["WAVESIGN_OFFLINE_PASSPHRASE"]
    out_file = tmp_path / "response.json"
    term = Terminal(["sign", str(path), "--out", str(out_file)], env)
    term.expect("+ board0-lmp-42")
    term.expect("Type 'v2.0-update' to sign:")
    term.type("v2.0-update")
    term.expect("Key passphrase:")
    term.type(PASSPHRASE)
    code, _ = term.finish()
    assert code == 0
    response = SigningResponse.from_bytes(out_file.read_bytes().strip())
    assert [e.payload for e in response.signatures] == ["wave", "revert"]
