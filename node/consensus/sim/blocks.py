"""The simulator's block format and the validator it injects into engines.

A simulated block is RLP ``[height, parent_hash, proposer, data]`` and its hash is
``keccak(payload)``. ``data`` is always :data:`DATA_LEN` bytes so that a Byzantine proposer
can swap one block for another of the *same encoded length* inside any engine-specific
message body (see :mod:`node.consensus.sim.byzantine`). Blocks whose data starts with
:data:`INVALID_MARK` are invalid by fiat, which makes the validity invariant testable:
a Byzantine proposer offers them and no honest replica may ever commit one.

:class:`BlockBook` is one host's knowledge of blocks. Its :meth:`BlockBook.validate` is
the ``BlockValidator`` handed to the engine: structure, the invalid mark, and parent
linkage against blocks the host knows (its committed chain plus blocks it validated
before). A block whose parent it has never seen is rejected, as a real node that lacks the
parent state would reject it; engines must cope (buffer, or catch up first).
"""

from __future__ import annotations

from dataclasses import dataclass

import rlp
from eth_hash.auto import keccak

from node.consensus.engine import BlockInfo
from node.consensus.types import ZERO_HASH, Address, Hash32

DATA_LEN = 12
INVALID_MARK = b"INVALID"


@dataclass(frozen=True)
class SimBlock:
    """A decoded simulated block."""

    height: int
    parent_hash: Hash32
    proposer: Address
    data: bytes

    def encode(self) -> bytes:
        """Canonical RLP payload."""
        return bytes(rlp.encode([self.height, self.parent_hash, self.proposer, self.data]))

    @property
    def is_marked_invalid(self) -> bool:
        """True for blocks a Byzantine proposer made invalid on purpose."""
        return self.data.startswith(INVALID_MARK)


def block_hash(payload: bytes) -> Hash32:
    """The hash of an encoded block."""
    return Hash32(keccak(payload))


def decode_block(payload: bytes) -> SimBlock | None:
    """Decode a payload, or None if it is not a well-formed simulated block."""
    try:
        items = rlp.decode(payload, strict=True)
    except (rlp.exceptions.RLPException, ValueError, TypeError):
        return None
    if not isinstance(items, list) or len(items) != 4:
        return None
    if not all(isinstance(x, bytes) for x in items):
        return None
    raw_height, parent, proposer, data = items
    if raw_height and raw_height[0] == 0:
        return None  # non-canonical integer
    if len(parent) != 32 or len(proposer) != 20 or len(data) != DATA_LEN:
        return None
    return SimBlock(int.from_bytes(raw_height, "big"), Hash32(parent), Address(proposer), data)


def intrinsic_info(payload: bytes) -> BlockInfo | None:
    """Context-free validity: structure and the invalid mark (used by the checker)."""
    block = decode_block(payload)
    if block is None or block.is_marked_invalid or block.height < 1:
        return None
    return BlockInfo(block_hash(payload), block.parent_hash, block.height)


def make_block(height: int, parent: Hash32, proposer: Address, data: bytes) -> bytes:
    """Encode a block, padding or trimming ``data`` to :data:`DATA_LEN`."""
    fixed = (data + b"\x00" * DATA_LEN)[:DATA_LEN]
    return SimBlock(height, parent, proposer, fixed).encode()


def twin_block(payload: bytes) -> bytes | None:
    """A different valid block of the same encoded length at the same height and parent.

    Used by an equivocating proposer: the twin can replace the original byte for byte
    inside any message body that embeds the block verbatim.
    """
    block = decode_block(payload)
    if block is None:
        return None
    flipped = bytes([block.data[0] ^ 0x5A]) + block.data[1:]
    if flipped.startswith(INVALID_MARK):
        flipped = bytes([flipped[0] ^ 0x01]) + flipped[1:]
    twin = SimBlock(block.height, block.parent_hash, block.proposer, flipped).encode()
    return twin if len(twin) == len(payload) else None


class BlockBook:
    """One host's knowledge of blocks; :meth:`validate` is the engine's BlockValidator."""

    def __init__(self) -> None:
        self._height_of: dict[bytes, int] = {ZERO_HASH: 0}
        self.accepted = 0
        self.rejected = 0

    def learn(self, block_hash_: Hash32, height: int) -> None:
        """Remember a block (committed, or validated) so children can link to it."""
        self._height_of[block_hash_] = height

    def knows(self, block_hash_: bytes) -> bool:
        """True if this host has seen ``block_hash_``."""
        return block_hash_ in self._height_of

    def validate(self, payload: bytes) -> BlockInfo | None:
        """Decode and validate ``payload`` (never raises)."""
        info = intrinsic_info(payload)
        if info is None or self._height_of.get(info.parent_hash) != info.height - 1:
            self.rejected += 1
            return None
        self.accepted += 1
        self._height_of[info.hash] = info.height
        return info
