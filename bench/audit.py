"""Audit benchmark: chain verification throughput, lineage/history latency, index rebuild.

Prints figures and the machine they ran on; never a test, never fails on timing.

    python bench/audit.py            # 10,000 model versions, 100,000 updates, 10,000 heartbeats
    python bench/audit.py --small    # 500 versions, 2,000 updates, 1,000 heartbeats (a minute)

**The chain** is built in this process, without consensus networking, but with nothing
faked that the audit tools read: a 4-validator PBFT genesis; blocks built by
``Executor.build_block`` from raw signed transactions and committed by
``Executor.commit`` into a real :class:`ChainStore` (SQLite, WAL, synchronous=FULL), each
sealed with a real :class:`CommitCertificate` — a COMMIT vote signed by all 4 validator
keys over the block hash. The workload cycles over 100 models: a publisher registers
versions (each the child of the model's previous version), opens a federated round on
the latest one, 100 twins push one update each, and a miner closes the round (its
aggregate is a new version whose parent is the base). Defaults: 10,000 versions (1,000
of them aggregates), 100,000 updates, 500 transactions per block; then 10,000 empty
heartbeat blocks (what an idle network commits). The built chain is cached under the
temp dir keyed by the parameters (``--cache DIR`` to choose; ``--rebuild`` to force).

**Measured** (verification of each range repeated ``--repeat`` times, the median
printed; wall time and this process's CPU time, since the machine may be shared):

- ``audit verify`` (:func:`registry.audit.verify.verify_chain`: hash links, roots, every
  certificate's 4 signatures recovered and checked against the epoch's validator set
  followed from genesis) over the registry blocks and over the heartbeat blocks, in
  blocks/s, next to the *baseline*: reading the same blocks with their transaction and
  log rows from SQLite (``ChainReader.blocks``), and the ratio. Signature-recovery caches
  are cleared before every run, so no run profits from an earlier one;
- index rebuild (:meth:`AuditIndex.rebuild`) from genesis to the head (timed once);
- ``lineage MODEL@VERSION`` and ``history MODEL`` latency over ``--samples`` random
  models/versions (:class:`AuditQueries` on the rebuilt index), p50/p95/max in ms.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

from node.chain.executor import Executor
from node.chain.genesis import build_genesis, parse_genesis
from node.chain.store import ChainStore
from node.chain.types import REGISTRY_ADDRESS
from node.consensus import messages
from node.consensus.certificate import CommitCertificate
from node.consensus.messages import EngineId, Kind, Signer
from node.consensus.types import Address, ValidatorSet

CHAIN_ID = 7313
GAS_LIMIT = 2_000_000_000
TX_GAS = 1_000_000
CLOSE_GAS = 12_000_000
VALIDATORS = 4
PUBLISHERS = 10
#: Bump when the workload changes, so cached chains are not reused.
WORKLOAD_VERSION = 1


@dataclass(frozen=True)
class Params:
    """What the built chain depends on (the cache key)."""

    versions: int
    updates: int
    models: int
    twins: int
    block_txs: int
    heartbeats: int
    epoch_length: int
    workload: int = WORKLOAD_VERSION

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def _key(label: str) -> bytes:
    return keccak(f"bench audit {label}".encode())


def _address(key: bytes) -> str:
    return str(Account.from_key(key).address)


def _abi(signature: str) -> tuple[bytes, list[str]]:
    name, args = signature.split("(", 1)
    types = [t for t in args.rstrip(")").split(",") if t]
    return keccak(f"{name}({','.join(types)})".encode())[:4], types


REGISTER = _abi("registerModel(string,bytes32,uint256,string,uint256[],uint256[],bytes32)")
OPEN = _abi("openRound(string,uint256,uint256,uint256)")
PUSH = _abi("pushUpdate(uint256,bytes32,uint256,uint256,uint256,bytes32)")
CLOSE = _abi("closeRound(uint256,string,uint256[],bytes32,uint256)")


class Keys:
    """Every account of the benchmark network."""

    def __init__(self, params: Params) -> None:
        self.validators = [_key(f"validator {i}") for i in range(VALIDATORS)]
        self.publishers = [_key(f"publisher {i}") for i in range(PUBLISHERS)]
        self.twins = [_key(f"twin {i}") for i in range(params.twins)]

    def genesis(self, params: Params) -> dict[str, Any]:
        validators = [_address(k) for k in self.validators]
        roles: dict[str, list[str]] = {_address(k): ["PUBLISHER"] for k in self.publishers}
        roles.update({_address(k): ["TWIN"] for k in self.twins})
        everyone = validators + list(roles)
        return {
            "chain_id": CHAIN_ID,
            "timestamp": 1_767_225_600,
            "gas_limit": GAS_LIMIT,
            "consensus": {"engine": "pbft", "epoch_length": params.epoch_length},
            "validators": validators,
            "admins": [validators[0]],
            "roles": roles,
            "balances": {a: str(10**24) for a in everyone},
        }


def workload(params: Params, keys: Keys) -> Iterator[bytes]:
    """The signed transactions, in order (see the module docstring)."""
    rounds = params.updates // params.twins
    registered = params.versions - rounds
    if rounds < 1 or registered < params.models:
        raise SystemExit("need updates >= twins and versions - rounds >= models")
    nonces: dict[bytes, int] = {}
    latest: dict[int, int] = {}  # model -> global id of its last version
    next_version, next_update = 1, 1

    def tx(key: bytes, call: tuple[bytes, list[str]], args: list[Any], gas: int = TX_GAS) -> bytes:
        nonce = nonces.get(key, 0)
        nonces[key] = nonce + 1
        body = {
            "type": 2,
            "chainId": CHAIN_ID,
            "nonce": nonce,
            "gas": gas,
            "maxFeePerGas": 0,
            "maxPriorityFeePerGas": 0,
            "to": to_checksum_address(REGISTRY_ADDRESS),
            "value": 0,
            "data": call[0] + abi_encode(call[1], args),
        }
        return bytes(Account.sign_transaction(body, key).raw_transaction)

    per_cycle, extra = divmod(registered, rounds)
    for cycle in range(rounds):
        model = cycle % params.models
        name = f"model-{model:03d}"
        publisher = keys.publishers[model % PUBLISHERS]
        for i in range(per_cycle + (1 if cycle < extra else 0)):
            parents = [latest[model]] if model in latest else []
            digest = keccak(f"version {cycle} {i}".encode())
            yield tx(
                publisher,
                REGISTER,
                [name, digest, 1_000_000, "safetensors", parents, [], keccak(digest)],
            )
            latest[model] = next_version
            next_version += 1
        round_id = cycle + 1
        yield tx(publisher, OPEN, [name, latest[model], params.twins, 2**40])
        first_update = next_update
        for t, twin in enumerate(keys.twins):
            digest = keccak(f"update {cycle} {t}".encode())
            yield tx(twin, PUSH, [round_id, digest, 65_536, 100 + t, 0, keccak(digest)])
            next_update += 1
        included = list(range(first_update, next_update))
        result = keccak(f"aggregate {cycle}".encode())
        yield tx(
            keys.validators[0],
            CLOSE,
            [round_id, "fedavg", included, result, 1_000_000],
            gas=CLOSE_GAS,
        )
        latest[model] = next_version
        next_version += 1


# ---------------------------------------------------------------- building


@dataclass
class Built:
    """A built (or cached) chain."""

    directory: Path
    genesis_path: Path
    data_dir: Path
    workload_head: int
    head: int
    transactions: int
    build_seconds: float


def build(params: Params, directory: Path, say: Callable[[str], None]) -> Built:
    """Build the chain into ``directory`` (or reuse a complete one)."""
    marker = directory / "complete.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        say(f"using the cached chain in {directory}")
        return Built(
            directory,
            directory / "genesis.json",
            directory / "data",
            info["workload_head"],
            info["head"],
            info["transactions"],
            info["build_seconds"],
        )
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "data").mkdir(parents=True)
    keys = Keys(params)
    document = keys.genesis(params)
    (directory / "genesis.json").write_text(json.dumps(document, indent=2))
    genesis = parse_genesis(document)
    store = ChainStore.open(directory / "data" / "chain.db", build_genesis(genesis))
    executor = Executor(store)
    signers = [Signer(k) for k in keys.validators]
    vset = ValidatorSet(0, tuple(Address(s.address) for s in signers))
    start = time.perf_counter()
    say("signing the workload ...")
    txs = list(workload(params, keys))
    say(f"  {len(txs):,} transactions signed in {time.perf_counter() - start:.0f} s")

    def commit(batch: list[bytes]) -> None:
        head = store.head()
        height = head.height + 1
        epoch = height // params.epoch_length
        result = executor.build_block(
            head,
            batch,
            timestamp=head.timestamp + 1,
            proposer=vset.member_at(height),
            epoch=epoch,
            validator_set_hash=vset.hash(),  # membership never changes here
        )
        if result.rejected or not all(r.status for r in result.receipts):
            raise SystemExit(f"block {height}: rejected {result.rejected[:3]}")
        block_hash = result.block.hash()
        votes = [
            s.sign(CHAIN_ID, EngineId.PBFT, Kind.COMMIT, height, 0, block_hash) for s in signers
        ]
        executor.commit(result, CommitCertificate.from_votes(votes).encode())

    for i in range(0, len(txs), params.block_txs):
        commit(txs[i : i + params.block_txs])
        done = min(i + params.block_txs, len(txs))
        if (i // params.block_txs) % 20 == 0 or done == len(txs):
            rate = done / (time.perf_counter() - start)
            say(f"  block {store.head().height}: {done:,}/{len(txs):,} transactions ({rate:.0f}/s)")
    workload_head = store.head().height
    for h in range(params.heartbeats):
        commit([])
        if h % 2000 == 1999:
            say(f"  heartbeat block {store.head().height}")
    head = store.head().height
    store.close()
    seconds = time.perf_counter() - start
    info = {
        "params": asdict(params),
        "workload_head": workload_head,
        "head": head,
        "transactions": len(txs),
        "build_seconds": seconds,
    }
    marker.write_text(json.dumps(info, indent=2))
    return Built(
        directory,
        directory / "genesis.json",
        directory / "data",
        workload_head,
        head,
        len(txs),
        seconds,
    )


def existing(directory: Path) -> Built:
    """A chain directory as it stands now (``genesis.json``, ``data/chain.db``)."""
    uri = f"file:{(directory / 'data' / 'chain.db').resolve()}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        head = int(conn.execute("SELECT MAX(height) FROM blocks").fetchone()[0])
        busy = conn.execute("SELECT MAX(height) FROM blocks WHERE tx_count > 0").fetchone()[0]
        count = int(conn.execute("SELECT COUNT(*) FROM transactions").fetchone()[0])
    return Built(
        directory,
        directory / "genesis.json",
        directory / "data",
        int(busy or 0),
        head,
        count,
        0.0,
    )


# ---------------------------------------------------------------- measuring


def _clear_caches() -> None:
    """Forget memoised signature recoveries and decoded votes (no run helps the next)."""
    messages.recover_signer.cache_clear()
    messages._verify_cached.cache_clear()
    messages._decode_cached.cache_clear()


def _timed(run: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median wall and CPU (this process) seconds of ``repeat`` runs."""
    wall, cpu = [], []
    for _ in range(repeat):
        _clear_caches()
        start, start_cpu = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def measure_verify(built: Built, first: int, last: int, repeat: int) -> dict[str, float]:
    """Verification vs raw reading of heights ``first..last``."""
    from registry.audit.source import MinerData
    from registry.audit.verify import ChainReader, verify_chain

    data = MinerData.open(built.data_dir, built.genesis_path)

    def verify() -> None:
        report = verify_chain(data, first, last)
        if not report.ok:
            raise SystemExit(f"verification failed: {report.failure}")

    def raw() -> None:
        with ChainReader(data.chain_db) as reader:
            count = sum(1 for _ in reader.blocks(first, last))
        assert count == last - first + 1

    blocks = last - first + 1
    verify_s, verify_cpu = _timed(verify, repeat)
    raw_s, raw_cpu = _timed(raw, repeat)
    return {
        "blocks": blocks,
        "verify_blocks_per_s": blocks / verify_s,
        "verify_blocks_per_cpu_s": blocks / verify_cpu,
        "raw_blocks_per_s": blocks / raw_s,
        "raw_blocks_per_cpu_s": blocks / raw_cpu,
        "verify_seconds": verify_s,
        "raw_seconds": raw_s,
    }


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": q[49], "p95": q[94], "max": ordered[-1]}


def measure_index(built: Built, params: Params, samples: int, workdir: Path) -> dict[str, Any]:
    """Index rebuild time, then lineage/history latency on the rebuilt index."""
    from registry.audit.index import AuditIndex
    from registry.audit.queries import AuditQueries
    from registry.audit.source import MinerData

    data = MinerData.open(built.data_dir, built.genesis_path)
    index = AuditIndex(data.chain_db, data.genesis, workdir / "index.db")
    try:
        rebuild_s, rebuild_cpu = _timed(lambda: index.rebuild(to_height=built.head), 1)
        queries = AuditQueries(index)
        counts = index.query("SELECT COUNT(*) FROM versions")[0][0]
        updates = index.query("SELECT COUNT(*) FROM updates")[0][0]
        rng = random.Random(7)
        models = [f"model-{m:03d}" for m in range(params.models)]
        per_model = {
            m: int(index.query("SELECT MAX(version) FROM versions WHERE name = ?", (m,))[0][0])
            for m in models
        }
        lineage_ms, history_ms, sizes = [], [], []
        for _ in range(samples):
            model = rng.choice(models)
            ref = str(rng.randint(1, per_model[model]))
            start = time.perf_counter()
            lineage = queries.lineage(model, ref)
            lineage_ms.append((time.perf_counter() - start) * 1000)
            sizes.append(len(lineage.versions) + len(lineage.updates))
            start = time.perf_counter()
            queries.history(rng.choice(models))
            history_ms.append((time.perf_counter() - start) * 1000)
        latest = []
        for model in models[: min(20, len(models))]:
            start = time.perf_counter()
            big = queries.lineage(model, "latest")
            latest.append((time.perf_counter() - start) * 1000)
        return {
            "indexed_versions": counts,
            "indexed_updates": updates,
            "rebuild_seconds": rebuild_s,
            "rebuild_cpu_seconds": rebuild_cpu,
            "lineage_ms": _percentiles(lineage_ms),
            "lineage_latest_ms": _percentiles(latest),
            "lineage_latest_nodes": len(big.versions) + len(big.updates),
            "lineage_nodes_median": statistics.median(sizes),
            "history_ms": _percentiles(history_ms),
        }
    finally:
        index.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a quick run (about a minute)")
    parser.add_argument("--versions", type=int, default=None)
    parser.add_argument("--updates", type=int, default=None)
    parser.add_argument("--heartbeats", type=int, default=None)
    parser.add_argument("--block-txs", type=int, default=500)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=None, help="where built chains are kept")
    parser.add_argument("--rebuild", action="store_true", help="ignore a cached chain")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument(
        "--measure-dir",
        type=Path,
        default=None,
        help="measure an existing chain directory as it stands (even one still being built)",
    )
    args = parser.parse_args(argv)
    small = args.small
    twins = 20 if small else 100
    params = Params(
        versions=args.versions or (500 if small else 10_000),
        updates=args.updates or (2_000 if small else 100_000),
        models=20 if small else 100,
        twins=twins,
        block_txs=args.block_txs,
        heartbeats=args.heartbeats if args.heartbeats is not None else (1_000 if small else 10_000),
        epoch_length=100,
    )
    cache = args.cache or Path(tempfile.gettempdir()) / "twinchain-bench-audit"
    directory = cache / params.key()
    if args.rebuild and directory.exists():
        shutil.rmtree(directory)

    def say(text: str) -> None:
        print(text, flush=True)

    say(
        f"audit bench {datetime.now(UTC):%Y-%m-%d %H:%M UTC}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}; load average {os.getloadavg()[0]:.1f}"
    )
    say(f"params: {asdict(params)}")
    if args.measure_dir is not None:
        directory = args.measure_dir
        built = existing(directory)
    else:
        built = build(params, directory, say)
    say(
        f"chain: {built.head + 1:,} blocks ({built.workload_head:,} registry blocks, "
        f"{built.head - built.workload_head:,} heartbeats), {built.transactions:,} transactions, "
        f"built in {built.build_seconds:.0f} s; {directory}"
    )
    if args.build_only:
        return
    # The heartbeat range starts at an epoch boundary: verify_chain(from_height=...) in
    # the middle of an epoch does not derive the next epoch's set from the boundary block
    # below the range (reported; a range starting at a boundary is unaffected).
    epoch_length = params.epoch_length
    quiet = -(-(built.workload_head + 1) // epoch_length) * epoch_length
    for label, first, last in (
        ("registry blocks", 0, built.workload_head),
        ("heartbeat blocks", quiet, built.head),
    ):
        if last < first:
            continue
        v = measure_verify(built, first, last, args.repeat)
        say(
            f"verify {label} {first}..{last}: {v['verify_blocks_per_s']:,.0f} blocks/s "
            f"({v['verify_seconds']:.2f} s; {v['verify_blocks_per_cpu_s']:,.0f} per CPU-second); "
            f"raw SQLite read {v['raw_blocks_per_s']:,.0f} blocks/s "
            f"({v['raw_blocks_per_cpu_s']:,.0f} per CPU-second); verify/raw = "
            f"{v['verify_blocks_per_s'] / v['raw_blocks_per_s']:.1%}"
        )
    v = measure_verify(built, 0, built.head, 1)
    say(
        f"verify whole chain 0..{built.head}: {v['verify_blocks_per_s']:,.0f} blocks/s "
        f"({v['verify_seconds']:.2f} s; {v['verify_blocks_per_cpu_s']:,.0f} per CPU-second); "
        f"raw {v['raw_blocks_per_s']:,.0f} blocks/s"
    )
    with tempfile.TemporaryDirectory(prefix="audit-bench-index-") as tmp:
        r = measure_index(built, params, args.samples, Path(tmp))
    say(
        f"index rebuild 0..{built.head}: {r['rebuild_seconds']:.1f} s "
        f"({r['rebuild_cpu_seconds']:.1f} CPU-s) "
        f"({r['indexed_versions']:,} versions, {r['indexed_updates']:,} updates indexed)"
    )
    for name in ("lineage_ms", "lineage_latest_ms", "history_ms"):
        p = r[name]
        say(f"{name[:-3]}: p50 {p['p50']:.1f} ms, p95 {p['p95']:.1f} ms, max {p['max']:.1f} ms")
    say(
        f"lineage size: median {r['lineage_nodes_median']:.0f} versions+updates for a random "
        f"version; {r['lineage_latest_nodes']:,} for the latest version of a model"
    )


if __name__ == "__main__":
    main()
