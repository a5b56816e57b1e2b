"""Fixtures for the RPC tests: a single-node chain served by a real uvicorn server.

One node and one server per test session (building genesis runs the EVM): tests only
ever *add* blocks, so each one reads heights relative to what it produced itself. The
auth clock is a :class:`ManualClock` so tests can expire tokens without sleeping.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_hash.auto import keccak
from eth_typing import Address, ChecksumAddress
from web3 import Web3

from node.auth import AuthService
from node.chain.genesis import GenesisState, build_genesis, parse_genesis
from node.consensus.messages import Signer
from node.rpc.local import LocalNodeView
from node.rpc.server import create_rpc_app

CHAIN_ID = 7311
NODE_NAME = "miner-test"
SECRET = b"consortium token secret, 32 bytes!"


@dataclass(frozen=True)
class Key:
    """A deterministic test account."""

    private: bytes

    @property
    def address(self) -> ChecksumAddress:
        """Checksummed address."""
        return ChecksumAddress(Account.from_key(self.private).address)

    @property
    def raw_address(self) -> Address:
        """20-byte address."""
        return Address(bytes.fromhex(self.address[2:]))


def key(label: str) -> Key:
    """The test key named ``label``."""
    return Key(keccak(b"twinchain rpc test key " + label.encode()))


VALIDATOR = key("validator")
ADMIN = key("admin")
PUBLISHER = key("publisher")  # PUBLISHER + TWIN
AUDITOR = key("auditor")
OUTSIDER = key("outsider")  # funded, no role


class ManualClock:
    """A clock that follows real time plus an offset tests may move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def genesis_document() -> dict[str, Any]:
    """A one-validator network with the registry contracts."""
    funded = [VALIDATOR, ADMIN, PUBLISHER, AUDITOR, OUTSIDER]
    return {
        "chain_id": CHAIN_ID,
        "timestamp": 1_767_225_600,
        "consensus": {"engine": "pbft", "epoch_length": 1000},
        "validators": [VALIDATOR.address],
        "admins": [ADMIN.address],
        "roles": {PUBLISHER.address: ["PUBLISHER", "TWIN"], AUDITOR.address: ["AUDITOR"]},
        "balances": {k.address: str(10**24) for k in funded},
    }


@pytest.fixture(scope="session")
def genesis() -> GenesisState:
    """The built genesis (Membership, ModelRegistry, Election predeployed)."""
    return build_genesis(parse_genesis(genesis_document()))


@pytest.fixture(scope="session")
def node(
    genesis: GenesisState, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalNodeView]:
    """The single-node chain every RPC test talks to."""
    path: Path = tmp_path_factory.mktemp("rpc") / "chain.db"
    view = LocalNodeView.open(path, genesis, Signer(VALIDATOR.private), name=NODE_NAME)
    yield view
    view.close()


@pytest.fixture(scope="session")
def clock() -> ManualClock:
    """The auth service's clock."""
    return ManualClock()


@pytest.fixture(scope="session")
def auth(node: LocalNodeView, clock: ManualClock) -> AuthService:
    """The node's token service (roles read from Membership at the head)."""
    return AuthService(SECRET, node.roles_of, chain_id=CHAIN_ID, node_name=NODE_NAME, clock=clock)


class LiveServer:
    """A uvicorn server on 127.0.0.1 in a background thread."""

    def __init__(self, app: Any) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", ws="websockets-sansio")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        """HTTP base URL."""
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        """Start serving and wait until the socket accepts requests."""
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


@pytest.fixture(scope="session")
def server(node: LocalNodeView, auth: AuthService) -> Iterator[LiveServer]:
    """The RPC app served over real HTTP (small body limit to test 413 cheaply)."""
    live = LiveServer(create_rpc_app(node, auth, max_body_bytes=256 * 1024))
    live.start()
    yield live
    live.stop()


def sign_in(url: str, account: Key) -> str:
    """Challenge, personal_sign, token: the sign-in flow a client runs."""
    challenge = rpc(url, "twin_authChallenge", [account.address])["result"]["message"]
    signature = Account.sign_message(encode_defunct(text=challenge), account.private).signature
    reply = rpc(url, "twin_authToken", [account.address, "0x" + signature.hex()])
    return str(reply["result"]["token"])


def rpc(url: str, method: str, params: list[Any] | None = None, token: str | None = None) -> Any:
    """One JSON-RPC request over HTTP; the decoded response body."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
    return httpx.post(url, json=body, headers=headers, timeout=30).json()


@pytest.fixture(scope="session")
def token(server: LiveServer) -> str:
    """A bearer token for PUBLISHER."""
    return sign_in(server.url, PUBLISHER)


@pytest.fixture(scope="session")
def w3(server: LiveServer, token: str) -> Web3:
    """web3.py over HTTP with PUBLISHER's token."""
    provider = Web3.HTTPProvider(
        server.url, request_kwargs={"headers": {"Authorization": f"Bearer {token}"}}
    )
    return Web3(provider)


def register_dataset(node: LocalNodeView, account: Key, label: str) -> bytes:
    """Submit ``ModelRegistry.registerDataset`` (it emits DatasetRegistered) and commit
    it; returns the transaction hash."""
    from eth_abi.abi import encode as abi_encode

    selector = keccak(b"registerDataset(string,bytes32,uint256,string,bytes32)")[:4]
    digest = keccak(label.encode())
    args = abi_encode(
        ["string", "bytes32", "uint256", "string", "bytes32"],
        [label, digest, 1, "text/plain", digest],
    )
    tx = {
        "to": "0x0000000000000000000000000000000000007c02",
        "data": selector + args,
        "gas": 1_000_000,
        "maxFeePerGas": 0,
        "maxPriorityFeePerGas": 0,
        "nonce": node.next_nonce(account.raw_address),
        "chainId": CHAIN_ID,
        "type": 2,
    }
    signed = Account.sign_transaction(tx, account.private)
    tx_hash = node.submit_transaction(bytes(signed.raw_transaction))
    node.produce_block()
    return bytes(tx_hash)
