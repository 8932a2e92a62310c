"""Benchmark: device polls of ``timestamp.json`` against nginx serving the same bytes.

Run from the repository root (needs the Debian packages ``nginx-light`` and ``wrk``)::

    .venv/bin/python bench/device_polls.py [--duration 10] [--connections 32]

It publishes a production view with ``wavesign.online.publish`` (targets signed by two
keys, online ed25519 snapshot and timestamp keys), writes its ``timestamp.json`` as a
static file, and starts:

- the anchor: nginx, one worker, ``access_log off``, serving that file;
- the device ASGI app (``wavesign.online.device_api``) with one device token, on
  uvicorn (one worker, ``--no-access-log``; with httptools + uvloop when installed,
  and with the pure-Python h11 + asyncio stack for comparison) and on granian when
  installed.

Each server gets ``wrk -t1 -c32 -d10s --latency`` for full bodies and for 304s (an
``If-None-Match`` with the current ETag); it prints req/s, p99 latency and the ratio
server/nginx. The target (``design/architecture.md``) is at least 0.33x nginx.

Not a test: it asserts nothing and prints its figures. The server processes import
``make_app`` from this file, which reads the published view from a pickle.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import os
import pickle
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wavesign.online.device_api import (  # noqa: E402
    REPO_PREFIX,
    DeviceApp,
    DeviceDirectory,
    DeviceEvent,
)
from wavesign.online.publish import PublishedView, publish_view, root_files  # noqa: E402

TOKEN = "wsd_bench-device-token-0123456789abcdef"
VIEW_ENV = "WAVESIGN_BENCH_VIEW"


# --- the app the server processes run ----------------------------------------------------


async def _discard(device: str, events: list[DeviceEvent]) -> None:
    return None


def make_app() -> DeviceApp:
    """ASGI factory for uvicorn/granian: one device, the pickled view of the parent run."""
    import hashlib

    view: PublishedView = pickle.loads(Path(os.environ[VIEW_ENV]).read_bytes())
    directory = DeviceDirectory()
    directory.replace(
        tokens={hashlib.sha256(TOKEN.encode()).hexdigest(): "bench-device"},
        views={"production": view},
        view_of={"bench-device": "production"},
        roots=view.roots,
    )
    return DeviceApp(directory, _discard)


# --- setup -------------------------------------------------------------------------------------


def build_view() -> PublishedView:
    """A production view as the broker publishes it (20 targets; the size is irrelevant)."""
    from tests.test_publish import RepoKeys
    from tests.tuf_repo_server import Release

    keys = RepoKeys.create()
    releases = [Release(f"lmp-{n}", n, ("raspberrypi4-64",)) for n in range(1, 21)]
    return publish_view(
        keys.targets_bytes(20, releases),
        roots=root_files([keys.root_bytes]),
        version=123_456,
        snapshot_signer=keys.snapshot,
        timestamp_signer=keys.timestamp,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(port: int, path: str, headers: dict[str, str]) -> tuple[int, HTTPMessage, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def wait_ready(
    port: int, path: str, headers: dict[str, str], process: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {process.returncode}")
        try:
            if get(port, path, headers)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"server on port {port} did not answer within 20 s")


@contextmanager
def started(
    command: list[str], port: int, path: str, headers: dict[str, str], env: dict[str, str]
) -> Iterator[int]:
    """Run a server until the block ends; yields its pid."""
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        wait_ready(port, path, headers, process)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    types {{ application/json json; }}
    default_type application/json;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/html;
        location / {{ etag on; }}
    }}
}}
"""


@dataclass
class Figures:
    requests_per_second: float
    p99_ms: float
    errors: str
    #: Server CPU time (all its processes) per request: robust to a busy machine.
    cpu_us_per_request: float = 0.0


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and all its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = int(fields[11]) + int(fields[12])  # utime, stime
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(times.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, headers: list[str], duration: int, connections: int, server: int) -> Figures:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    for header in headers:
        command += ["-H", header]
    cpu_before = _cpu_seconds(server)
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    cpu = _cpu_seconds(server) - cpu_before
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", output)
    errors = re.findall(r"(Non-2xx or 3xx responses: \d+|Socket errors: .*)", output)
    if rps is None or p99 is None or total is None:
        raise SystemExit(f"cannot read wrk's output:\n{output}")
    return Figures(
        float(rps.group(1)),
        _ms(p99.group(1), p99.group(2)),
        "; ".join(errors),
        cpu / max(int(total.group(1)), 1) * 1e6,
    )


APP = "bench.device_polls:make_app"


def server_commands(prefix: Path) -> list[tuple[str, list[str], int]]:
    """(name, command, port) of each server to measure; nginx, the anchor, first."""
    has = {name: importlib.util.find_spec(name) is not None for name in ("httptools", "uvloop")}
    has["granian"] = importlib.util.find_spec("granian") is not None
    nginx_port = free_port()
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(prefix=prefix, port=nginx_port))
    nginx = f"nginx -p {prefix} -c {prefix}/nginx.conf -e {prefix}/error.log"
    servers = [("nginx (1 worker, static file)", nginx.split(), nginx_port)]
    python = [sys.executable, "-m"]
    common = "--host 127.0.0.1 --no-access-log --log-level warning"
    stacks = [("h11", "asyncio")]
    if has["httptools"] and has["uvloop"]:
        stacks.insert(0, ("httptools", "uvloop"))
    for parser, loop in stacks:
        port = free_port()
        options = f"--factory {common} --port {port} --http {parser} --loop {loop} {APP}"
        servers.append((f"uvicorn {parser}+{loop}", [*python, "uvicorn", *options.split()], port))
    if has["granian"]:
        port = free_port()
        loop = "uvloop" if has["uvloop"] else "asyncio"
        options = (
            f"--interface asgi --factory {common} --port {port} --workers 1 --no-ws "
            f"--http 1 --loop {loop} {APP}"
        )
        servers.append(("granian asgi", [*python, "granian", *options.split()], port))
    return servers


def measure(
    name: str,
    server: int,
    port: int,
    headers: dict[str, str],
    body: bytes,
    duration: int,
    connections: int,
) -> dict[str, Figures]:
    """wrk against one running server: full bodies, then 304s."""
    path = REPO_PREFIX + "timestamp.json"
    _, response_headers, served = get(port, path, headers)
    etag = response_headers["ETag"]
    if served != body:
        raise SystemExit(f"{name} serves other bytes than the published timestamp")
    if get(port, path, {**headers, "If-None-Match": etag})[0] != 304:
        raise SystemExit(f"{name} does not answer If-None-Match with 304")
    plain = [f"{k}: {v}" for k, v in headers.items()]
    url = f"http://127.0.0.1:{port}{path}"
    return {
        "200": wrk(url, plain, duration, connections, server),
        "304": wrk(url, [*plain, f"If-None-Match: {etag}"], duration, connections, server),
    }


def median_figures(runs: list[Figures]) -> Figures:
    ordered = sorted(runs, key=lambda figure: figure.requests_per_second)
    middle = ordered[len(ordered) // 2]
    errors = "; ".join(figure.errors for figure in runs if figure.errors)
    return Figures(
        middle.requests_per_second,
        statistics.median(f.p99_ms for f in runs),
        errors,
        statistics.median(f.cpu_us_per_request for f in runs),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds over all servers; the median is shown"
    )
    args = parser.parse_args()
    missing = [tool for tool in ("nginx", "wrk") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"missing {', '.join(missing)}: apt-get install -y nginx-light wrk (Debian packages)"
        )

    view = build_view()
    body = view.timestamp.body
    auth = {"Authorization": f"Bearer {TOKEN}"}
    runs: dict[str, dict[str, list[Figures]]] = {}
    with tempfile.TemporaryDirectory(prefix="wavesign-bench-") as tmp:
        prefix = Path(tmp)
        static = prefix / "html" / REPO_PREFIX.strip("/") / "timestamp.json"
        static.parent.mkdir(parents=True)
        (prefix / "tmp").mkdir()
        static.write_bytes(body)
        # nginx workers run as an unprivileged user: let them read the file.
        for folder in [prefix, *static.relative_to(prefix).parents]:
            (prefix / folder).chmod(0o755)
        static.chmod(0o644)
        pickled = prefix / "view.pickle"
        pickled.write_bytes(pickle.dumps(view))
        env = {**os.environ, VIEW_ENV: str(pickled), "PYTHONPATH": str(ROOT)}
        servers = server_commands(prefix)

        print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs")
        print(
            f"timestamp.json: {len(body)} bytes; wrk -t1 -c{args.connections} "
            f"-d{args.duration}s --latency; {args.rounds} round(s), median shown"
        )
        for _ in range(args.rounds):
            for name, command, port in servers:
                headers = {} if name.startswith("nginx") else auth
                with started(command, port, REPO_PREFIX + "timestamp.json", headers, env) as pid:
                    figures = measure(
                        name, pid, port, headers, body, args.duration, args.connections
                    )
                for kind, figure in figures.items():
                    runs.setdefault(name, {}).setdefault(kind, []).append(figure)

    results = {
        name: {kind: median_figures(figures) for kind, figures in kinds.items()}
        for name, kinds in runs.items()
    }
    anchor = results[servers[0][0]]
    print()
    print(
        f"{'server':30} {'kind':4} {'req/s':>8} {'p99 ms':>7} {'x nginx':>7} "
        f"{'CPU us/req':>10} {'x nginx':>7}"
    )
    for name, medians in results.items():
        for kind, figure in medians.items():
            ratio = figure.requests_per_second / anchor[kind].requests_per_second
            # Capacity ratio: nginx's CPU per request over this server's (higher is better).
            cpu_ratio = anchor[kind].cpu_us_per_request / max(figure.cpu_us_per_request, 1e-9)
            note = f"  ({figure.errors})" if figure.errors else ""
            print(
                f"{name:30} {kind:4} {figure.requests_per_second:8,.0f} "
                f"{figure.p99_ms:7.2f} {ratio:7.2f} {figure.cpu_us_per_request:10.1f} "
                f"{cpu_ratio:7.2f}{note}"
            )


if __name__ == "__main__":
    main()
