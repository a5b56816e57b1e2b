"""A miner's replica: one consensus engine bound to the executor, the store and the mempool.

Theory of operation
-------------------
The engines are sans-IO; :class:`Replica` is the synchronous host that honours their
``Ready`` contract against real storage, and the asyncio daemon (and the tests) drive it:

- :meth:`tick` / :meth:`step` / :meth:`deliver` feed the engine, then :meth:`drain`
  processes every ``Ready`` in the contract's order:

  1. the hard state is written to ``consensus.db`` (fsynced) before anything is sent;
  2. committed blocks are executed and committed with their certificate as the seal —
     block, receipts, state and indexes in one SQLite transaction (the chain store);
     the mempool drops what they included; at an epoch boundary the next validator set
     is read from the committed state and handed to the engine before ``advance()``;
  3. evidence is recorded; 4. ``advance()``; 5. a proposal request is answered with a
     block built from the mempool; sync requests are handed to the caller.

  :meth:`drain` returns the messages to send and the sync requests; the caller sends
  them only after it returns (hence after the hard state is durable).

Epochs (the same for both engines): epoch ``k`` is heights ``[k*E, (k+1)*E)``. Its
validator set is read from the state of the *final* block ``(k-1)*E``: the MINER list of
the Membership contract (PBFT) or ``Election.committee()`` (DPoS); an empty answer keeps
the previous set. Epochs 0 and 1 use the genesis validators. Every miner computes the same
sets from the same final blocks, and a verifier starting at genesis can follow them.

Blocks are validated before a replica votes: structure, epoch and validator-set hash,
proposer membership, timestamp not before the parent's nor too far ahead of our clock, and
full re-execution (state, transactions and receipts roots). The execution result is kept
pending, so committing the block later does not execute it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from eth_abi.abi import decode as abi_decode
from eth_hash.auto import keccak

from node.artifacts import ArtifactPolicy
from node.blobs import ArtifactDigest, BlobStore
from node.chain.block import Block, Header
from node.chain.executor import Executor
from node.chain.genesis import Genesis, build_genesis
from node.chain.mempool import Mempool, mempool_for
from node.chain.store import ChainStore
from node.chain.tx import SignedTx, decode_transaction
from node.chain.types import ELECTION_ADDRESS, MEMBERSHIP_ADDRESS
from node.consensus.certificate import CertificateError, CommitCertificate
from node.consensus.dpos import DposConfig, DposEngine
from node.consensus.engine import (
    BlockInfo,
    CommittedBlock,
    Engine,
    Outbound,
    ProposalRequest,
    SyncRequest,
)
from node.consensus.evidence import EquivocationEvidence
from node.consensus.messages import SignedMessage, Signer
from node.consensus.pbft import PbftConfig, PbftEngine
from node.consensus.types import Address, Hash32, ValidatorSet
from node.errors import InvalidBlock, TwinChainError
from node.replica_store import ReplicaStateStore

log = logging.getLogger("twinchain.replica")

_MINERS_LIST = keccak(b"minersList()")[:4]
_COMMITTEE = keccak(b"committee()")[:4]
#: A proposer's clock may run this far ahead of ours before we refuse its block.
MAX_FUTURE_SECONDS = 15
#: Most transactions a proposer puts in one block.
MAX_BLOCK_TRANSACTIONS = 2_000
#: Most blocks one catch-up answer carries.
SYNC_BATCH = 32
#: A transaction the registry refuses on this many different parents is dropped.
REFUSALS_BEFORE_DROP = 3
#: Default largest artifact a miner stores (models, datasets, updates).
MAX_BLOB_BYTES = 4 * 1024**3


@dataclass
class DrainOutput:
    """What the caller must do after :meth:`Replica.drain`: send, then fetch."""

    messages: list[Outbound] = field(default_factory=list)
    sync: list[SyncRequest] = field(default_factory=list)
    committed: list[Block] = field(default_factory=list)


CommitListener = Callable[[Block], None]


class Replica:
    """One miner's consensus host (see the module docstring)."""

    def __init__(
        self,
        genesis: Genesis,
        data_dir: Path,
        signer: Signer,
        *,
        clock: Callable[[], float] = time.time,
        policy: ArtifactPolicy | None = None,
        max_blob_bytes: int = MAX_BLOB_BYTES,
    ) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.policy = policy
        self.blobs = BlobStore(data_dir / "blobs", max_blob_bytes=max_blob_bytes)
        #: Artifacts some transaction or proposal needs that we lack (the daemon fetches).
        self.wanted: dict[ArtifactDigest, int] = {}
        self._refusals: dict[bytes, set[bytes]] = {}
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.signer = signer
        self.address = signer.address
        self.epoch_length = genesis.consensus.epoch_length
        self.engine_name = genesis.consensus.engine
        self._clock = clock
        self.store = ChainStore.open(data_dir / "chain.db", build_genesis(genesis))
        self.executor = Executor(self.store, verify_seal=self.verify_seal)
        self.mempool: Mempool = mempool_for(self.executor)
        self.state = ReplicaStateStore(data_dir / "consensus.db")
        self._vsets: dict[int, ValidatorSet] = {}
        self._listeners: list[CommitListener] = []
        self.commit_times: list[float] = []  # wall time of recent commits (metrics)
        base = genesis.consensus.timeout("request", 20)
        #: Ticks a proposer waits for transactions before proposing an empty block.
        # (DPoS: well inside the producer's slot, or an idle network never moves.)
        default_empty = (
            max(1, base // 2)
            if self.engine_name == "pbft"
            else max(1, genesis.consensus.timeout("slot", 10) * 2 // 5)
        )
        self.empty_block_ticks = genesis.consensus.timeout("empty_block", default_empty)
        #: Ticks a proposer lets transactions accumulate after the first one arrived
        #: while it was waiting (one block for a burst instead of one per transaction).
        self.batch_ticks = genesis.consensus.timeout("batch", 2)
        self._request: ProposalRequest | None = None
        self._request_age = 0
        self._batch_start: int | None = None
        head = self.store.head()
        self.engine: Engine = self._build_engine(head)
        # The sets of the epochs whose boundary block is already committed.
        next_epoch = self.epoch_of(head.height + 1)
        for epoch in (next_epoch, next_epoch + 1):
            vset = self.validator_set(epoch)
            if vset is not None and epoch > 0:
                self.engine.set_validators(vset, epoch * self.epoch_length)

    # ------------------------------------------------------------------ engine

    def _build_engine(self, head: Header) -> Engine:
        vset = self.validator_set(self.epoch_of(head.height + 1))
        assert vset is not None  # the set of the next height is always determined
        hard_state = self.state.load_hard_state()
        timeouts = self.genesis.consensus
        if self.engine_name == "pbft":
            pcfg = PbftConfig(
                chain_id=self.chain_id,
                checkpoint_interval=self.genesis.consensus.checkpoint_interval,
                base_timeout=timeouts.timeout("request", 20),
                max_timeout=timeouts.timeout("max", 320),
            )
            return PbftEngine(
                pcfg,
                self.signer,
                vset,
                self.validate_payload,
                committed_height=head.height,
                committed_hash=head.hash(),
                hard_state=hard_state,
            )
        dcfg = DposConfig(
            chain_id=self.chain_id,
            slot_ticks=timeouts.timeout("slot", 10),
            epoch_length=self.epoch_length,
            confirm_timeout=timeouts.timeout("confirm", 40),
        )
        return DposEngine(
            dcfg,
            self.signer,
            vset,
            self.validate_payload,
            committed_height=head.height,
            committed_hash=head.hash(),
            hard_state=hard_state,
        )

    def on_commit(self, listener: CommitListener) -> None:
        """Call ``listener(block)`` after every committed block (new heads, metrics)."""
        self._listeners.append(listener)

    # ------------------------------------------------------------------ epochs

    def epoch_of(self, height: int) -> int:
        """Epoch of a height: ``height // epoch_length``."""
        return height // self.epoch_length

    def validator_set(self, epoch: int) -> ValidatorSet | None:
        """The validator set of ``epoch``, or None while its boundary block isn't final."""
        cached = self._vsets.get(epoch)
        if cached is not None:
            return cached
        if epoch <= 1:
            vset = ValidatorSet(epoch, tuple(Address(a) for a in self.genesis.validators))
        else:
            boundary = self.store.header_by_height((epoch - 1) * self.epoch_length)
            if boundary is None:
                return None
            previous = self.validator_set(epoch - 1)
            assert previous is not None
            members = self._read_members(boundary)
            vset = ValidatorSet(epoch, members or previous.members)
        self._vsets[epoch] = vset
        return vset

    def _read_members(self, at: Header) -> tuple[Address, ...]:
        if self.engine_name == "pbft":
            output = self.executor.call(MEMBERSHIP_ADDRESS, _MINERS_LIST, at=at)
        else:
            output = self.executor.call(ELECTION_ADDRESS, _COMMITTEE, at=at)
        (members,) = abi_decode(["address[]"], output)
        return tuple(Address(bytes.fromhex(m[2:])) for m in members)

    # ------------------------------------------------------------------ validation

    def validate_payload(self, payload: bytes) -> BlockInfo | None:
        """The engine's block validator: never raises, None means invalid."""
        try:
            block = Block.decode(payload)
            self._check_block(block)
        except TwinChainError as exc:
            log.info("rejected proposed block: %s", exc)
            return None
        except Exception:  # a bug must not take consensus down; log it loudly
            log.exception("block validation crashed")
            return None
        h = block.header
        return BlockInfo(h.hash(), h.parent_hash, h.height)

    def _check_block(self, block: Block) -> None:
        h = block.header
        if block.seal:
            raise InvalidBlock("a proposed block carries no seal")
        if h.chain_id != self.chain_id:
            raise InvalidBlock(f"header.chain_id {h.chain_id} != {self.chain_id}")
        vset = self.validator_set(self.epoch_of(h.height))
        if vset is None:
            raise InvalidBlock(f"validator set of height {h.height} is not known yet")
        if h.epoch != vset.epoch:
            raise InvalidBlock(f"header.epoch {h.epoch} != {vset.epoch}")
        if h.validator_set_hash != vset.hash():
            raise InvalidBlock("header.validator_set_hash does not match the epoch's set")
        if h.proposer not in vset:
            raise InvalidBlock(f"header.proposer 0x{h.proposer.hex()} is not a validator")
        if h.timestamp > self._clock() + MAX_FUTURE_SECONDS:
            raise InvalidBlock(f"header.timestamp {h.timestamp} is in the future")
        if self.executor.pending(h.hash()) is None:
            self._check_application(block)
            self.executor.validate_block(block)

    def _check_application(self, block: Block) -> None:
        """The registry's rules (held artifacts, recomputed aggregates) for each tx."""
        if self.policy is None or not block.transactions:
            return
        parent = self.executor.header_by_hash(block.header.parent_hash)
        if parent is None:
            raise InvalidBlock("parent block unknown")
        for raw in block.transactions:
            tx = decode_transaction(raw, self.chain_id)
            reason = self.application_problem(tx, parent)
            if reason is not None:
                raise InvalidBlock(f"transaction 0x{tx.hash.hex()}: {reason}")

    def missing_artifacts(
        self, tx: SignedTx, parent: Header | None = None
    ) -> list[tuple[ArtifactDigest, int]]:
        """Artifacts ``tx`` registers, or needs for its check on ``parent`` (default:
        the head), that this miner does not hold."""
        if self.policy is None:
            return []
        at = parent if parent is not None else self.store.head()
        try:
            needed = [*self.policy.artifacts_of(tx), *self.policy.inputs_of(tx, at, self.executor)]
        except TwinChainError as exc:
            log.info("cannot list artifacts of 0x%s: %s", tx.hash.hex(), exc)
            return []
        return [(d, size) for d, size in needed if not self.blobs.has(d)]

    def application_problem(self, tx: SignedTx, parent: Header) -> str | None:
        """Why ``tx`` may not go into a block on ``parent`` (None if it may)."""
        missing = self.missing_artifacts(tx, parent)
        if missing:
            for digest, size in missing:
                self.wanted[digest] = size
            return f"artifact {missing[0][0]} is not held by this miner"
        if self.policy is None:
            return None
        return self.policy.check(tx, parent, self.executor, self.blobs)

    def verify_seal(self, block: Block) -> None:
        """Check that a block's seal is a commit certificate for it (raises InvalidBlock)."""
        try:
            cert = CommitCertificate.decode(block.seal)
        except CertificateError as exc:
            raise InvalidBlock(f"seal: {exc}") from exc
        if cert.block_hash != block.hash() or cert.height != block.height:
            raise InvalidBlock("seal: certificate is for another block")
        vset = self.validator_set(self.epoch_of(block.height))
        if vset is None:
            raise InvalidBlock(f"seal: validator set of height {block.height} unknown")
        try:
            cert.verify(self.chain_id, vset)
        except CertificateError as exc:
            raise InvalidBlock(f"seal: {exc}") from exc

    # ------------------------------------------------------------------ inputs

    def tick(self) -> DrainOutput:
        """One consensus tick."""
        self.engine.tick()
        if self._request is not None:
            self._request_age += 1
            self._maybe_propose()
        return self.drain()

    def wake(self) -> DrainOutput:
        """New transactions arrived (from a client or a peer): a proposer waiting for
        some proposes now."""
        if self._request is not None:
            self._maybe_propose()
        return self.drain()

    def submit(self, raw: bytes) -> Hash32:
        """Admit a client transaction (raises InvalidTransaction); a waiting proposer
        proposes at once."""
        tx_hash = self.mempool.add(raw)
        if self._request is not None:
            self._maybe_propose()
        return tx_hash

    def step(self, message: SignedMessage) -> DrainOutput:
        """A consensus message from a peer."""
        self.engine.step(message)
        return self.drain()

    def deliver(self, blocks: list[CommittedBlock]) -> DrainOutput:
        """Committed blocks fetched by catch-up (the engine verifies them)."""
        out = DrainOutput()
        for committed in blocks:
            self.engine.deliver(committed)
            self._merge(out, self.drain())
        return out

    def committed_blocks(self, from_height: int, limit: int = SYNC_BATCH) -> list[CommittedBlock]:
        """Answer a peer's catch-up request from our store."""
        out: list[CommittedBlock] = []
        head = self.store.head().height
        for height in range(max(1, from_height), min(head, from_height + limit - 1) + 1):
            block = self.store.block_by_height(height)
            if block is None or not block.seal:
                break
            cert = CommitCertificate.decode(block.seal)
            payload = block.with_seal(b"").encode()
            out.append(CommittedBlock(height, block.hash(), payload, cert))
        return out

    # ------------------------------------------------------------------ Ready

    def drain(self) -> DrainOutput:
        """Process every pending Ready (see the module docstring for the order)."""
        out = DrainOutput()
        while self.engine.has_ready():
            rd = self.engine.ready()
            if rd.persist is not None:
                self.state.save_hard_state(rd.persist)
            for committed in rd.committed:
                out.committed.append(self._commit(committed))
            head_height = self.store.head().height
            for evidence in rd.evidence:
                self._record_evidence(evidence, head_height)
            self.engine.advance()
            out.messages.extend(rd.messages)
            out.sync.extend(rd.sync)
            if rd.propose is not None:
                self._request, self._request_age, self._batch_start = rd.propose, 0, None
                if len(self.mempool):  # transactions queued during the last round
                    self._batch_start = -self.batch_ticks
                self._maybe_propose()
        return out

    @staticmethod
    def _merge(into: DrainOutput, more: DrainOutput) -> None:
        into.messages.extend(more.messages)
        into.sync.extend(more.sync)
        into.committed.extend(more.committed)

    def _commit(self, committed: CommittedBlock) -> Block:
        seal = committed.certificate.encode()
        pending = self.executor.pending(committed.block_hash)
        if pending is not None:
            block = self.executor.commit(pending, seal)
        else:
            block = Block.decode(committed.payload).with_seal(seal)
            self.executor.import_block(block)
            block = self.store.block_by_height(block.height) or block
        self.mempool.on_commit(block)
        self.commit_times.append(self._clock())
        del self.commit_times[:-256]
        if block.height % self.epoch_length == 0:
            epoch = self.epoch_of(block.height) + 1
            vset = self.validator_set(epoch)
            if vset is not None:
                log.info("validator set of epoch %d: %d members", epoch, vset.n)
                self.engine.set_validators(vset, epoch * self.epoch_length)
        for listener in self._listeners:
            try:
                listener(block)
            except Exception:
                log.exception("commit listener failed")
        return block

    def _record_evidence(self, evidence: EquivocationEvidence, height: int) -> None:
        if self.state.add_evidence(evidence, height):
            log.warning(
                "equivocation by 0x%s at height %d round %d (kind %d)",
                evidence.validator.hex(),
                evidence.first.height,
                evidence.first.round,
                evidence.first.kind,
            )

    def _maybe_propose(self) -> None:
        """Answer the pending proposal request once there is something to order, or
        when the proposer has waited ``empty_block_ticks`` (a heartbeat block)."""
        request = self._request
        if request is None:
            return
        if len(self.mempool) and self._batch_start is None:
            self._batch_start = self._request_age
        heartbeat = self._request_age >= self.empty_block_ticks
        batched = (
            self._batch_start is not None
            and self._request_age - self._batch_start >= self.batch_ticks
        )
        if not (heartbeat or batched or len(self.mempool) >= MAX_BLOCK_TRANSACTIONS):
            return
        self._request, self._batch_start = None, None
        self._propose(request)

    def _propose(self, request: ProposalRequest) -> None:
        parent = self.executor.header_by_hash(request.parent_hash)
        if parent is None:
            log.warning("cannot propose at %d: parent unknown", request.height)
            return
        vset = self.validator_set(self.epoch_of(request.height))
        if vset is None:
            return
        txs = self.mempool.select(
            max_count=MAX_BLOCK_TRANSACTIONS,
            nonce_of=lambda a: self.executor.nonce_of(a, at=parent),
        )
        if self.policy is not None:
            txs = self._applicable(txs, parent)
        result = self.executor.build_block(
            parent,
            [tx.raw for tx in txs],
            timestamp=max(int(self._clock()), parent.timestamp),
            proposer=self.address,
            epoch=vset.epoch,
            validator_set_hash=vset.hash(),
        )
        for tx_hash, reason in result.rejected:
            log.info("left 0x%s out of block %d: %s", tx_hash.hex(), request.height, reason)
        self.engine.propose(result.block.encode())

    def _applicable(self, txs: list[SignedTx], parent: Header) -> list[SignedTx]:
        """Keep a sender's transactions up to its first one that may not be proposed.

        Artifacts still being fetched wait (the transaction stays in the mempool). A
        transaction the registry refuses waits too — its inputs may be in a block not
        yet committed (a round closed right after its last update) — but is dropped
        after it was refused on :data:`REFUSALS_BEFORE_DROP` different parents (a
        lying aggregate)."""
        chosen: list[SignedTx] = []
        blocked: set[bytes] = set()
        for tx in txs:
            if tx.sender in blocked:
                continue
            reason = self.application_problem(tx, parent)
            if reason is None:
                chosen.append(tx)
                continue
            blocked.add(tx.sender)
            if self.missing_artifacts(tx, parent):
                continue
            seen = self._refusals.setdefault(bytes(tx.hash), set())
            seen.add(bytes(parent.hash()))
            if len(seen) >= REFUSALS_BEFORE_DROP:
                log.warning("dropping transaction 0x%s: %s", tx.hash.hex(), reason)
                self.mempool.remove([tx.hash])
                del self._refusals[bytes(tx.hash)]
        return chosen

    # ------------------------------------------------------------------ reads

    def evidence(self) -> list[EquivocationEvidence]:
        """Every equivocation this miner has recorded."""
        return self.state.evidence()

    def close(self) -> None:
        """Close the stores."""
        self.state.close()
        self.store.close()


def validator_hash_of(members: tuple[Address, ...]) -> Hash32:
    """Hash of an ordered member list (as in headers)."""
    return ValidatorSet(0, members).hash()
