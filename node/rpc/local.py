"""A real :class:`~node.rpc.backend.NodeView` for a single-node chain.

:class:`LocalNodeView` runs the genuine chain machinery — :class:`ChainStore`,
:class:`Executor`, :class:`Mempool` — with one validator that holds its own key. It builds
and commits a block whenever asked (:meth:`LocalNodeView.produce_block`, or after every
admitted transaction with ``automine=True``), sealing it with a real
:class:`~node.consensus.certificate.CommitCertificate`: the single validator's commit vote
is a quorum of one (``n = 1``, ``f = 0``, ``q = 1``). Every seal is verified by the
executor before the block is committed, exactly as a miner verifies a peer's block.

It is what the RPC tests and development tools run against: nothing is mocked, only
consensus is trivial. It does not follow validator-set changes in Membership (the set is
always the genesis validator), and reports no peers and no sync progress.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

from node.chain.block import Block, Header
from node.chain.executor import ExecutionReverted, Executor
from node.chain.genesis import GenesisState
from node.chain.mempool import Mempool, MempoolLimits, mempool_for
from node.chain.receipt import BlockLog, Receipt
from node.chain.store import ChainStore, ReceiptRecord, TopicFilter
from node.chain.types import Address, Hash32
from node.consensus.certificate import CertificateError, CommitCertificate, commit_kind
from node.consensus.engine import EngineStatus
from node.consensus.evidence import EquivocationEvidence, EvidenceError
from node.consensus.messages import EngineId, Signer
from node.consensus.types import ValidatorSet
from node.errors import InvalidBlock, InvalidInput
from node.rpc.backend import SyncProgress

__all__ = ["ChainView", "LocalNodeView", "client_version_string"]

logger = logging.getLogger("node.rpc.local")

_ENGINES = {"pbft": EngineId.PBFT, "dpos": EngineId.DPOS}


def client_version_string(name: str) -> str:
    try:
        version = metadata.version("twinchain")
    except metadata.PackageNotFoundError:
        version = "unknown"
    python = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return f"TwinChain/v{version}/{name}/{python}"


class ChainView:
    """The chain and state reads of :class:`NodeView`, over a store, an executor and a
    mempool. Shared by :class:`LocalNodeView` and the miner's view of its replica."""

    store: ChainStore
    executor: Executor
    mempool: Mempool
    _client_version: str

    # ------------------------------------------------------------ NodeView: identity

    @property
    def chain_id(self) -> int:
        """EIP-155 chain id."""
        return self.store.chain_id

    @property
    def client_version(self) -> str:
        """``TwinChain/v<version>/<name>/python<x.y>``."""
        return self._client_version

    # ------------------------------------------------------------ NodeView: chain

    def head(self) -> Header:
        """Committed head."""
        return self.store.head()

    def header_by_number(self, height: int) -> Header | None:
        """Committed header at ``height``."""
        return self.store.header_by_height(height)

    def block_by_number(self, height: int) -> Block | None:
        """Committed block at ``height`` with its seal."""
        return self.store.block_by_height(height)

    def block_by_hash(self, block_hash: Hash32) -> Block | None:
        """Committed block by hash with its seal."""
        return self.store.block_by_hash(block_hash)

    def tx_location(self, tx_hash: Hash32) -> tuple[int, int] | None:
        """``(height, index)`` of a committed transaction."""
        return self.store.tx_location(tx_hash)

    def raw_transaction(self, tx_hash: Hash32) -> bytes | None:
        """Raw bytes of a committed transaction."""
        return self.store.raw_transaction(tx_hash)

    def receipt(self, tx_hash: Hash32) -> ReceiptRecord | None:
        """Receipt of a committed transaction."""
        return self.store.receipt(tx_hash)

    def receipts(self, height: int) -> Sequence[Receipt]:
        """Receipts of a committed block."""
        return self.store.receipts(height)

    def logs(
        self,
        from_height: int,
        to_height: int,
        address: Sequence[Address] | None,
        topics: Sequence[TopicFilter] | None,
        *,
        limit: int,
    ) -> Sequence[BlockLog]:
        """``eth_getLogs`` over the store's log index."""
        return self.store.logs(from_height, to_height, address, topics, limit=limit)

    # ------------------------------------------------------------ NodeView: state

    def call(
        self,
        to: Address | None,
        data: bytes,
        sender: Address,
        *,
        value: int,
        gas: int | None,
        at: Header,
    ) -> bytes:
        """``eth_call`` through the executor."""
        result = self.executor.simulate(to, data, sender, value=value, gas=gas, at=at)
        if not result.success:
            raise ExecutionReverted(f"execution reverted: {result.error}", result.output)
        return result.output

    def estimate_gas(
        self, to: Address | None, data: bytes, sender: Address, *, value: int, at: Header
    ) -> int:
        """``eth_estimateGas`` through the executor."""
        return self.executor.estimate_gas(to, data, sender, value=value, at=at)

    def nonce_of(self, address: Address, at: Header) -> int:
        """Account nonce at ``at``."""
        return self.executor.nonce_of(address, at)

    def next_nonce(self, address: Address) -> int:
        """Next nonce counting the mempool."""
        return self.mempool.pending_nonce(address)

    def balance_of(self, address: Address, at: Header) -> int:
        """Balance at ``at``."""
        return self.executor.balance_of(address, at)

    def code_of(self, address: Address, at: Header) -> bytes:
        """Code at ``at``."""
        return self.executor.code_of(address, at)

    def storage_at(self, address: Address, slot: int, at: Header) -> int:
        """Storage slot at ``at``."""
        return self.executor.storage_at(address, slot, at)

    def roles_of(self, address: Address, at: Header | None = None) -> int:
        """Membership role bits."""
        return self.executor.roles_of(address, at)


class LocalNodeView(ChainView):
    """A single-validator node: real store, executor and mempool; blocks on demand."""

    def __init__(
        self,
        store: ChainStore,
        genesis: GenesisState,
        signer: Signer,
        *,
        name: str = "local",
        automine: bool = False,
        mempool_limits: MempoolLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Serve ``store`` (opened on ``genesis``), validating as ``signer``.

        The genesis must name exactly one validator, ``signer``'s address.
        """
        config = genesis.config
        if tuple(bytes(v) for v in config.validators) != (bytes(signer.address),):
            raise InvalidInput(
                "a local node needs a genesis whose only validator is its signer "
                f"0x{signer.address.hex()}"
            )
        if store.genesis_hash != genesis.header.hash():
            raise InvalidInput("the store belongs to another genesis")
        self.store = store
        self.genesis = genesis
        self.signer = signer
        self.name = name
        self.automine = automine
        self._engine = _ENGINES[config.consensus.engine]
        self._epoch_length = config.consensus.epoch_length
        self._clock = clock
        self.executor = Executor(store, verify_seal=self._verify_seal)
        self.mempool: Mempool = mempool_for(self.executor, mempool_limits)
        self._evidence: list[EquivocationEvidence] = []
        self._produce_lock = threading.Lock()
        self._client_version = client_version_string(name)

    @classmethod
    def open(
        cls,
        path: str | Path,
        genesis: GenesisState,
        signer: Signer,
        *,
        name: str = "local",
        automine: bool = False,
    ) -> LocalNodeView:
        """Open (creating if needed) the store at ``path`` and serve it."""
        store = ChainStore.open(path, genesis)
        try:
            return cls(store, genesis, signer, name=name, automine=automine)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    # ------------------------------------------------------------ consensus (trivial)

    def _validators(self, epoch: int) -> ValidatorSet:
        return ValidatorSet(epoch, (self.signer.address,))

    def _epoch_of(self, height: int) -> int:
        return height // self._epoch_length

    def _certify(self, block: Block) -> bytes:
        """The single validator's commit vote, as a one-signature certificate."""
        vote = self.signer.sign(
            self.chain_id,
            self._engine,
            commit_kind(self._engine),
            block.height,
            0,
            block.hash(),
        )
        return CommitCertificate.from_votes([vote]).encode()

    def _verify_seal(self, block: Block) -> None:
        try:
            certificate = CommitCertificate.decode(block.seal)
            if (
                bytes(certificate.block_hash) != bytes(block.hash())
                or certificate.height != block.height
            ):
                raise CertificateError("certificate is for another block")
            certificate.verify(self.chain_id, self._validators(block.header.epoch))
        except CertificateError as exc:
            raise InvalidBlock(f"block {block.height}: bad seal: {exc}") from exc

    def produce_block(self, timestamp: int | None = None) -> Block:
        """Build a block from the mempool on the head, seal it and commit it.

        ``timestamp`` defaults to the clock (never before the parent's). Transactions
        the executor refuses are dropped from the mempool with a log line.
        """
        with self._produce_lock:
            head = self.store.head()
            when = int(self._clock()) if timestamp is None else timestamp
            height = head.height + 1
            epoch = self._epoch_of(height)
            result = self.executor.build_block(
                head,
                [tx.raw for tx in self.mempool.select()],
                timestamp=max(when, head.timestamp),
                proposer=Address(bytes(self.signer.address)),
                epoch=epoch,
                validator_set_hash=Hash32(bytes(self._validators(epoch).hash())),
            )
            block = self.executor.commit(result, self._certify(result.block))
            for tx_hash, reason in result.rejected:
                logger.info("dropping transaction 0x%s: %s", tx_hash.hex(), reason)
            self.mempool.remove(tx_hash for tx_hash, _ in result.rejected)
            for tx_hash, reason in self.mempool.on_commit(block):
                logger.info("evicted transaction 0x%s: %s", tx_hash.hex(), reason)
            return block

    def record_evidence(self, evidence: EquivocationEvidence) -> None:
        """Keep verified equivocation evidence (e.g. received from a tool or a peer)."""
        try:
            evidence.verify(self.chain_id, self._validators(self._epoch_of(evidence.first.height)))
        except EvidenceError as exc:
            raise InvalidInput(f"evidence does not prove equivocation: {exc}") from exc
        if all(e.key() != evidence.key() for e in self._evidence):
            self._evidence.append(evidence)

    # ------------------------------------------------------------ NodeView: submit

    def submit_transaction(self, raw: bytes) -> Hash32:
        """Admit to the mempool (and commit a block at once with ``automine``)."""
        tx_hash = self.mempool.add(raw)
        if self.automine:
            self.produce_block()
        return tx_hash

    # ------------------------------------------------------------ NodeView: consensus

    def consensus_status(self) -> EngineStatus:
        """Status of the trivial one-validator consensus."""
        head = self.store.head()
        return EngineStatus(
            engine=self.genesis.config.consensus.engine,
            height=head.height + 1,
            round=0,
            epoch=self._epoch_of(head.height + 1),
            proposer=self.signer.address,
            committed_height=head.height,
            finality_lag=0,
            round_changes=0,
            dropped={},
            evidence=len(self._evidence),
        )

    def validator_set(self, epoch: int) -> ValidatorSet | None:
        """The signer alone, for every epoch up to the next block's."""
        if epoch > self._epoch_of(self.store.head().height + 1):
            return None
        return self._validators(epoch)

    def evidence(self) -> Sequence[EquivocationEvidence]:
        """Evidence recorded with :meth:`record_evidence`."""
        return tuple(self._evidence)

    def sync_progress(self) -> SyncProgress | None:
        """Always in sync: there is no one to sync from."""
        return None

    def peer_count(self) -> int:
        """No peers."""
        return 0
