"""Committed throughput and commit latency of a local 4-miner network (PBFT and DPoS),
side by side with the executor's single-process ceiling measured in the same run, and
the time from killing the proposer to the next committed block.

Prints figures and the machine they ran on; never a test.

    python bench/network.py                      # both engines, 20 s of load each
    python bench/network.py --engines pbft --seconds 30 --window 16

Clients are closed-loop: each of the network's member accounts keeps ``window``
transactions in flight (uploads a 256-byte artifact to a random miner over the REST API,
sends the registration there, waits for every receipt, repeats).
Latency is from send to receipt as the client sees it (receipt polled every 50 ms).
The ceiling is ``Executor.build_block`` + ``commit`` of the same kind of transaction in
this process, which is what one miner must do per block; the goal from the issue is
network throughput >= 60% of ceiling x cores / miners.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from eth_utils import to_checksum_address
from web3 import Web3

from contracts import MODEL_REGISTRY_ADDRESS, load_artifact
from node.chain.executor import Executor
from node.chain.genesis import build_genesis, load_genesis
from node.chain.store import ChainStore
from tests.network.harness import Network

REGISTRY = Web3().eth.contract(
    address=to_checksum_address(MODEL_REGISTRY_ADDRESS), abi=load_artifact("ModelRegistry").abi
)


def dataset_tx(
    acct: Any, nonce: int, chain_id: int, tag: str, digest: bytes | None = None, size: int = 1024
) -> bytes:
    data = REGISTRY.encode_abi(
        "registerDataset",
        [f"bench-{tag}", digest or os.urandom(32), size, "application/octet-stream", b"\x00" * 32],
    )
    tx = {
        "to": REGISTRY.address,
        "data": data,
        "nonce": nonce,
        "gas": 400_000,
        "maxFeePerGas": 0,
        "maxPriorityFeePerGas": 0,
        "chainId": chain_id,
        "type": 2,
        "value": 0,
    }
    return bytes(acct.sign_transaction(tx).raw_transaction)


def ceiling(net: Network, accounts: list[Any], block_size: int = 70, blocks: int = 5) -> float:
    """tx/s of build_block + commit, single process, on the network's own genesis."""
    genesis = load_genesis(net.layout.genesis)
    with tempfile.TemporaryDirectory() as tmp:
        store = ChainStore.open(Path(tmp) / "c.db", build_genesis(genesis))
        ex = Executor(store)
        nonces = [0] * len(accounts)
        elapsed = 0.0
        for b in range(blocks):
            txs = []
            for k in range(block_size):
                i = k % len(accounts)
                txs.append(dataset_tx(accounts[i], nonces[i], genesis.chain_id, f"c{b}-{k}"))
                nonces[i] += 1
            head = store.head()
            t = time.perf_counter()
            result = ex.build_block(
                head,
                txs,
                timestamp=head.timestamp + 1,
                proposer=genesis.validators[0],
                epoch=0,
                validator_set_hash=genesis.validator_set_hash,
            )
            ex.commit(result, b"")
            elapsed += time.perf_counter() - t
            assert not result.rejected, result.rejected[:2]
        store.close()
    return block_size * blocks / elapsed


def load(net: Network, accounts: list[Any], seconds: float, window: int) -> dict[str, float]:
    chain_id = net.layout.chain_id
    urls = [net.url(i) for i in range(len(net.layout.miners))]
    token = net.token(0, "publisher-0")  # may upload artifacts and read
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    committed = [0]

    def client(idx: int, acct: Any) -> None:
        rng = random.Random(idx)
        http = httpx.Client(timeout=30, headers={"Authorization": f"Bearer {token}"})
        nonce = int(
            http.post(
                urls[0],
                json={
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "eth_getTransactionCount",
                    "params": [acct.address, "latest"],
                },
            ).json()["result"],
            16,
        )
        while time.monotonic() < stop_at:
            sent: list[tuple[str, float]] = []
            for _ in range(window):
                url = rng.choice(urls)
                blob = os.urandom(256)  # a miner orders a registration only if it holds it
                digest = hashlib.sha256(blob).digest()
                http.put(f"{url}/v1/blobs/sha256:{digest.hex()}", content=blob)
                raw = dataset_tx(acct, nonce, chain_id, f"{idx}-{nonce}", digest, len(blob))
                r = http.post(
                    url,
                    json={
                        "jsonrpc": "2.0",
                        "id": 1,
                        "method": "eth_sendRawTransaction",
                        "params": ["0x" + raw.hex()],
                    },
                ).json()
                if "result" in r:
                    sent.append((r["result"], time.monotonic()))
                    nonce += 1
            for tx_hash, t0 in sent:
                while True:
                    r = http.post(
                        urls[0],
                        json={
                            "jsonrpc": "2.0",
                            "id": 1,
                            "method": "eth_getTransactionReceipt",
                            "params": [tx_hash],
                        },
                    ).json()
                    if r.get("result"):
                        with lock:
                            latencies.append(time.monotonic() - t0)
                            committed[0] += 1
                        break
                    if time.monotonic() > stop_at + 60:
                        return
                    time.sleep(0.05)

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(i, a)) for i, a in enumerate(accounts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    latencies.sort()
    return {
        "tx_per_s": committed[0] / elapsed,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan"),
        "committed": committed[0],
    }


def kill_proposer_recovery(net: Network) -> float:
    status = net.status(0) or {}
    proposer = str(status.get("proposer", "")).lower()
    victim = next(i for i, m in enumerate(net.layout.miners) if m.address.lower() == proposer)
    others = [i for i in range(4) if i != victim]
    before = max(net.heights(others).values())
    t0 = time.monotonic()
    net.kill(victim)
    while max(net.heights(others).values()) <= before:
        time.sleep(0.02)
    recovery = time.monotonic() - t0
    net.start(victim)
    return recovery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default="pbft,dpos")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--window", type=int, default=16)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}"
    )
    for engine in args.engines.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            net = Network.create(Path(tmp) / "net", nodes=4, engine=engine, twins=7)
            senders = [
                net.account(a.name) for a in net.layout.accounts if a.role in ("TWIN", "PUBLISHER")
            ]
            ceil = ceiling(net, senders)
            try:
                net.start_all()
                net.wait_height(2, timeout=150)
                res = load(net, senders, args.seconds, args.window)
                recovery = kill_proposer_recovery(net)
            finally:
                net.stop_all()
        goal = 0.6 * ceil * (os.cpu_count() or 1) / 4
        print(
            f"{engine}: ceiling {ceil:.0f} tx/s (one process) | network "
            f"{res['tx_per_s']:.1f} tx/s committed ({res['committed']} tx, "
            f"{len(senders)} clients x {args.window} in flight) = "
            f"{res['tx_per_s'] / ceil:.2f} x ceiling (goal {goal:.0f} tx/s = "
            f"0.6 x ceiling x cores/miners) | latency p50 {res['p50_ms']:.0f} ms, "
            f"p99 {res['p99_ms']:.0f} ms | kill proposer -> next block {recovery:.2f} s"
        )


if __name__ == "__main__":
    main()
