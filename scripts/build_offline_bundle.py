"""Build the offline wheelhouse that the security officer carries to the air-gapped machine.

    python scripts/build_offline_bundle.py [--out dist/offline-bundle]

The folder holds the wheels of ``wavesign[offline]`` and everything it depends on, a
``requirements.txt`` that pins each wheel by sha256, and ``install.sh``, which makes
a virtualenv and installs with ``pip --no-index --require-hashes``: nothing is
fetched on the air-gapped side, and a wheel altered on the way is refused.

The wheels are built for this machine's platform and Python: build the bundle on a
machine of the same OS, architecture and Python version as the appliance.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

INSTALL_SH = """\
#!/bin/sh
# Installs wavesign-offline and wavesign-audit from this folder, with no network.
# Usage: ./install.sh [VENV_DIR]   (default: ./venv)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-"$here/venv"}
python3 -m venv "$venv"
"$venv/bin/pip" install --no-index --find-links "$here/wheels" --require-hashes \\
    -r "$here/requirements.txt"
echo "installed: $venv/bin/wavesign-offline and $venv/bin/wavesign-audit"
"""


def wheel_name_version(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]
    return name.replace("_", "-").lower(), version


def build(out: Path) -> Path:
    wheels = out / "wheels"
    if out.exists():
        shutil.rmtree(out)
    wheels.mkdir(parents=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels),
         f"{ROOT}[offline]"],
        check=True,
    )  # fmt: skip
    lines = []
    for wheel in sorted(wheels.glob("*.whl")):
        name, version = wheel_name_version(wheel)
        sha256 = hashlib.sha256(wheel.read_bytes()).hexdigest()
        lines.append(f"{name}=={version} --hash=sha256:{sha256}")
    (out / "requirements.txt").write_text("\n".join(lines) + "\n")
    script = out / "install.sh"
    script.write_text(INSTALL_SH)
    script.chmod(0o755)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "offline-bundle")
    out = build(parser.parse_args().out)
    count = len(list((out / "wheels").glob("*.whl")))
    print(f"offline bundle: {out} ({count} wheels, hash-pinned requirements.txt, install.sh)")


if __name__ == "__main__":
    main()
