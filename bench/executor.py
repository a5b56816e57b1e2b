"""Executor throughput: our executor + durable store against raw py-evm ``mine_all``.

Prints figures and the machine they ran on; never a test, never fails on timing.

    python bench/executor.py                 # blocks of 100 and 500, 3 timed blocks each
    python bench/executor.py --sizes 100 --blocks 8

The workload is ``ModelRegistry.registerModel`` from 50 publishers (each a new digest,
half of them with a parent version, so lineage storage is exercised), as raw signed
EIP-1559 transactions. The same bytes go to all three paths:

- ``ours``     ``Executor.build_block`` on the raw bytes (decoding, sender recovery,
               execution, roots) + ``Executor.commit`` into a SQLite store on disk
               (WAL, synchronous=FULL: one fsync'd transaction per block);
- ``validate`` a second node re-executing ours' blocks: ``validate_block`` + commit;
- ``raw``      py-evm ``MiningChain.mine_all`` on the decoded transactions, stock
               PragueVM, in-memory database (no durability at all).

Timing runs the three paths in one process, block by block, alternating which goes
first, after one untimed warm-up block. ``ours/raw`` is the median over blocks of the
per-block speed ratio: the two timings of a block are seconds apart, so a load change
on a shared machine cancels out. Memory runs each side alone in a fresh process: peak
RSS (ru_maxrss), and for ours the tracemalloc peak of its last block (Python
allocations while building and committing it).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from node.chain.executor import Executor
from node.chain.genesis import build_genesis, default_predeploys, parse_genesis
from node.chain.store import ChainStore
from node.chain.types import REGISTRY_ADDRESS

CHAIN_ID = 7311
GAS_LIMIT = 400_000_000  # room for 500 registrations (~250k gas each) in one block
PUBLISHERS = 50
TX_GAS = 600_000
MAX_FEE = 10**9  # 1 gwei cap, zero tip: free on our chain, accepted by stock London rules
SELECTOR = keccak(b"registerModel(string,bytes32,uint256,string,uint256[],uint256[],bytes32)")[:4]


def keys() -> list[bytes]:
    return [keccak(f"bench publisher {i}".encode()) for i in range(PUBLISHERS)]


def addresses() -> list[str]:
    return [Account.from_key(k).address for k in keys()]


def genesis_document() -> dict[str, Any]:
    publishers = addresses()
    return {
        "chain_id": CHAIN_ID,
        "timestamp": 1_767_225_600,
        "gas_limit": GAS_LIMIT,
        "validators": [publishers[0]],
        "admins": [publishers[0]],
        "roles": {a: ["PUBLISHER"] for a in publishers},
        "balances": {a: str(10**24) for a in publishers},
    }


def workload(block_size: int, blocks: int) -> list[list[bytes]]:
    """``blocks`` lists of ``block_size`` signed registerModel transactions."""
    signers = keys()
    nonces = [0] * PUBLISHERS
    version_of: dict[int, int] = {}  # publisher -> global id of its last version
    next_id = 1
    out = []
    for b in range(blocks):
        txs = []
        for i in range(block_size):
            p = i % PUBLISHERS
            parents = [version_of[p]] if p in version_of and i % 2 else []
            data = SELECTOR + abi_encode(
                ["string", "bytes32", "uint256", "string", "uint256[]", "uint256[]", "bytes32"],
                [
                    f"model-{p}",
                    keccak(f"{block_size}/{b}/{i}".encode()),
                    10_000_000,
                    "safetensors",
                    parents,
                    [],
                    keccak(f"meta/{b}/{i}".encode()),
                ],
            )
            tx = {
                "type": 2,
                "chainId": CHAIN_ID,
                "nonce": nonces[p],
                "gas": TX_GAS,
                "maxFeePerGas": MAX_FEE,
                "maxPriorityFeePerGas": 0,
                "to": to_checksum_address(REGISTRY_ADDRESS),
                "value": 0,
                "data": data,
            }
            txs.append(bytes(Account.sign_transaction(tx, signers[p]).raw_transaction))
            nonces[p] += 1
            version_of[p] = next_id
            next_id += 1
        out.append(txs)
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- the two sides


class Ours:
    """Our executor + durable SQLite store (proposer path: build, then commit)."""

    def __init__(self, workdir: str, name: str = "ours") -> None:
        self.genesis = build_genesis(parse_genesis(genesis_document()))
        self.store = ChainStore.open(Path(workdir) / f"{name}.db", self.genesis)
        self.executor = Executor(self.store)
        self.proposer = bytes.fromhex(addresses()[0][2:])
        self.committed: list[Any] = []

    def block(self, txs: list[bytes]) -> None:
        head = self.store.head()
        result = self.executor.build_block(
            head,
            txs,
            timestamp=head.timestamp + 1,
            proposer=self.proposer,
            epoch=0,
            validator_set_hash=self.genesis.config.validator_set_hash,
        )
        block = self.executor.commit(result, b"seal")
        assert not result.rejected and all(r.status for r in result.receipts), result.rejected
        self.committed.append(block)

    def validate(self, block: Any) -> None:
        """Replica path: re-execute a received block, then commit it."""
        self.executor.commit(self.executor.validate_block(block), block.seal)


class Raw:
    """Stock py-evm: MiningChain (PragueVM) over an in-memory database, mine_all."""

    def __init__(self, workdir: str) -> None:
        from eth.chains.base import MiningChain
        from eth.db.atomic import AtomicDB
        from eth.vm.forks.prague import PragueVM

        config = parse_genesis(genesis_document())
        state: dict[bytes, dict[str, Any]] = {
            address: {"balance": wei, "nonce": 0, "code": b"", "storage": {}}
            for address, wei in config.balances
        }
        predeploys = default_predeploys(config)
        for contract in predeploys:
            state[contract.address] = {
                "balance": 0,
                "nonce": 1,
                "code": contract.runtime_code,
                "storage": {},
            }
        # The predeploys are initialized by ordinary transactions (untimed) from an extra
        # funded account, not one of the publishers, so their nonces match the workload.
        initializer = keccak(b"bench initializer")
        init_address = bytes.fromhex(Account.from_key(initializer).address[2:])
        state[init_address] = {"balance": 10**24, "nonce": 0, "code": b"", "storage": {}}
        chain_class = MiningChain.configure(vm_configuration=((0, PragueVM),), chain_id=CHAIN_ID)
        params = {
            "difficulty": 0,
            "gas_limit": GAS_LIMIT,
            "base_fee_per_gas": 0,
            "timestamp": config.timestamp,
        }
        self.chain = chain_class.from_genesis(AtomicDB(), params, state)
        self.builder = self.chain.get_vm().get_transaction_builder()
        init_txs = []
        for nonce, contract in enumerate(predeploys):
            tx = {
                "type": 2,
                "chainId": CHAIN_ID,
                "nonce": nonce,
                "gas": 30_000_000,
                "maxFeePerGas": MAX_FEE,
                "maxPriorityFeePerGas": 0,
                "to": to_checksum_address(contract.address),
                "value": 0,
                "data": contract.init_calldata,
            }
            raw = bytes(Account.sign_transaction(tx, initializer).raw_transaction)
            init_txs.append(self.builder.decode(raw))
        self.timestamp = config.timestamp + 1
        self.chain.mine_all(init_txs, timestamp=self.timestamp)

    def block(self, txs: list[bytes]) -> None:
        self.timestamp += 1
        decoded = [self.builder.decode(raw) for raw in txs]
        _, receipts, computations = self.chain.mine_all(decoded, timestamp=self.timestamp)
        assert len(receipts) == len(txs) and not any(c.is_error for c in computations)


def throughput(blocks: list[list[bytes]], workdir: str) -> dict[str, float]:
    """All three paths in one process, block by block, rotating which goes first, so a
    load change on a shared machine hits them alike. The replica validates the block
    ours just built. Besides overall tx/s, the median over blocks of the per-block
    speed ratio ours/raw (the two timings of a block are seconds apart)."""
    ours, raw, replica = Ours(workdir), Raw(workdir), Ours(workdir, "replica")
    spent: dict[str, list[float]] = {"ours": [], "raw": [], "validate": []}
    for i, txs in enumerate(blocks):
        steps = [
            ("ours", lambda txs=txs: ours.block(txs)),
            ("validate", lambda: replica.validate(ours.committed[-1])),
            ("raw", lambda txs=txs: raw.block(txs)),
        ]
        if i % 2:  # raw first on odd blocks (validate always follows ours)
            steps = [steps[2], steps[0], steps[1]]
        for name, step in steps:
            start = time.perf_counter()
            step()
            if i > 0:  # the first block warms up each path (lazy imports, caches)
                spent[name].append(time.perf_counter() - start)
    count = sum(len(b) for b in blocks[1:])
    result = {name: count / sum(times) for name, times in spent.items()}
    result["ratio"] = statistics.median(
        r / o for o, r in zip(spent["ours"], spent["raw"], strict=True)
    )
    return result


def memory_ours(blocks: list[list[bytes]], workdir: str) -> dict[str, float]:
    """Peak RSS of a process running only our side, and the tracemalloc peak of the
    last block."""
    ours = Ours(workdir)
    for txs in blocks[:-1]:
        ours.block(txs)
    tracemalloc.start()
    ours.block(blocks[-1])
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return {"rss": peak_rss_mb(), "traced": traced}


def memory_raw(blocks: list[list[bytes]], workdir: str) -> dict[str, float]:
    """Peak RSS of a process running only py-evm's side."""
    raw = Raw(workdir)
    for txs in blocks:
        raw.block(txs)
    return {"rss": peak_rss_mb()}


def _child(
    fn: Callable[..., dict[str, float]], blocks: list[list[bytes]], workdir: str, queue: Any
) -> None:
    queue.put(fn(blocks, workdir))


def in_fresh_process(
    fn: Callable[..., dict[str, float]], blocks: list[list[bytes]]
) -> dict[str, float]:
    """Run ``fn`` in a new interpreter (spawn) so its peak RSS is its own."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    with tempfile.TemporaryDirectory(prefix="twinchain-bench-") as workdir:
        process = context.Process(target=_child, args=(fn, blocks, workdir, queue))
        process.start()
        result: dict[str, float] = queue.get()
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"{fn.__name__} failed (exit code {process.exitcode})")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,500", help="block sizes (comma separated)")
    parser.add_argument("--blocks", type=int, default=3, help="timed blocks per size")
    args = parser.parse_args()
    print(f"# executor throughput - {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"# {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}, "
        f"{platform.platform()}, load average {os.getloadavg()[0]:.1f} at start"
    )
    print("# workload: ModelRegistry.registerModel, 50 publishers, raw EIP-1559 txs\n")
    print(
        f"{'block':>6} {'ours tx/s':>10} {'raw tx/s':>9} {'ours/raw':>9} {'validate tx/s':>14} "
        f"{'ours RSS':>9} {'raw RSS':>8} {'last block traced':>18}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        blocks = workload(size, args.blocks + 1)  # + 1 untimed warm-up block
        speed = in_fresh_process(throughput, blocks)
        ours = in_fresh_process(memory_ours, blocks)
        raw = in_fresh_process(memory_raw, blocks)
        print(
            f"{size:>6} {speed['ours']:>10.0f} {speed['raw']:>9.0f} "
            f"{speed['ratio']:>8.0%} {speed['validate']:>14.0f} "
            f"{ours['rss']:>7.0f}MB {raw['rss']:>6.0f}MB {ours['traced']:>16.1f}MB",
            flush=True,
        )
    print(f"\n# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
