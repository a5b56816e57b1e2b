"""Replicas (real engines, executors, SQLite stores, mempools) agreeing in one process.

The network is an in-memory pump — this proves the Ready contract is honoured against
real storage; the socket-level daemon has its own tests.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import pytest

from node.chain.genesis import parse_genesis
from node.consensus.messages import Signer
from node.replica import DrainOutput, Replica
from tests.chain.helpers import PUBLISHER, VALIDATORS, genesis_document, register_model


class Cluster:
    """n replicas wired by a loss-free in-memory pump."""

    def __init__(
        self, tmp: Path, engine: str, n: int = 4, epoch_length: int = 100, committee: int = 0
    ) -> None:
        doc = genesis_document()
        doc["validators"] = [k.hex for k in VALIDATORS[:n]]
        doc["consensus"] = {
            **doc["consensus"],
            "engine": engine,
            "epoch_length": epoch_length,
            "committee_size": committee or n,
        }
        self.genesis = parse_genesis(doc)
        self.tmp = tmp
        self.n = n
        self.replicas: list[Replica | None] = [self._start(i) for i in range(n)]
        self.queue: deque[tuple[int, object]] = deque()

    def _start(self, i: int) -> Replica:
        return Replica(self.genesis, self.tmp / f"node-{i}", Signer(VALIDATORS[i].private))

    def crash(self, i: int) -> None:
        replica = self.replicas[i]
        assert replica is not None
        replica.close()
        self.replicas[i] = None

    def restart(self, i: int) -> None:
        self.replicas[i] = self._start(i)

    def _route(self, src: int, out: DrainOutput) -> None:
        index = {r.address: j for j, r in enumerate(self.live()) if r is not None}
        for o in out.messages:
            targets = (
                [j for j in range(self.n) if j != src]
                if o.to is None
                else [index[o.to]]
                if o.to in index
                else []
            )
            for j in targets:
                self.queue.append((j, o.message))
        for req in out.sync:
            for j, peer in enumerate(self.replicas):
                if peer is not None and j != src:
                    self.queue.append((src, peer.committed_blocks(req.from_height)))
                    break

    def live(self) -> list[Replica | None]:
        return self.replicas

    def run(self, ticks: int) -> None:
        for _ in range(ticks):
            for i, r in enumerate(self.replicas):
                if r is not None:
                    self._route(i, r.tick())
            while self.queue:
                j, item = self.queue.popleft()
                r = self.replicas[j]
                if r is None:
                    continue
                out = r.deliver(item) if isinstance(item, list) else r.step(item)  # type: ignore[arg-type]
                self._route(j, out)

    def submit(self, raw: bytes) -> None:
        for r in self.replicas:
            if r is not None:
                r.mempool.add(raw)

    def heads(self) -> list[int]:
        return [r.store.head().height for r in self.replicas if r is not None]


@pytest.fixture(params=["pbft", "dpos"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_replicas_commit_identical_blocks_with_registry_transactions(
    tmp_path: Path, engine: str
) -> None:
    cluster = Cluster(tmp_path, engine)
    for nonce in range(5):
        cluster.submit(register_model(PUBLISHER, nonce, "link-quality", f"v{nonce}"))
    cluster.run(150)
    heights = cluster.heads()
    top = min(heights)
    assert top >= 2, heights
    first = cluster.replicas[0]
    assert first is not None
    for height in range(1, top + 1):
        hashes = {r.store.block_by_height(height).hash() for r in cluster.replicas if r}  # type: ignore[union-attr]
        assert len(hashes) == 1, f"fork at height {height}"
    receipts = [first.store.receipt(tx) for tx in _included(first)]
    assert len(receipts) == 5 and all(r is not None and r.receipt.succeeded for r in receipts)
    for r in cluster.replicas:
        assert r is not None
        block = r.store.block_by_height(top)
        assert block is not None
        r.verify_seal(block)  # every committed block carries a valid certificate


def _included(replica: Replica) -> list[bytes]:
    hashes: list[bytes] = []
    for h in range(1, replica.store.head().height + 1):
        block = replica.store.block_by_height(h)
        assert block is not None
        hashes.extend(block.tx_hashes)
    return hashes


def test_restarted_replica_catches_up_and_agrees(tmp_path: Path, engine: str) -> None:
    cluster = Cluster(tmp_path, engine)
    cluster.run(40)
    cluster.crash(3)
    for nonce in range(3):
        cluster.submit(register_model(PUBLISHER, nonce, "twin", f"r{nonce}"))
    cluster.run(120)
    cluster.restart(3)
    cluster.run(200)
    heights = cluster.heads()
    assert min(heights) >= 3 and max(heights) - min(heights) <= 2, heights
    common = min(heights)
    hashes = {r.store.block_by_height(common).hash() for r in cluster.replicas if r}  # type: ignore[union-attr]
    assert len(hashes) == 1


def _election_call(signature: str, types: list[str], args: list[object]) -> bytes:
    from eth_abi.abi import encode as abi_encode
    from eth_hash.auto import keccak

    return bytes(keccak(signature.encode())[:4]) + abi_encode(types, args)


def test_dpos_committee_elected_in_the_election_contract_takes_over_at_an_epoch_boundary(
    tmp_path: Path,
) -> None:
    from node.chain.types import ELECTION_ADDRESS
    from tests.chain.helpers import sign

    epoch, seats = 10, 3
    cluster = Cluster(tmp_path, "dpos", epoch_length=epoch, committee=seats)
    for i, key in enumerate(VALIDATORS[:4]):
        cluster.submit(
            sign(key, 0, ELECTION_ADDRESS, _election_call("registerCandidate()", [], []))
        )
        del i
    voter = PUBLISHER
    cluster.submit(
        sign(voter, 0, ELECTION_ADDRESS, _election_call("stake()", [], []), value=10**18)
    )
    backed = [VALIDATORS[3].address, VALIDATORS[2].address, VALIDATORS[1].address]
    cluster.submit(
        sign(voter, 1, ELECTION_ADDRESS, _election_call("vote(address[])", ["address[]"], [backed]))
    )
    cluster.run(400)
    first = cluster.replicas[0]
    assert first is not None
    head = first.store.head().height
    elected_epoch = next(
        (
            e
            for e in range(2, head // epoch + 1)
            if (vs := first.validator_set(e)) is not None and vs.n == seats
        ),
        None,
    )
    assert elected_epoch is not None, f"no elected committee by height {head}"
    vset = first.validator_set(elected_epoch)
    assert vset is not None and set(vset.members) == set(backed)
    assert head >= elected_epoch * epoch + 2, "the elected committee must keep committing"
    block = first.store.block_by_height(elected_epoch * epoch + 1)
    assert block is not None
    first.verify_seal(block)  # certified by the elected three
    common = min(cluster.heads())
    assert len({r.store.block_by_height(common).hash() for r in cluster.replicas if r}) == 1  # type: ignore[union-attr]


def test_pbft_miner_removed_by_admin_proposal_leaves_the_set_at_an_epoch_boundary(
    tmp_path: Path,
) -> None:
    from contracts import ProposalAction, Role
    from node.chain.types import MEMBERSHIP_ADDRESS
    from tests.chain.helpers import ADMINS, membership_call, sign

    epoch = 10
    cluster = Cluster(tmp_path, "pbft", epoch_length=epoch)
    leaving = VALIDATORS[3].address
    cluster.submit(
        sign(
            ADMINS[0],
            0,
            MEMBERSHIP_ADDRESS,
            membership_call("propose", int(ProposalAction.REVOKE_ROLE), leaving, int(Role.MINER)),
        )
    )
    cluster.submit(sign(ADMINS[1], 0, MEMBERSHIP_ADDRESS, membership_call("approve", 1)))
    cluster.run(500)
    first = cluster.replicas[0]
    assert first is not None
    head = first.store.head().height
    shrunk = next(
        (
            e
            for e in range(2, head // epoch + 1)
            if (vs := first.validator_set(e)) is not None and vs.n == 3
        ),
        None,
    )
    assert shrunk is not None, f"the set never shrank by height {head}"
    vset = first.validator_set(shrunk)
    assert vset is not None and leaving not in vset
    assert head >= shrunk * epoch + 2, "the remaining three must keep committing"
    block = first.store.block_by_height(shrunk * epoch + 1)
    assert block is not None
    first.verify_seal(block)  # certified by the three that remain
    assert block.header.validator_set_hash == vset.hash()
