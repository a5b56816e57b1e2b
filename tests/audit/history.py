"""A known registry history built on a real local network, for the audit tests.

:func:`build_history` drives a running 4-miner PBFT network (real processes, TLS, SQLite)
through the SDK (:class:`registry.client.TwinClient`) and web3.py, and records in an
:class:`Expected` what it did — every transaction hash, its block and sender — so audit
queries can be compared with what really happened:

- dataset ``channels`` v1; model ``link`` v1 (trained on it) with alias ``production``;
- ``link`` v2 (parent v1), ``production`` moved to v2, v1 deprecated;
- round 1 on v2: a dense update (twin-0) and a sparse one (twin-1), closed with fedavg
  → v3; round 2 on v3: twin-1 and twin-2, closed with median → v4;
- ``link`` v5 (parent v4) with alias ``staging``, then revoked ("poisoned"), which
  clears ``staging``; round 3 on v4 opened and cancelled;
- the admins revoke MINER from node-3 (a 2-of-3 proposal): it leaves the validator set
  at the epoch the rule says, which the builder waits for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from eth_account import Account
from web3 import Web3
from web3.logs import DISCARD

from contracts import MEMBERSHIP_ADDRESS, ProposalAction, Role, load_artifact
from node.pki import load_keystore, read_password
from registry.client import TransactionResult, TwinClient
from registry.fl import encode_dense, encode_sparse, save_model
from tests.network.harness import Network

#: Blocks per epoch of the audit network (short, so a validator change lands quickly).
EPOCH = 8
MODEL = "link"
DATASET = "channels"


@dataclass(frozen=True)
class Tx:
    """One committed transaction of the history."""

    tx_hash: str  # 0x-hex, lowercase
    block: int
    block_hash: str
    sender: str  # 0x-hex, lowercase

    @classmethod
    def of(cls, result: TransactionResult, sender: str) -> Tx:
        """From the SDK's result."""
        assert result.status == "committed", result
        assert result.block_height is not None and result.block_hash is not None
        return cls(result.tx_hash.lower(), result.block_height, result.block_hash, sender.lower())


@dataclass
class Expected:
    """What :func:`build_history` did (all addresses lowercase 0x-hex)."""

    genesis: Path
    data_dirs: list[Path]
    accounts: dict[str, str]  # name -> address
    dataset_id: int = 0
    dataset_tx: Tx | None = None
    #: version number -> (global id, registering tx, parents, datasets, round id)
    versions: dict[int, tuple[int, Tx, tuple[int, ...], tuple[int, ...], int]] = field(
        default_factory=dict
    )
    #: (alias, new target id (0 = cleared), previous target id, tx), in chain order
    alias_moves: list[tuple[str, int, int, Tx]] = field(default_factory=list)
    deprecated: tuple[int, str, Tx] | None = None  # (version id, reason, tx)
    revoked: tuple[int, str, Tx] | None = None
    #: round id -> {"base", "open": Tx, "updates": [(update id, twin, samples, digest, kind,
    #: Tx)], "close": Tx | None, "strategy", "result", "included", "cancel": Tx | None}
    rounds: dict[int, dict[str, Any]] = field(default_factory=dict)
    proposal_id: int = 0
    proposal_tx: Tx | None = None
    approval_tx: Tx | None = None
    removed_miner: str = ""
    genesis_validators: list[str] = field(default_factory=list)
    #: first epoch whose set no longer holds ``removed_miner``
    change_epoch: int = 0
    epoch_length: int = EPOCH

    def all_txs(self) -> list[Tx]:
        """Every transaction recorded, in chain order."""
        txs: list[Tx] = []
        if self.dataset_tx:
            txs.append(self.dataset_tx)
        txs += [v[1] for v in self.versions.values()]
        txs += [m[3] for m in self.alias_moves]
        txs += [t[2] for t in (self.deprecated, self.revoked) if t is not None]
        for r in self.rounds.values():
            txs.append(r["open"])
            txs += [u[5] for u in r["updates"]]
            txs += [r[k] for k in ("close", "cancel") if r.get(k) is not None]
        txs += [t for t in (self.proposal_tx, self.approval_tx) if t is not None]
        return sorted(set(txs), key=lambda t: (t.block, t.tx_hash))


def set_epoch_length(net: Network, length: int) -> None:
    """Rewrite the (not yet started) network's genesis with a short epoch."""
    genesis = json.loads(net.layout.genesis.read_text())
    genesis["consensus"]["epoch_length"] = length
    net.layout.genesis.write_text(json.dumps(genesis, indent=2))


def _miner_key(net: Network, i: int) -> bytes:
    miner = net.layout.miners[i]
    return bytes(load_keystore(miner.keystore, read_password(miner.password_file, None)))


def _tensors(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "dense.weight": rng.standard_normal((8, 4)).astype(np.float32),
        "dense.bias": rng.standard_normal(4).astype(np.float32),
    }


def _membership_tx(net: Network, name: str, fn: str, *args: Any) -> tuple[Tx, Any]:
    acct = net.account(name)
    w3 = net.web3(0, name)
    contract = w3.eth.contract(
        address=Web3.to_checksum_address(MEMBERSHIP_ADDRESS), abi=load_artifact("Membership").abi
    )
    tx = getattr(contract.functions, fn)(*args).build_transaction(
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
    receipt: Any = w3.eth.wait_for_transaction_receipt(h, timeout=60, poll_latency=0.2)
    assert receipt.status == 1, f"{fn} reverted"
    record = Tx(
        "0x" + bytes(receipt.transactionHash).hex(),
        int(receipt.blockNumber),
        "0x" + bytes(receipt.blockHash).hex(),
        acct.address.lower(),
    )
    return record, (contract, receipt)


def build_history(net: Network, work: Path) -> Expected:
    """Drive the running ``net`` through the history in the module docstring."""
    url = net.url(0)
    names = ["publisher-0", "twin-0", "twin-1", "twin-2", "admin-0", "admin-1", "auditor-0"]
    accounts = {n: net.account(n).address.lower() for n in names}
    miner_key = _miner_key(net, 0)
    accounts["node-0"] = Account.from_key(miner_key).address.lower()
    genesis_doc = json.loads(net.layout.genesis.read_text())
    expected = Expected(
        genesis=net.layout.genesis,
        data_dirs=[m.data_dir for m in net.layout.miners],
        accounts=accounts,
        genesis_validators=[v.lower() for v in genesis_doc["validators"]],
        epoch_length=int(genesis_doc["consensus"]["epoch_length"]),
    )

    def client(name: str, key: bytes | None = None) -> TwinClient:
        private = key if key is not None else bytes(net.account(name).key)
        return TwinClient.from_key(url, private, cache_dir=work / f"cache-{name}")

    publisher = client("publisher-0")
    pub = accounts["publisher-0"]

    # dataset and the first two versions, with alias moves and a deprecation
    csv = b"rssi,snr\n-70,12\n-64,15\n"
    digest = publisher.upload(csv)
    result = publisher.send("registerDataset", DATASET, digest.raw, len(csv), "text/csv", bytes(32))
    expected.dataset_tx = Tx.of(result, pub)
    expected.dataset_id = int(result.event("DatasetRegistered")["dataset_id"])

    def register(seed: int, parents: list[int], datasets: list[int]) -> int:
        blob = save_model(_tensors(seed))
        d = publisher.upload(blob)
        res = publisher.send(
            "registerModel", MODEL, d.raw, len(blob), "safetensors", parents, datasets, bytes(32)
        )
        args = res.event("ModelVersionRegistered")
        vid = int(args["version_id"])
        expected.versions[int(args["version"])] = (
            vid,
            Tx.of(res, pub),
            tuple(parents),
            tuple(datasets),
            0,
        )
        return vid

    def set_alias(alias: str, vid: int, previous: int) -> None:
        res = publisher.send("setAlias", MODEL, alias, vid)
        expected.alias_moves.append((alias, vid, previous, Tx.of(res, pub)))

    v1 = register(1, [], [expected.dataset_id])
    set_alias("production", v1, 0)
    v2 = register(2, [v1], [expected.dataset_id])
    set_alias("production", v2, v1)
    res = publisher.send("deprecateVersion", v1, "superseded by v2")
    expected.deprecated = (v1, "superseded by v2", Tx.of(res, pub))

    # two federated rounds, closed by a miner
    miner = client("node-0", miner_key)
    twins = {n: client(n) for n in ("twin-0", "twin-1", "twin-2")}

    def run_round(
        base: int, base_seed: int, who: list[tuple[str, bool]], strategy: str
    ) -> tuple[int, int]:
        res = publisher.send("openRound", MODEL, base, 2, publisher.head() + 500)
        rid = int(res.event("RoundOpened")["round_id"])
        entry: dict[str, Any] = {"base": base, "open": Tx.of(res, pub), "updates": []}
        expected.rounds[rid] = entry
        base_tensors = _tensors(base_seed)
        for k, (name, sparse) in enumerate(who):
            deltas = {
                key: (np.float32(0.01 * (k + 1)) * np.ones_like(a)).astype(np.float32)
                for key, a in base_tensors.items()
            }
            deltas["dense.bias"] = deltas["dense.bias"] + np.float32(rid)
            blob = encode_sparse(deltas, k=3) if sparse else encode_dense(deltas)
            twin = twins[name]
            d = twin.upload(blob)
            samples = 10 * (k + 1) + rid
            r = twin.send("pushUpdate", rid, d.raw, len(blob), samples, int(sparse), bytes(32))
            uid = int(r.event("UpdatePushed")["update_id"])
            entry["updates"].append(
                (uid, accounts[name], samples, "0x" + d.hex, int(sparse), Tx.of(r, accounts[name]))
            )
        result_version = miner.close_round(rid, strategy)
        assert result_version.proof is not None
        proof = result_version.proof
        entry["close"] = Tx(
            proof.tx_hash.lower(), proof.block_height, proof.block_hash, accounts["node-0"]
        )
        entry["strategy"] = strategy
        entry["result"] = result_version.id
        entry["included"] = [u[0] for u in entry["updates"]]
        expected.versions[result_version.version] = (
            result_version.id,
            entry["close"],
            (base,),
            (),
            rid,
        )
        return rid, result_version.id

    _, v3 = run_round(v2, 2, [("twin-0", False), ("twin-1", True)], "fedavg")
    _, v4 = run_round(v3, 2, [("twin-1", False), ("twin-2", False)], "median")

    # a poisoned version: registered, aliased, revoked (the alias is cleared on chain)
    v5 = register(5, [v4], [])
    set_alias("staging", v5, 0)
    res = publisher.send("revokeVersion", v5, "poisoned")
    revoke_tx = Tx.of(res, pub)
    expected.revoked = (v5, "poisoned", revoke_tx)
    expected.alias_moves.append(("staging", 0, v5, revoke_tx))

    # a cancelled round
    res = publisher.send("openRound", MODEL, v4, 2, publisher.head() + 500)
    rid = int(res.event("RoundOpened")["round_id"])
    expected.rounds[rid] = {"base": v4, "open": Tx.of(res, pub), "updates": []}
    res = publisher.send("cancelRound", rid, "nobody showed up")
    expected.rounds[rid]["cancel"] = Tx.of(res, pub)

    # a validator change: admin-0 proposes to revoke node-3's MINER role, admin-1 approves
    removed = net.layout.miners[3].address.lower()
    expected.removed_miner = removed
    proposal_tx, (contract, receipt) = _membership_tx(
        net,
        "admin-0",
        "propose",
        int(ProposalAction.REVOKE_ROLE),
        Web3.to_checksum_address(removed),
        int(Role.MINER),
    )
    expected.proposal_tx = proposal_tx
    expected.proposal_id = int(
        contract.events.ProposalCreated()
        .process_receipt(receipt, errors=DISCARD)[0]
        .args.proposal_id
    )
    approval_tx, _ = _membership_tx(net, "admin-1", "approve", expected.proposal_id)
    expected.approval_tx = approval_tx
    # the set of epoch k is read at block (k-1)E: the first boundary at or after the
    # approval block decides the epoch after it
    e = expected.epoch_length
    boundary = -(-approval_tx.block // e) * e
    expected.change_epoch = boundary // e + 1
    net.wait_height(expected.change_epoch * e + 1, miners=[0, 1, 2], timeout=120)
    for c in (publisher, miner, *twins.values()):
        c.close()
    return expected
