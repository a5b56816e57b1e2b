"""The registry API run alone (``twinchain api serve``) in front of a real miner.

One real miner process (the test harness) and one real standalone API process
(``python -m registry.cli api serve --miner ... --listen 127.0.0.1:<free port>``) for the
whole module. Twins use the SDK against the API's URL only; the answers are compared with
the miner's own. The last test stops the miner. One test puts the API in front of a
hostile stand-in for a miner (a small HTTP server that lies about a blob's bytes and fails
JSON-RPC with HTTP 500), to show what the API does when the miner cannot be trusted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.messages import encode_defunct

from node.blobs import ArtifactDigest, BlobStore
from node.pki import load_keystore, read_password
from registry.api.remote import create_standalone_app
from registry.client import TwinClient
from tests.network.harness import REPO, Network, running_network
from tests.registry.conftest import LiveServer

pytestmark = pytest.mark.timeout(300)


@dataclass
class Setup:
    """The miner network, the standalone API's URL and its artifact cache."""

    net: Network
    api: str
    cache: Path
    proc: subprocess.Popen[bytes]

    def client(self, account: str, cache: Path, url: str | None = None) -> TwinClient:
        info = next(a for a in self.net.layout.accounts if a.name == account)
        key = load_keystore(info.keystore, read_password(info.password_file, None))
        return TwinClient.from_key(url or self.api, key, cache_dir=cache / account)

    def auth(self, account: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.net.token(0, account)}"}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_serving(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the API exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(url + "/v1/openapi.json", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the API did not start:\n{log.read_text()}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("standalone")
    with running_network(root / "net", nodes=1) as net:
        port = _free_port()
        cache = root / "api-cache"
        log = root / "api.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "registry.cli",
                    "api",
                    "serve",
                    "--miner",
                    net.url(0),
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--cache-dir",
                    str(cache),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_serving(url, proc, log)
            yield Setup(net, url, cache, proc)
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _error(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json()["error"]
    return response.status_code, body["code"], body["message"]


def _register(setup: Setup, tmp: Path, name: str, size: int) -> Any:
    weights = tmp / f"{name}.bin"
    weights.write_bytes(os.urandom(size))
    with setup.client("publisher-0", tmp / "sdk") as publisher:
        return publisher.register_model(name, weights, alias="production")


# ---------------------------------------------------------------- the SDK through the API


def test_model_is_registered_and_warm_started_through_the_standalone_api(
    setup: Setup, tmp_path: Path
) -> None:
    version = _register(setup, tmp_path, "link-quality", 3 * 1024 * 1024 + 17)
    assert version.aliases == ("production",)
    with setup.client("twin-0", tmp_path / "sdk") as twin:
        path = twin.warm_start("link-quality", "production")  # digest read with eth_call
        assert ArtifactDigest(hashlib.sha256(path.read_bytes()).digest()) == version.digest
        assert twin.warm_start("link-quality", "production") == path  # cached by digest
    # the API's answer is the miner's, proof points included
    record = "/v1/models/link-quality/versions/production"
    via_api = httpx.get(setup.api + record, headers=setup.auth("auditor-0"), timeout=30)
    via_miner = httpx.get(setup.net.url(0) + record, headers=setup.auth("auditor-0"), timeout=30)
    assert via_api.status_code == 200
    assert via_api.json() == via_miner.json()
    assert via_api.json()["proof"]["block_height"] >= 1


def test_errors_are_the_miners_own(setup: Setup, tmp_path: Path) -> None:
    good = setup.net.token(0, "auditor-0")
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    unknown_blob = f"/v1/blobs/sha256:{'0' * 64}"
    cases: list[tuple[str, str, dict[str, str], bytes | None]] = [
        ("GET", "/v1/models", {}, None),  # no token
        ("GET", "/v1/models", {"Authorization": "Basic abc"}, None),
        ("GET", "/v1/models", {"Authorization": f"Bearer {forged}"}, None),
        ("GET", "/v1/models", {"Authorization": "Bearer tc1.e30.AAAA"}, None),
        ("GET", "/v1/models/no-such-model", setup.auth("auditor-0"), None),
        ("GET", "/v1/models/no-such-model/versions/production", setup.auth("auditor-0"), None),
        ("GET", unknown_blob, setup.auth("auditor-0"), None),
        ("GET", "/v1/blobs/sha256:ABC", setup.auth("auditor-0"), None),
        # an auditor only reads: uploading is 403 with the same reason
        ("PUT", f"/v1/blobs/{ArtifactDigest.of(b'x')}", setup.auth("auditor-0"), b"x"),
        # a body that does not hash to the digest in the URL: 400, nothing stored
        ("PUT", f"/v1/blobs/{ArtifactDigest.of(b'y')}", setup.auth("twin-1"), b"z"),
        ("POST", "/v1/transactions", setup.auth("twin-1"), b'{"raw": "0x01"}'),
    ]
    for method, path, headers, body in cases:
        answers = [
            httpx.request(method, base + path, headers=headers, content=body, timeout=30)
            for base in (setup.net.url(0), setup.api)
        ]
        miner, api = (_error(a) for a in answers)
        assert api == miner, (method, path)
        assert api[0] in (400, 401, 403, 404), (method, path, api)
    for refused in (b"x", b"y", b"z"):  # nothing was stored by the refused uploads
        probe = httpx.head(
            f"{setup.net.url(0)}/v1/blobs/{ArtifactDigest.of(refused)}",
            headers=setup.auth("auditor-0"),
            timeout=30,
        )
        assert probe.status_code == 404


def test_a_replayed_challenge_is_refused_through_the_api_as_on_the_miner(setup: Setup) -> None:
    account = setup.net.account("twin-2")
    challenge = httpx.post(
        setup.api + "/v1/auth/challenge", json={"address": account.address}, timeout=30
    )
    assert challenge.status_code == 200
    signature = account.sign_message(encode_defunct(text=challenge.json()["message"])).signature
    body = {"address": account.address, "signature": "0x" + bytes(signature).hex()}
    first = httpx.post(setup.api + "/v1/auth/token", json=body, timeout=30)
    assert first.status_code == 200
    token = first.json()["token"]
    # the token the API handed out is the miner's: valid at the miner itself
    ok = httpx.get(
        setup.net.url(0) + "/v1/chain", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert ok.status_code == 200
    replayed = httpx.post(setup.api + "/v1/auth/token", json=body, timeout=30)
    assert _error(replayed)[:2] == (401, "unauthorized")
    assert "challenge" in _error(replayed)[2]


# ---------------------------------------------------------------- blobs


def test_blob_download_is_verified_cached_and_ranged_like_on_the_miner(
    setup: Setup, tmp_path: Path
) -> None:
    version = _register(setup, tmp_path, "cached-model", 2 * 1024 * 1024 + 5)
    url = f"{setup.api}/v1/blobs/{version.digest}"
    headers = setup.auth("twin-0")
    cached = setup.cache / "sha256" / version.digest.hex[:2] / version.digest.hex[2:]
    assert not cached.exists()
    first = httpx.get(url, headers=headers, timeout=30)
    assert first.status_code == 200
    assert ArtifactDigest.of(first.content) == version.digest
    assert first.headers["etag"] == f'"{version.digest}"'
    assert first.headers["repr-digest"].startswith("sha-256=:")
    assert cached.is_file()  # verified on the way through, stored by digest
    second = httpx.get(url, headers=headers, timeout=30)  # from the cache
    assert second.content == first.content
    assert second.headers["etag"] == first.headers["etag"]
    ranged = httpx.get(url, headers={**headers, "Range": "bytes=10-19"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == first.content[10:20]
    assert ranged.headers["content-range"] == f"bytes 10-19/{version.size}"
    head = httpx.head(url, headers=headers, timeout=30)
    assert head.status_code == 200 and head.headers["content-length"] == str(version.size)

    # the cached copy modified on disk is never served as valid
    cached.chmod(0o644)
    with cached.open("r+b") as f:
        f.seek(version.size // 2)
        byte = f.read(1)
        f.seek(version.size // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    corrupt = httpx.get(url, headers=headers, timeout=30)
    assert _error(corrupt) == (500, "storage_error", f"blob {version.digest} is corrupt on disk")
    # and the SDK through the API refuses it too, leaving nothing in its own cache
    with setup.client("twin-1", tmp_path / "sdk") as twin:
        with pytest.raises(Exception, match=r"corrupt|hash"):
            twin.warm_start("cached-model", "production")
        assert not (twin.cache_dir / "sha256" / version.digest.hex).exists()
    cached.unlink()  # repaired: fetched again from the miner, verified
    again = httpx.get(url, headers=headers, timeout=30)
    assert again.status_code == 200 and ArtifactDigest.of(again.content) == version.digest


def test_json_rpc_is_relayed_with_the_clients_token(setup: Setup) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
    refused = httpx.post(setup.api + "/", json=body, timeout=30)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == -32001
    answered = httpx.post(setup.api + "/", json=body, headers=setup.auth("auditor-0"), timeout=30)
    assert answered.status_code == 200 and int(answered.json()["result"], 16) >= 1


def test_docs_are_served(setup: Setup) -> None:
    docs = httpx.get(setup.api + "/docs", timeout=30, follow_redirects=True)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = httpx.get(setup.api + "/v1/openapi.json", timeout=30).json()
    miner_schema = httpx.get(setup.net.url(0) + "/v1/openapi.json", timeout=30).json()
    assert schema["paths"].keys() == miner_schema["paths"].keys()


# ---------------------------------------------------------------- the miner goes away


def test_a_miner_that_is_down_is_a_clear_503(setup: Setup) -> None:
    token = setup.net.token(0, "auditor-0")
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(setup.api + "/v1/models", headers=headers, timeout=30).status_code == 200
    setup.net.stop(0)
    for method, path, body in [
        ("GET", "/v1/models", None),
        ("GET", f"/v1/blobs/sha256:{'1' * 64}", None),
        ("POST", "/v1/auth/challenge", b'{"address": "0x' + b"11" * 20 + b'"}'),
        ("POST", "/v1/transactions", b'{"raw": "0x01"}'),
    ]:
        answer = httpx.request(method, setup.api + path, headers=headers, content=body, timeout=30)
        status, code, message = _error(answer)
        assert (status, code) == (503, "miner_unavailable"), (path, message)
        assert setup.net.url(0) in message and "unreachable" in message
        assert answer.headers["retry-after"] == "5"
    assert setup.proc.poll() is None  # the API itself keeps running


# ---------------------------------------------------------------- a miner that lies or fails


def _lying_miner(payload: bytes) -> Any:
    """Accepts every token, serves ``payload`` under any digest, fails other JSON-RPC."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    async def rpc(request: Request) -> Response:
        body = await request.json()
        if body["method"] == "eth_blockNumber":
            return JSONResponse({"jsonrpc": "2.0", "id": body["id"], "result": "0x5"})
        return PlainTextResponse("boom", status_code=500)

    async def blob(request: Request) -> Response:
        return Response(payload, headers={"ETag": f'"{request.path_params["digest"]}"'})

    return Starlette(routes=[Route("/", rpc, methods=["POST"]), Route("/v1/blobs/{digest}", blob)])


def _token() -> str:
    claims = {"v": 1, "cid": 1, "sub": "0x" + "11" * 20, "roles": 4, "iat": 0, "exp": 2**40}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"tc1.{payload}.AAAA"


def test_bytes_a_miner_corrupts_never_complete_a_download_and_its_failures_are_502(
    tmp_path: Path,
) -> None:
    wanted = ArtifactDigest.of(b"the real artifact")
    lying = os.urandom(2 * 1024 * 1024)  # not the bytes of `wanted`
    miner = LiveServer(_lying_miner(lying))
    miner.start()
    cache = BlobStore(tmp_path / "cache", max_blob_bytes=2**30)
    api = LiveServer(create_standalone_app(miner.url, cache))
    api.start()
    try:
        headers = {"Authorization": f"Bearer {_token()}"}
        received = bytearray()
        with (
            pytest.raises(httpx.HTTPError),
            httpx.stream(
                "GET", f"{api.url}/v1/blobs/{wanted}", headers=headers, timeout=30
            ) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-length"] == str(len(lying))
            for chunk in response.iter_raw():
                received += chunk
        assert len(received) < len(lying)  # the last chunk was withheld
        assert not cache.has(wanted) and cache.list() == []

        failing = httpx.get(f"{api.url}/v1/models", headers=headers, timeout=30)
        status, code, message = _error(failing)
        assert (status, code) == (502, "bad_gateway")
        assert miner.url in message and "HTTP 500" in message
    finally:
        api.stop()
        miner.stop()


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--miner", "localhost:8545"], "expected an http(s):// URL"),
        (["--miner", "http://127.0.0.1:1", "--listen", "8600"], "expected HOST:PORT"),
        (["--miner", "http://127.0.0.1:1", "--listen", "h:99999"], "expected HOST:PORT"),
        (["--miner", "http://127.0.0.1:1", "--tls-cert", "x.pem"], "--tls-cert and --tls-key"),
        (["--miner", "http://127.0.0.1:1", "--ca-cert", "/nonexistent"], "not a readable file"),
    ],
)
def test_api_serve_refuses_bad_options_with_exit_code_2(args: list[str], complaint: str) -> None:
    from typer.testing import CliRunner

    from registry.cli import app

    result = CliRunner().invoke(app, ["api", "serve", *args])
    assert result.exit_code == 2
    text = "".join(ch for ch in result.output if ch not in "│╭╮╰╯─")  # rich's box
    assert complaint in " ".join(text.split())
