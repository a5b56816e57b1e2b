"""Fixtures for the registry tests: a real single-node chain (automine) with a blob store,
served by the registry API in-process (TestClient) or over real HTTP (uvicorn thread).

Each test gets its own chain and store (cheap: the genesis is built once per session).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_hash.auto import keccak
from fastapi import FastAPI
from fastapi.testclient import TestClient

from contracts import MODEL_REGISTRY_ADDRESS
from node.auth import AuthService
from node.blobs import BlobStore
from node.chain.genesis import GenesisState, build_genesis, parse_genesis
from node.consensus.messages import Signer
from node.rpc.local import LocalNodeView
from node.rpc.server import create_rpc_app
from registry.api.app import create_registry_app, mount
from registry.api.contract import encode_call

CHAIN_ID = 7312
NODE_NAME = "registry-test"
SECRET = b"registry test token secret, 32 bytes"
MAX_BLOB = 1 << 20


@dataclass(frozen=True)
class Key:
    """A deterministic test account."""

    private: bytes

    @property
    def address(self) -> str:
        """EIP-55 address."""
        return str(Account.from_key(self.private).address)

    @property
    def lower(self) -> str:
        """Lowercase 0x address (as the API prints addresses)."""
        return self.address.lower()


def key(label: str) -> Key:
    """The test key named ``label``."""
    return Key(keccak(b"twinchain registry test key " + label.encode()))


MINER = key("miner")  # the single validator: MINER
ADMIN = key("admin")
PUBLISHER = key("publisher")
TWINS = [key(f"twin{i}") for i in range(3)]
AUDITOR = key("auditor")
OUTSIDER = key("outsider")  # no role


class ManualClock:
    """Real time plus an offset a test may move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="session")
def genesis() -> GenesisState:
    """One validator, the registry contracts, one member of each role."""
    funded = [MINER, ADMIN, PUBLISHER, *TWINS, AUDITOR, OUTSIDER]
    doc: dict[str, Any] = {
        "chain_id": CHAIN_ID,
        "timestamp": 1_767_225_600,
        "consensus": {"engine": "pbft", "epoch_length": 1000},
        "validators": [MINER.address],
        "admins": [ADMIN.address],
        "roles": {
            PUBLISHER.address: ["PUBLISHER"],
            AUDITOR.address: ["AUDITOR"],
            **{t.address: ["TWIN"] for t in TWINS},
        },
        "balances": {k.address: str(10**24) for k in funded},
    }
    return build_genesis(parse_genesis(doc))


@dataclass
class Env:
    """One test's node, token service, blob store and apps."""

    node: LocalNodeView
    auth: AuthService
    blobs: BlobStore
    clock: ManualClock
    app: FastAPI
    client: TestClient
    tokens: dict[str, str]

    def token(self, account: Key) -> str:
        """A bearer token for ``account`` (signed in through the API, cached)."""
        if account.address not in self.tokens:
            self.tokens[account.address] = sign_in(self.client, account)
        return self.tokens[account.address]

    def headers(self, account: Key) -> dict[str, str]:
        """The Authorization header of ``account``."""
        return {"Authorization": f"Bearer {self.token(account)}"}

    def raw_tx(self, account: Key, function: str, *args: Any, nonce: int | None = None) -> str:
        """A signed ModelRegistry transaction, hex."""
        if nonce is None:
            nonce = self.node.next_nonce(bytes.fromhex(account.address[2:]))  # type: ignore[arg-type]
        tx = {
            "to": MODEL_REGISTRY_ADDRESS,
            "data": encode_call(function, *args),
            "gas": 5_000_000,
            "maxFeePerGas": 0,
            "maxPriorityFeePerGas": 0,
            "nonce": nonce,
            "chainId": CHAIN_ID,
            "type": 2,
        }
        return "0x" + bytes(Account.sign_transaction(tx, account.private).raw_transaction).hex()

    def send(self, account: Key, function: str, *args: Any, expect: int = 200) -> dict[str, Any]:
        """Submit through ``POST /v1/transactions?wait=true``; assert the status."""
        response = self.client.post(
            "/v1/transactions",
            params={"wait": "true"},
            json={"raw": self.raw_tx(account, function, *args)},
            headers=self.headers(account),
        )
        assert response.status_code == expect, response.text
        body: dict[str, Any] = response.json()
        return body

    def upload(self, account: Key, data: bytes) -> str:
        """PUT a blob; returns its digest."""
        from node.blobs import ArtifactDigest

        digest = str(ArtifactDigest.of(data))
        response = self.client.put(
            f"/v1/blobs/{digest}", content=data, headers=self.headers(account)
        )
        assert response.status_code in (200, 201), response.text
        return digest


def sign_in(client: TestClient, account: Key) -> str:
    """Challenge, personal_sign, token — through the REST API."""
    message = client.post("/v1/auth/challenge", json={"address": account.address}).json()
    signature = Account.sign_message(
        encode_defunct(text=message["message"]), account.private
    ).signature
    reply = client.post(
        "/v1/auth/token", json={"address": account.address, "signature": "0x" + signature.hex()}
    )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["token"])


def _open_env(
    genesis: GenesisState, tmp_path: Path
) -> tuple[LocalNodeView, AuthService, BlobStore, ManualClock]:
    node = LocalNodeView.open(
        tmp_path / "chain.db", genesis, Signer(MINER.private), name=NODE_NAME, automine=True
    )
    clock = ManualClock()
    auth = AuthService(SECRET, node.roles_of, chain_id=CHAIN_ID, node_name=NODE_NAME, clock=clock)
    blobs = BlobStore(tmp_path / "blobs", max_blob_bytes=MAX_BLOB)
    return node, auth, blobs, clock


@pytest.fixture
def env(genesis: GenesisState, tmp_path: Path) -> Iterator[Env]:
    """A fresh chain + blob store behind the standalone registry app (TestClient)."""
    node, auth, blobs, clock = _open_env(genesis, tmp_path)
    app = create_registry_app(node, auth, blobs=blobs, max_wait_seconds=5)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Env(node, auth, blobs, clock, app, client, {})
    node.close()


class LiveServer:
    """uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Serve, and wait until the socket accepts."""
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


@dataclass
class Live:
    """A node served like a miner serves it: JSON-RPC on ``/``, the API under ``/v1``."""

    node: LocalNodeView
    auth: AuthService
    blobs: BlobStore
    url: str


@pytest.fixture
def live(genesis: GenesisState, tmp_path: Path) -> Iterator[Live]:
    """The miner's app layout (create_rpc_app + mount) over real HTTP."""
    node, auth, blobs, _ = _open_env(genesis, tmp_path)
    app = create_rpc_app(node, auth)
    mount(app, node, auth, blobs=blobs, max_wait_seconds=5)
    server = LiveServer(app)
    server.start()
    yield Live(node, auth, blobs, server.url)
    server.stop()
    node.close()


def model_tensors(seed: int = 0) -> dict[str, np.ndarray]:
    """A small float32 model."""
    rng = np.random.default_rng(seed)
    return {
        "dense.weight": rng.standard_normal((8, 4)).astype(np.float32),
        "dense.bias": rng.standard_normal(4).astype(np.float32),
    }
