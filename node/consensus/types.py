"""Domain types shared by the consensus engines: addresses, hashes, validator sets, quorums.

Quorum arithmetic (Castro & Liskov, generalised to any n):

- ``f = (n - 1) // 3`` Byzantine replicas are tolerated;
- a *quorum* is the smallest q with ``2q - n >= f + 1`` (any two quorums intersect in at
  least one honest replica): ``q = ceil((n + f + 1) / 2)``, which is ``2f + 1`` when
  ``n = 3f + 1``;
- a *weak quorum* ``f + 1`` contains at least one honest replica.

``n = 1`` gives ``f = 0`` and ``q = 1``: a single-node development network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import rlp
from eth_hash.auto import keccak
from eth_typing import Address, Hash32

# Address: a 20-byte account address (the validator's secp256k1 key, Ethereum style).
# Hash32: a 32-byte Keccak-256 digest. Both are eth_typing's NewTypes, shared with
# node.chain, so values flow between the packages without casts.
__all__ = [
    "EMPTY_PAYLOAD_HASH",
    "ZERO_HASH",
    "Address",
    "Hash32",
    "ValidatorSet",
    "max_faulty",
    "quorum_size",
]

ZERO_HASH = Hash32(b"\x00" * 32)
EMPTY_PAYLOAD_HASH = Hash32(keccak(b""))


def max_faulty(n: int) -> int:
    """Number of Byzantine validators a set of ``n`` tolerates."""
    if n < 1:
        raise ValueError("a validator set needs at least one member")
    return (n - 1) // 3


def quorum_size(n: int) -> int:
    """Smallest vote count such that any two quorums share an honest validator."""
    f = max_faulty(n)
    return (n + f + 2) // 2  # ceil((n + f + 1) / 2)


@dataclass(frozen=True)
class ValidatorSet:
    """The ordered validators of one epoch.

    Order matters: the PBFT primary of view ``v`` is ``members[v % n]`` and the DPoS
    producer schedule is round-robin over ``members``. Every node derives the same order
    from chain state at the epoch boundary.
    """

    epoch: int
    members: tuple[Address, ...]
    _index: dict[bytes, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("a validator set needs at least one member")
        if any(len(m) != 20 for m in self.members):
            raise ValueError("validator addresses are 20 bytes")
        if len(set(self.members)) != len(self.members):
            raise ValueError("duplicate validator in set")
        object.__setattr__(self, "_index", {m: i for i, m in enumerate(self.members)})

    @property
    def n(self) -> int:
        """Number of validators."""
        return len(self.members)

    @property
    def f(self) -> int:
        """Byzantine validators tolerated."""
        return max_faulty(self.n)

    @property
    def quorum(self) -> int:
        """Votes needed for a prepared/committed certificate (2f+1 when n = 3f+1)."""
        return quorum_size(self.n)

    @property
    def weak_quorum(self) -> int:
        """Votes guaranteeing at least one honest voter (f+1)."""
        return self.f + 1

    def __contains__(self, address: object) -> bool:
        return address in self._index

    def index_of(self, address: bytes) -> int:
        """Position of ``address`` in the set; raises KeyError if absent."""
        return self._index[address]

    def member_at(self, i: int) -> Address:
        """Member ``i mod n`` (the rotation used by proposer selection)."""
        return self.members[i % self.n]

    def hash(self) -> Hash32:
        """Commitment to the ordered member list (goes into block headers)."""
        return Hash32(keccak(rlp.encode([list(self.members)])))

    def encode(self) -> bytes:
        """Canonical RLP: ``[epoch, [member...]]``."""
        return bytes(rlp.encode([self.epoch, list(self.members)]))

    @classmethod
    def decode(cls, data: bytes) -> ValidatorSet:
        """Inverse of :meth:`encode`; raises ``ValueError`` on malformed input."""
        try:
            epoch_raw, members = rlp.decode(data)
        except (rlp.DecodingError, ValueError, TypeError) as exc:
            raise ValueError(f"malformed validator set: {exc}") from exc
        return cls(int.from_bytes(epoch_raw, "big"), tuple(Address(m) for m in members))
