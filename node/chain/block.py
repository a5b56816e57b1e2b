"""Block headers and blocks, with their canonical RLP encoding.

A header commits to everything execution produces (state, transactions, receipts, bloom,
gas) and to what consensus decides (proposer, epoch, validator set). The block hash is
``keccak(rlp(header))``: it excludes the seal, which is the commit certificate produced
afterwards *over* that hash. The chain stores the seal and hands it back; it never
interprets it (verification is injected by the node).

Transactions are kept as the raw signed bytes clients sent (EIP-2718 typed envelopes or
legacy RLP), so the transaction hash is ``keccak(raw)`` and nothing is re-encoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import rlp
from eth_hash.auto import keccak
from rlp.sedes import Binary, CountableList, List, big_endian_int, binary

from node.chain.trie import trie_root
from node.chain.types import EMPTY_ROOT, Address, Hash32
from node.errors import InvalidBlock, InvalidInput

__all__ = [
    "BLOOM_BYTES",
    "EMPTY_BLOOM",
    "EMPTY_TRIE_ROOT",
    "Block",
    "Header",
    "transactions_root",
    "trie_root",
]

#: Root of an empty trie (also ``node.chain.types.EMPTY_ROOT``).
EMPTY_TRIE_ROOT = EMPTY_ROOT

BLOOM_BYTES = 256
EMPTY_BLOOM = b"\x00" * BLOOM_BYTES

_hash32 = Binary.fixed_length(32)
_address = Binary.fixed_length(20)

# Field order is the wire order; never reorder (it changes every block hash).
_HEADER_FIELDS: tuple[tuple[str, Any], ...] = (
    ("chain_id", big_endian_int),
    ("parent_hash", _hash32),
    ("height", big_endian_int),
    ("timestamp", big_endian_int),
    ("proposer", _address),
    ("epoch", big_endian_int),
    ("validator_set_hash", _hash32),
    ("state_root", _hash32),
    ("transactions_root", _hash32),
    ("receipts_root", _hash32),
    ("logs_bloom", Binary.fixed_length(BLOOM_BYTES)),
    ("gas_used", big_endian_int),
    ("gas_limit", big_endian_int),
)
_FIXED_SIZES = {
    "parent_hash": 32,
    "proposer": 20,
    "validator_set_hash": 32,
    "state_root": 32,
    "transactions_root": 32,
    "receipts_root": 32,
    "logs_bloom": BLOOM_BYTES,
}
_INT_FIELDS = ("chain_id", "height", "timestamp", "epoch", "gas_used", "gas_limit")
_HEADER_SEDES = List([sedes for _, sedes in _HEADER_FIELDS], strict=True)
_BLOCK_SEDES = List([_HEADER_SEDES, CountableList(binary), binary], strict=True)


@dataclass(frozen=True)
class Header:
    """A block header. ``hash()`` is the block hash (seal excluded)."""

    chain_id: int
    parent_hash: Hash32
    height: int
    timestamp: int
    proposer: Address
    epoch: int
    validator_set_hash: Hash32
    state_root: Hash32
    transactions_root: Hash32
    receipts_root: Hash32
    logs_bloom: bytes
    gas_used: int
    gas_limit: int

    def __post_init__(self) -> None:
        for name, size in _FIXED_SIZES.items():
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != size:
                raise InvalidInput(f"header.{name}: expected {size} bytes, got {value!r}")
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidInput(f"header.{name}: expected a non-negative int, got {value!r}")

    def _fields(self) -> list[Any]:
        return [getattr(self, name) for name, _ in _HEADER_FIELDS]

    def encode(self) -> bytes:
        """Canonical RLP encoding (what the block hash is computed over)."""
        return bytes(rlp.encode(self._fields(), sedes=_HEADER_SEDES))

    @cached_property
    def _hash(self) -> Hash32:
        return Hash32(keccak(self.encode()))

    def hash(self) -> Hash32:
        """Block hash: ``keccak(rlp(header))``."""
        return self._hash

    def replace(self, **changes: Any) -> Header:
        """Copy with some fields changed."""
        return replace(self, **changes)

    @classmethod
    def from_fields(cls, values: Sequence[Any]) -> Header:
        """Build from the deserialized RLP field list (wire order)."""
        kwargs = {name: value for (name, _), value in zip(_HEADER_FIELDS, values, strict=True)}
        kwargs["parent_hash"] = Hash32(kwargs["parent_hash"])
        return cls(**kwargs)

    @classmethod
    def decode(cls, data: bytes) -> Header:
        """Inverse of :meth:`encode`; raises InvalidBlock on malformed input."""
        try:
            values = rlp.decode(data, sedes=_HEADER_SEDES)
        except rlp.exceptions.RLPException as exc:
            raise InvalidBlock(f"malformed header: {exc}") from exc
        return cls.from_fields(values)


@dataclass(frozen=True)
class Block:
    """A header, the raw signed transactions it orders, and its (opaque) seal."""

    header: Header
    transactions: tuple[bytes, ...]
    seal: bytes = b""
    _tx_hashes: tuple[Hash32, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "_tx_hashes", tuple(Hash32(keccak(tx)) for tx in self.transactions)
        )

    @property
    def height(self) -> int:
        """Height of the block (genesis is 0)."""
        return self.header.height

    def hash(self) -> Hash32:
        """Block hash (the header's; the seal is excluded)."""
        return self.header.hash()

    @property
    def tx_hashes(self) -> tuple[Hash32, ...]:
        """``keccak(raw)`` of each transaction, in block order."""
        return self._tx_hashes

    def with_seal(self, seal: bytes) -> Block:
        """The same block carrying ``seal`` (its hash does not change)."""
        return Block(self.header, self.transactions, seal)

    def encode(self) -> bytes:
        """Canonical RLP: ``[header, [raw_tx...], seal]``."""
        return bytes(
            rlp.encode(
                [self.header._fields(), list(self.transactions), self.seal], sedes=_BLOCK_SEDES
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Block:
        """Inverse of :meth:`encode`; raises InvalidBlock on malformed input."""
        try:
            header_values, txs, seal = rlp.decode(data, sedes=_BLOCK_SEDES)
        except rlp.exceptions.RLPException as exc:
            raise InvalidBlock(f"malformed block: {exc}") from exc
        return cls(Header.from_fields(header_values), tuple(txs), seal)


def transactions_root(raw_transactions: Sequence[bytes]) -> Hash32:
    """Transactions root over raw signed transactions (EIP-2718 envelopes as is)."""
    return trie_root(raw_transactions)
