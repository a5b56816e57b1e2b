"""A real chain for the verification tests, built once per test session.

Four PBFT miner processes (tests/network/harness.py) with a 5-block epoch record a small
registry history — a dataset, a model version with an alias, a federated round opened,
fed by two twins and closed by a miner — and a validator change: an admin proposal,
approved k-of-n, revokes miner 3's MINER role, so a later epoch has three validators.
The network is then stopped (SIGTERM) and its files are what the tests verify; tests
tamper only with copies (:func:`copy_miner`).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from web3 import Web3

from contracts import MEMBERSHIP_ADDRESS, ProposalAction, Role, load_artifact
from node.consensus.types import ValidatorSet
from node.pki import load_keystore, read_password
from registry.client import TwinClient
from registry.fl import save_model
from tests.network.harness import Network

EPOCH = 5


@dataclass(frozen=True)
class BuiltChain:
    """The stopped network's files and what was recorded on it."""

    root: Path
    genesis: Path
    data_dirs: tuple[Path, ...]
    chain_id: int
    removed: bytes  # the miner whose MINER role was revoked
    shrunk_epoch: int  # first epoch without it
    model_tx: bytes  # registerModel transaction (alias "production")
    late_tx: bytes  # setAlias "staging", sent after the validator change
    close_tx: bytes  # closeRound transaction
    round_id: int
    head: int


_CACHE: dict[str, BuiltChain] = {}


def _tensors(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "dense.weight": rng.standard_normal((8, 4)).astype(np.float32),
        "dense.bias": rng.standard_normal(4).astype(np.float32),
    }


def _send(net: Network, sender: str, fn: Any) -> Any:
    acct = net.account(sender)
    w3 = net.web3(0, sender)
    tx = fn.build_transaction(
        {
            "from": acct.address,
            "nonce": w3.eth.get_transaction_count(acct.address),
            "gas": 2_000_000,
            "maxFeePerGas": 0,
            "maxPriorityFeePerGas": 0,
            "chainId": net.layout.chain_id,
        }
    )
    h = w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(h, timeout=90, poll_latency=0.2)
    assert receipt["status"] == 1
    return receipt


def _client(net: Network, key: bytes, cache: Path) -> TwinClient:
    return TwinClient.from_key(net.url(0), key, cache_dir=cache)


def build_chain(root: Path) -> BuiltChain:
    """Build (or return the session's) recorded chain under ``root``."""
    if "chain" in _CACHE:
        return _CACHE["chain"]
    net = Network.create(root / "net", nodes=4)
    genesis = json.loads(net.layout.genesis.read_text())
    genesis["consensus"]["epoch_length"] = EPOCH
    net.layout.genesis.write_text(json.dumps(genesis, indent=2))
    try:
        net.start_all()
        net.wait_height(1, timeout=150)
        publisher = _client(net, net.account("publisher-0").key, root / "c-pub")
        model = root / "model.safetensors"
        model.write_bytes(save_model(_tensors(3)))
        version = publisher.register_model("link-quality", model, alias="production")
        assert version.proof is not None
        opened = publisher.open_round(
            "link-quality", "production", min_updates=2, deadline_blocks=200
        )
        for i in range(2):
            twin = _client(net, net.account(f"twin-{i}").key, root / f"c-twin{i}")
            weights = twin.load_tensors(twin.warm_start("link-quality"))
            twin.push_update(
                opened.id,
                {k: v + np.float32(0.01 * (i + 1)) for k, v in weights.items()},
                samples=10,
                base=weights,
            )
        info = net.layout.miners[0]
        miner_key = load_keystore(info.keystore, read_password(info.password_file, None))
        closer = _client(net, miner_key, root / "c-miner")
        result = closer.close_round(opened.id, "fedavg")
        # the validator change: revoke miner 3 (k-of-n admin proposal)
        w3 = net.web3(0)
        membership = w3.eth.contract(
            address=Web3.to_checksum_address(MEMBERSHIP_ADDRESS),
            abi=load_artifact("Membership").abi,
        )
        removed = net.layout.miners[3].address
        created = _send(
            net,
            "admin-0",
            membership.functions.propose(int(ProposalAction.REVOKE_ROLE), removed, int(Role.MINER)),
        )
        proposal = membership.events.ProposalCreated().process_receipt(created)[0].args.proposal_id
        approved = _send(net, "admin-1", membership.functions.approve(proposal))
        # the set of epoch k is read from block (k-1)E: the first boundary at or after the
        # approval block decides the next epoch
        shrunk = -(-approved["blockNumber"] // EPOCH) + 1
        net.wait_height(shrunk * EPOCH + 1, [0, 1, 2], timeout=240)
        # a transaction certified by the shrunk (three-member) set
        late = publisher.set_alias("link-quality", "staging", version.version)
        assert late.aliases
        net.wait_height(shrunk * EPOCH + 3, [0, 1, 2], timeout=240)
    finally:
        net.stop_all()
    data_dirs = tuple(m.data_dir for m in net.layout.miners)
    with sqlite3.connect(data_dirs[0] / "chain.db") as conn:
        head = int(conn.execute("SELECT MAX(height) FROM blocks").fetchone()[0])
        model_tx = _tx_of_event(conn, "ModelVersionRegistered")
        close_tx = _tx_of_event(conn, "RoundClosed")
        late_tx = bytes(
            conn.execute("SELECT hash FROM transactions ORDER BY height DESC LIMIT 1").fetchone()[0]
        )
    built = BuiltChain(
        root=net.layout.root,
        genesis=net.layout.genesis,
        data_dirs=data_dirs,
        chain_id=net.layout.chain_id,
        removed=bytes.fromhex(removed[2:]),
        shrunk_epoch=shrunk,
        model_tx=model_tx,
        late_tx=late_tx,
        close_tx=close_tx,
        round_id=opened.id,
        head=head,
    )
    assert result.round_id == opened.id
    _CACHE["chain"] = built
    return built


def _tx_of_event(conn: sqlite3.Connection, event: str) -> bytes:
    abi = load_artifact("ModelRegistry").abi
    item = next(e for e in abi if e.get("type") == "event" and e["name"] == event)
    signature = f"{event}({','.join(i['type'] for i in item['inputs'])})"
    topic = Web3.keccak(text=signature)
    row = conn.execute(
        "SELECT tx_hash FROM logs WHERE topic0 = ? LIMIT 1", (bytes(topic),)
    ).fetchone()
    assert row is not None, event
    return bytes(row[0])


def copy_miner(built: BuiltChain, dest: Path, miner: int = 0) -> Path:
    """A copy of miner ``miner``'s data directory (chain.db and WAL files) to tamper with."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("chain.db", "chain.db-wal", "chain.db-shm"):
        src = built.data_dirs[miner] / name
        if src.exists():
            shutil.copy2(src, dest / name)
    return dest


def flip_byte(
    db: Path,
    sql_select: str,
    params: tuple[Any, ...],
    column: str,
    table: str,
    where: str,
    offset: int = -1,
) -> None:
    """Flip one byte of a stored blob (XOR 0x01 at ``offset``)."""
    with sqlite3.connect(db) as conn:
        value = bytearray(conn.execute(sql_select, params).fetchone()[0])
        value[offset] ^= 0x01
        conn.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (bytes(value), *params))


def vset(epoch: int, members: tuple[bytes, ...]) -> ValidatorSet:
    """A validator set (typing helper)."""
    return ValidatorSet(epoch, members)  # type: ignore[arg-type]
