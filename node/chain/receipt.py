"""Transaction receipts and logs.

:class:`Receipt` carries both what Ethereum commits to in the receipts trie (status,
cumulative gas, bloom, logs — see :meth:`Receipt.encode`) and what JSON-RPC clients ask
for (sender, recipient, created contract, gas used by this transaction, effective gas
price), so ``eth_getTransactionReceipt`` is one lookup and never re-executes anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import rlp
from eth_bloom.bloom import BloomFilter

from node.chain.block import BLOOM_BYTES, trie_root
from node.chain.types import Address, Hash32

__all__ = ["BlockLog", "Log", "Receipt", "bloom_of", "receipts_root"]

#: EIP-658 status codes.
STATUS_FAILURE = 0
STATUS_SUCCESS = 1


@dataclass(frozen=True)
class Log:
    """One EVM log: emitting contract, up to four 32-byte topics, opaque data."""

    address: Address
    topics: tuple[Hash32, ...]
    data: bytes

    def fields(self) -> list[object]:
        """RLP field list ``[address, [topic...], data]`` (Ethereum's log encoding)."""
        return [self.address, list(self.topics), self.data]


@dataclass(frozen=True)
class Receipt:
    """The outcome of one transaction in a block."""

    tx_hash: Hash32
    tx_index: int
    tx_type: int
    sender: Address
    to: Address | None  # None for contract creation
    contract_address: Address | None  # set for a successful or failed creation
    status: int  # 1 success, 0 reverted/failed
    gas_used: int
    cumulative_gas_used: int
    effective_gas_price: int
    logs: tuple[Log, ...]

    @property
    def succeeded(self) -> bool:
        """True when the transaction did not revert or fail."""
        return self.status == STATUS_SUCCESS

    def bloom(self) -> bytes:
        """256-byte logs bloom of this receipt."""
        return bloom_of(self.logs)

    def encode(self) -> bytes:
        """Consensus encoding, the value stored in the receipts trie.

        ``rlp([status, cumulative_gas_used, bloom, logs])``, prefixed with the transaction
        type byte for typed (EIP-2718) transactions — identical to py-evm's encoding (a
        test pins the two together).
        """
        status = b"\x01" if self.status == STATUS_SUCCESS else b""
        body = rlp.encode(
            [status, self.cumulative_gas_used, self.bloom(), [log.fields() for log in self.logs]]
        )
        return bytes(body) if self.tx_type == 0 else bytes([self.tx_type]) + bytes(body)


@dataclass(frozen=True)
class BlockLog:
    """A log placed in the chain, as ``eth_getLogs`` reports it."""

    block_height: int
    block_hash: Hash32
    tx_hash: Hash32
    tx_index: int
    log_index: int  # position of the log in its block
    log: Log


def bloom_of(logs: Sequence[Log]) -> bytes:
    """Logs bloom (Yellow Paper M3:2048) over the addresses and topics of ``logs``."""
    bloom = BloomFilter()
    for log in logs:
        bloom.add(log.address)
        for topic in log.topics:
            bloom.add(topic)
    return int(bloom).to_bytes(BLOOM_BYTES, "big")


def receipts_root(receipts: Sequence[Receipt]) -> Hash32:
    """Receipts root over the consensus encoding of ``receipts``."""
    return trie_root([r.encode() for r in receipts])
