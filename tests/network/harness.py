"""Real miner processes on loopback for end-to-end tests.

Every miner is ``python -m registry.cli node start --config node-i.toml`` in its own
process, talking mutual TLS to the others; tests reach them through JSON-RPC with
web3.py, kill them with SIGKILL, restart them, and read their ``/status``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct
from web3 import Web3

from contracts import MODEL_REGISTRY_ADDRESS, load_artifact
from node.init import NetworkLayout, init_network
from node.pki import load_keystore, read_password

REPO = Path(__file__).resolve().parents[2]


def free_port_block(count: int) -> int:
    """A base port such that ``count`` consecutive ports are free right now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base + count > 65000:
            continue
        ok = True
        for p in range(base, base + count):
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port block")


@dataclass
class Network:
    """A local network of miner processes."""

    layout: NetworkLayout
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    @classmethod
    def create(cls, root: Path, nodes: int = 4, engine: str = "pbft", **kw: Any) -> Network:
        base = free_port_block(2 * nodes)
        layout = init_network(
            root,
            nodes=nodes,
            consensus=engine,
            base_p2p_port=base,
            base_rpc_port=base + nodes,
            password="test-password",
            scrypt_n=2,
            **kw,
        )
        return cls(layout)

    # -- processes -------------------------------------------------------------

    def start(self, i: int) -> None:
        miner = self.layout.miners[i]
        log = open(miner.dir / "node.log", "ab")  # noqa: SIM115 - owned by the process
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "registry.cli", "node", "start", "--config", str(miner.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
        )

    def start_all(self) -> None:
        for i in range(len(self.layout.miners)):
            self.start(i)

    def kill(self, i: int) -> None:
        proc = self.procs.pop(i)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self, i: int) -> int:
        proc = self.procs.pop(i)
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            return -9

    def stop_all(self) -> None:
        for i in list(self.procs):
            self.stop(i)

    def log_tail(self, i: int, lines: int = 30) -> str:
        path = self.layout.miners[i].dir / "node.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # -- observation -----------------------------------------------------------

    def url(self, i: int) -> str:
        return "http://" + self.layout.miners[i].rpc

    def status(self, i: int) -> dict[str, Any] | None:
        try:
            r = httpx.get(self.url(i) + "/status", timeout=3)
            return dict(r.json())
        except (httpx.HTTPError, ValueError):
            return None

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.25)
        tails = "\n".join(f"--- node-{i}\n{self.log_tail(i, 8)}" for i in self.procs)
        raise AssertionError(f"timed out waiting for {what}\n{tails}")

    def heights(self, miners: list[int] | None = None) -> dict[int, int]:
        out = {}
        for i in miners if miners is not None else sorted(self.procs):
            s = self.status(i)
            if s is not None:
                out[i] = int(s["height"])
        return out

    def wait_height(
        self, height: int, miners: list[int] | None = None, timeout: float = 60
    ) -> None:
        miners = miners if miners is not None else sorted(self.procs)
        self.wait_for(
            f"height {height} on miners {miners}",
            lambda: (h := self.heights(miners)).keys() == set(miners) and min(h.values()) >= height,
            timeout,
        )

    # -- accounts and clients ---------------------------------------------------

    def account(self, name: str) -> Any:
        info = next(a for a in self.layout.accounts if a.name == name)
        return Account.from_key(
            load_keystore(info.keystore, read_password(info.password_file, None))
        )

    def token(self, i: int, name: str) -> str:
        key = f"{i}:{name}"
        if key not in self.tokens:
            acct = self.account(name)
            challenge = rpc(self.url(i), "twin_authChallenge", [acct.address])["result"]["message"]
            signature = acct.sign_message(encode_defunct(text=challenge)).signature
            reply = rpc(self.url(i), "twin_authToken", [acct.address, "0x" + signature.hex()])
            self.tokens[key] = reply["result"]["token"]
        return self.tokens[key]

    def web3(self, i: int, name: str = "auditor-0") -> Web3:
        headers = {"Authorization": f"Bearer {self.token(i, name)}"}
        return Web3(
            Web3.HTTPProvider(
                self.url(i),
                request_kwargs={"headers": headers, "timeout": 10},
                exception_retry_configuration=None,
            )
        )

    def upload(self, i: int, data: bytes, account: str = "publisher-0") -> bytes:
        """Store ``data`` at miner ``i`` through the REST API; returns its SHA-256."""
        digest = hashlib.sha256(data).digest()
        r = httpx.put(
            f"{self.url(i)}/v1/blobs/sha256:{digest.hex()}",
            content=data,
            headers={"Authorization": f"Bearer {self.token(i, account)}"},
            timeout=30,
        )
        assert r.status_code in (200, 201), r.text
        return digest

    def registry(self, w3: Web3) -> Any:
        return w3.eth.contract(
            address=Web3.to_checksum_address(MODEL_REGISTRY_ADDRESS),
            abi=load_artifact("ModelRegistry").abi,
        )


def rpc(url: str, method: str, params: list[Any], token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    return httpx.post(url, json=body, headers=headers, timeout=10).json()


@contextmanager
def running_network(
    root: Path, nodes: int = 4, engine: str = "pbft", **kw: Any
) -> Iterator[Network]:
    """A started network, stopped (SIGTERM) on exit whatever happens."""
    net = Network.create(root, nodes=nodes, engine=engine, **kw)
    try:
        net.start_all()
        net.wait_height(1, timeout=150)
        yield net
    finally:
        for i in list(net.procs):
            with suppress(Exception):
                net.stop(i)
