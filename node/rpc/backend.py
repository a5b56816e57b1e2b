"""What the JSON-RPC layer needs from a running miner: the :class:`NodeView` protocol.

The RPC server (``node.rpc.server``) is a pure translation layer between JSON-RPC and
this interface; it holds no chain state of its own. The miner's host object implements
the protocol over its store, executor, mempool and consensus engine;
:class:`node.rpc.local.LocalNodeView` implements it for a single-node chain (tests,
development tools).

Conventions:

- blocks are *committed* blocks (final, sealed): the RPC's ``latest``, ``safe``,
  ``finalized`` and ``pending`` all mean the committed head, because the store only
  ever holds final blocks (pending consensus proposals are not exposed);
- state reads take the header of the block to read at; they raise
  :class:`~node.errors.NotFound` if that state is not available and
  :class:`~node.chain.executor.ExecutionReverted` (with the revert data) if a call
  reverts;
- methods may block (they run EVM code or SQLite queries); the server calls them from
  worker threads, so implementations must be thread-safe for reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from node.chain.block import Block, Header
from node.chain.receipt import BlockLog, Receipt
from node.chain.store import ReceiptRecord, TopicFilter
from node.chain.types import Address, Hash32
from node.consensus.engine import EngineStatus
from node.consensus.evidence import EquivocationEvidence
from node.consensus.types import ValidatorSet

__all__ = ["NodeView", "SyncProgress"]


@dataclass(frozen=True)
class SyncProgress:
    """``eth_syncing`` while the node catches up: heights where it started, is, and aims."""

    starting_block: int
    current_block: int
    highest_block: int


@runtime_checkable
class NodeView(Protocol):
    """The read/submit interface of a running miner, as the RPC layer uses it."""

    # ------------------------------------------------------------ identity

    @property
    def chain_id(self) -> int:
        """EIP-155 chain id of the network (from genesis)."""
        ...

    @property
    def client_version(self) -> str:
        """``web3_clientVersion``, e.g. ``TwinChain/v0.1.0/miner-1/python3.12``."""
        ...

    # ------------------------------------------------------------ blocks and transactions

    def head(self) -> Header:
        """Header of the last committed block."""
        ...

    def header_by_number(self, height: int) -> Header | None:
        """Committed header at ``height``, or None."""
        ...

    def block_by_number(self, height: int) -> Block | None:
        """Committed block at ``height`` with its seal (an encoded CommitCertificate)."""
        ...

    def block_by_hash(self, block_hash: Hash32) -> Block | None:
        """Committed block with this hash, with its seal, or None."""
        ...

    def tx_location(self, tx_hash: Hash32) -> tuple[int, int] | None:
        """``(height, index)`` of a committed transaction, or None."""
        ...

    def raw_transaction(self, tx_hash: Hash32) -> bytes | None:
        """Raw signed bytes of a committed transaction, or None."""
        ...

    def receipt(self, tx_hash: Hash32) -> ReceiptRecord | None:
        """Receipt of a committed transaction with its block context, or None."""
        ...

    def receipts(self, height: int) -> Sequence[Receipt]:
        """Receipts of the committed block at ``height`` in transaction order."""
        ...

    def logs(
        self,
        from_height: int,
        to_height: int,
        address: Sequence[Address] | None,
        topics: Sequence[TopicFilter] | None,
        *,
        limit: int,
    ) -> Sequence[BlockLog]:
        """Logs in ``[from_height, to_height]`` matching an ``eth_getLogs`` filter;
        raises InvalidInput when more than ``limit`` match."""
        ...

    # ------------------------------------------------------------ state

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
        """``eth_call`` at block ``at``: return data, or ExecutionReverted; ``to=None``
        simulates a contract creation and returns the runtime code it would deploy."""
        ...

    def estimate_gas(
        self, to: Address | None, data: bytes, sender: Address, *, value: int, at: Header
    ) -> int:
        """Smallest gas limit with which the transaction succeeds at ``at``."""
        ...

    def nonce_of(self, address: Address, at: Header) -> int:
        """Account nonce in the state of block ``at``."""
        ...

    def next_nonce(self, address: Address) -> int:
        """Nonce of the account's next transaction, counting those in the mempool
        (``eth_getTransactionCount(addr, "pending")``)."""
        ...

    def balance_of(self, address: Address, at: Header) -> int:
        """Balance in wei in the state of block ``at``."""
        ...

    def code_of(self, address: Address, at: Header) -> bytes:
        """Runtime code in the state of block ``at``."""
        ...

    def storage_at(self, address: Address, slot: int, at: Header) -> int:
        """One storage slot in the state of block ``at``."""
        ...

    def roles_of(self, address: Address, at: Header | None = None) -> int:
        """Role bits of ``address`` in the Membership contract (head state by default)."""
        ...

    # ------------------------------------------------------------ submitting

    def submit_transaction(self, raw: bytes) -> Hash32:
        """Admit a raw signed transaction to the mempool; returns its hash.

        Raises InvalidTransaction (the reason in its message) if it is not admissible:
        malformed, wrong chain, bad nonce, sender without a role, pool full...
        """
        ...

    # ------------------------------------------------------------ consensus

    def consensus_status(self) -> EngineStatus:
        """The consensus engine's status snapshot."""
        ...

    def validator_set(self, epoch: int) -> ValidatorSet | None:
        """Validator set of ``epoch``, or None if the node does not know it (yet)."""
        ...

    def evidence(self) -> Sequence[EquivocationEvidence]:
        """Equivocation evidence this node has recorded, oldest first."""
        ...

    def sync_progress(self) -> SyncProgress | None:
        """Catch-up progress, or None when the node is in sync."""
        ...

    def peer_count(self) -> int:
        """Number of connected peer miners."""
        ...
