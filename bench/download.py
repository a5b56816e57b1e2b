"""Warm-start download throughput through the registry API, side by side with nginx
serving the same file on loopback in the same run, and the time to a cached warm start.

Prints figures and the machine they ran on; never a test.

    python bench/download.py                    # 10, 100 and 1000 MB
    python bench/download.py --sizes 10,100 --repeat 9

Setup: a one-miner PBFT network (real process, ``tests/network/harness.py``) on
loopback; for each size a publisher registers random bytes as a model through the API.
Only the download is measured, not the replication: with more miners every one of them
serves from its own blob store the same way, so one miner is the honest unit. nginx
(``sendfile on``, one worker, ``daemon off``) serves the very file that was uploaded,
from a temp prefix on a free port, and is stopped at the end.

Rows (each the median of ``--repeat`` interleaved rounds — every round runs each row
once, so load from other work falls on all rows alike; cold client cache for the
transfer rows):

- ``twinchain warm_start``: ``TwinClient.warm_start`` — resolve the version and read its
  digest on chain (``eth_call``), stream ``GET /v1/blobs/<digest>`` into the cache,
  SHA-256 while streaming, compare with the chain; what a twin does.
- ``twinchain GET+sha256``: the same GET with the same client code (the SDK's
  ``stream_into``: httpx stream, SHA-256 and write each chunk as it arrives) without the
  chain look-ups.
- ``nginx GET+sha256``: identical client code against nginx: the reference.
- ``curl`` rows (if curl is installed): ``curl -o /dev/null`` of both servers, so the
  server side is compared without Python's client in the way.
- ``cached warm_start``: ``warm_start`` again with the file in the cache, same client
  (it trusts the file it verified while its fingerprint is unchanged: chain look-ups
  only, no body is transferred);
- ``cached, new client``: the same with a fresh ``TwinClient`` each time (it re-hashes
  the cached file once before trusting it).

The goal is twinchain warm_start >= 70% of nginx GET+sha256 throughput.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from node.pki import load_keystore, read_password
from registry.client import TwinClient, stream_into
from tests.network.harness import Network

MB = 1_000_000


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"Measured {datetime.date.today().isoformat()}, {platform.machine()}, "
        f"{os.cpu_count()} cores (load average {load}), Python {platform.python_version()}, "
        f"httpx {httpx.__version__}, {nginx_version() or 'no nginx'}."
    )


def nginx_version() -> str | None:
    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if exe is None:
        return None
    out = subprocess.run([exe, "-v"], capture_output=True, text=True).stderr.strip()
    return out.replace("nginx version: ", "") or "nginx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """nginx serving ``root`` on a free loopback port, in the foreground of a child."""

    def __init__(self, root: Path, prefix: Path) -> None:
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        self.port = free_port()
        prefix.mkdir(parents=True, exist_ok=True)
        (prefix / "logs").mkdir(exist_ok=True)
        conf = prefix / "nginx.conf"
        # as root, workers would drop to `nobody` and could not read a 0700 temp dir
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
        conf.write_text(
            f"""
daemon off;
{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    types {{ }}
    default_type application/octet-stream;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        root {root};
    }}
}}
"""
        )
        self.proc = subprocess.Popen(
            [exe, "-c", str(conf), "-p", str(prefix)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url("/"), timeout=1)
                return
            except httpx.HTTPError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nginx exited: {self.proc.stderr.read()!r}") from None
                time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def get_sha256(http: httpx.Client, url: str, out: Path, headers: dict[str, str]) -> str:
    """The SDK's client work without the SDK's chain look-ups: its own download loop
    (:func:`registry.client.stream_into`: stream, hash, write)."""
    h = hashlib.sha256()
    with http.stream("GET", url, headers=headers) as r, out.open("wb") as f:
        r.raise_for_status()
        stream_into(r, f, h, limit=2**63)
    return h.hexdigest()


def curl(url: str, headers: dict[str, str]) -> None:
    args = ["curl", "-sSf", "-o", "/dev/null"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    subprocess.run([*args, url], check=True)


def interleaved(
    plan: list[tuple[str, Callable[[], object], Callable[[], None] | None]], repeat: int
) -> list[tuple[str, float]]:
    """Median seconds of each ``(label, fn, before)`` over ``repeat`` rounds; each round
    runs every row once, in order, so that load from other work on the machine falls on
    all rows alike (``before`` is untimed)."""
    times: dict[str, list[float]] = {label: [] for label, _, _ in plan}
    for _ in range(repeat):
        for label, fn, before in plan:
            if before is not None:
                before()
            t0 = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
    return [(label, statistics.median(ts)) for label, ts in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000", help="artifact sizes in MB (10^6)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]

    have_nginx = nginx_version() is not None
    have_curl = shutil.which("curl") is not None
    print(machine())
    if not have_nginx:
        print(
            "nginx is not installed: running the TwinChain part alone. For the side-by-side,"
            " install it (Debian/Ubuntu: `apt-get update && apt-get install -y nginx`) and"
            " run again."
        )

    with tempfile.TemporaryDirectory(prefix="twinchain-bench-download-") as tmp_:
        tmp = Path(tmp_)
        files = tmp / "www"
        files.mkdir()
        net = Network.create(tmp / "net", nodes=1)
        nginx: Nginx | None = None
        try:
            net.start_all()
            net.wait_height(1, timeout=120)
            info = next(a for a in net.layout.accounts if a.name == "publisher-0")
            key = load_keystore(info.keystore, read_password(info.password_file, None))
            if have_nginx:
                nginx = Nginx(files, tmp / "nginx")
            http = httpx.Client(timeout=600)
            rows: list[tuple[int, str, float]] = []
            for size_mb in sizes:
                size = size_mb * MB
                name = f"bench-{size_mb}mb"
                source = files / f"{name}.bin"
                with source.open("wb") as f:
                    for off in range(0, size, 64 * MB):
                        f.write(os.urandom(min(64 * MB, size - off)))
                cache = tmp / "cache" / name
                with TwinClient.from_key(net.url(0), key, cache_dir=cache, timeout=600) as twin:
                    t0 = time.perf_counter()
                    version = twin.register_model(name, source)
                    print(
                        f"{size_mb} MB: uploaded and registered in {time.perf_counter() - t0:.1f} s"
                    )
                    auth = twin._headers()
                    blob_url = f"{net.url(0)}/v1/blobs/{version.digest}"
                    cached = cache / "sha256" / version.digest.hex

                    def clear(cached: Path = cached) -> None:
                        cached.unlink(missing_ok=True)

                    def warm(twin: TwinClient = twin, name: str = name) -> None:
                        twin.warm_start(name, "latest")

                    want = version.digest.hex

                    def api(
                        url: str = blob_url, hdr: dict[str, str] = auth, want: str = want
                    ) -> None:
                        assert get_sha256(http, url, tmp / "out.bin", hdr) == want

                    warm()  # warm the OS page cache on both sides, equally

                    def fresh(name: str = name, cache: Path = cache) -> None:
                        with TwinClient.from_key(net.url(0), key, cache_dir=cache) as again:
                            again.warm_start(name, "latest")

                    def fresh_out() -> None:  # every row writes a new file, like the SDK
                        (tmp / "out.bin").unlink(missing_ok=True)

                    plan: list[tuple[str, Callable[[], object], Callable[[], None] | None]] = [
                        ("twinchain warm_start", warm, clear),
                        ("twinchain GET+sha256", api, fresh_out),
                    ]
                    if nginx is not None:
                        ngx_url = nginx.url(f"/{source.name}")

                        def ngx(url: str = ngx_url, want: str = want) -> None:
                            assert get_sha256(http, url, tmp / "out.bin", {}) == want

                        plan.append(("nginx GET+sha256", ngx, fresh_out))
                    if have_curl:

                        def api_curl(url: str = blob_url, hdr: dict[str, str] = auth) -> None:
                            curl(url, hdr)

                        plan.append(("twinchain curl", api_curl, None))
                        if nginx is not None:

                            def ngx_curl(url: str = nginx.url(f"/{source.name}")) -> None:
                                curl(url, {})

                            plan.append(("nginx curl", ngx_curl, None))
                    # the first row of each round left the file in the cache
                    plan.append(("cached warm_start", warm, None))
                    plan.append(("cached, new client", fresh, None))
                    measured = interleaved(plan, args.repeat)
                    for label, seconds in measured:
                        rows.append((size_mb, label, seconds))
                    (tmp / "out.bin").unlink(missing_ok=True)
                source.unlink()  # keep the temp dir small (the miner keeps its copy)
            http.close()
        finally:
            if nginx is not None:
                nginx.stop()
            net.stop_all()

    print()
    print("| size | path | median time | throughput | vs nginx GET+sha256 |")
    print("|---:|---|---:|---:|---:|")
    for size_mb in sizes:
        mine = {label: s for m, label, s in rows if m == size_mb}
        ref = mine.get("nginx GET+sha256")
        for label, seconds in mine.items():
            rate = size_mb / seconds
            if label.startswith("cached"):
                ratio = "(no transfer)"
            elif ref is None:
                ratio = "-"
            elif label.endswith("curl"):
                ratio = (
                    f"{mine.get('nginx curl', 0) / seconds:.0%} of nginx curl"
                    if "nginx curl" in mine
                    else "-"
                )
            else:
                ratio = f"{ref / seconds:.0%}"
            ms = f"{seconds * 1000:,.0f} ms"
            print(f"| {size_mb} MB | {label} | {ms} | {rate:,.0f} MB/s | {ratio} |")


if __name__ == "__main__":
    main()
