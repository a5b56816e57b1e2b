"""The DPoS hard state: what a delegate must remember across crashes to never equivocate.

Theory of operation
-------------------
A delegate signs three things: BLOCKs (one per slot and height), pre-confirms and confirms
(one per height and confirmation round each). The hard state records, for each, the
latest thing signed, and the signing rules below only ever allow signing *after* it:

=============  ====================================  ======================================
what           remembered                            may sign ``(h, r, x)`` / ``(h, s)`` iff
=============  ====================================  ======================================
BLOCK          ``(slot, height)`` of the last block  ``s`` is a later slot (in-slot runs for
                                                     ``blocks_per_slot > 1`` are tracked in
                                                     memory and end with the process)
pre-confirm    latest ``(round, hash)`` per height   ``r`` is higher, or the same round and
               not yet final                         the same hash (a re-send)
confirm        the lock: ``(height, round, hash)``   ``(h, r)`` is higher, or the same with
               of the latest confirm                 the same hash
all            ``guard``: a height                   ``h >= guard``
=============  ====================================  ======================================

The engine puts the encoded hard state in ``Ready.persist`` whenever it changes, in the
same Ready as the messages it covers, and the host stores it before sending them: a
restarted delegate given these bytes back therefore refuses anything that could conflict
with what it sent before the crash.

Lost hard state (amnesia). A delegate restarted with ``hard_state=None`` above genesis
cannot know what it signed. It could only have signed at heights ``<= F + L`` where ``F``
was its final height at the crash and ``L`` the engine's finality-lag cap (nothing is
produced or pre-confirmed further ahead than that). Its committed height ``c`` at restart
is ``F`` (the host stores committed blocks in the Ready that reported them, before the
next one), so it sets ``guard = c + 2L + 1`` — one extra ``L`` of margin for a host that
lost the last Ready's commits — and signs nothing below it: it follows the chain as an
observer until the committee has finalised past every height it may have signed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import rlp

from node.consensus.types import Hash32

VERSION = 1


@dataclass(frozen=True)
class Vote:
    """A vote remembered by the hard state."""

    height: int
    round: int
    hash: Hash32


@dataclass
class HardState:
    """See the module docstring."""

    slot: int = 0
    last_block_slot: int = -1
    last_block_height: int = 0
    guard: int = 0
    lock: Vote | None = None
    preconfirms: dict[int, Vote] = field(default_factory=dict)

    # -- the signing rules ------------------------------------------------------------

    def may_produce(self, height: int, slot: int) -> bool:
        """May a block at ``height`` be signed in ``slot`` (a slot not used before)?"""
        return height >= self.guard and slot > self.last_block_slot

    def may_preconfirm(self, height: int, round_: int, block_hash: bytes) -> bool:
        """May a pre-confirm for ``block_hash`` at ``(height, round_)`` be signed?"""
        if height < self.guard:
            return False
        prev = self.preconfirms.get(height)
        if prev is None or round_ > prev.round:
            return True
        return round_ == prev.round and block_hash == prev.hash

    def may_confirm(self, height: int, round_: int, block_hash: bytes) -> bool:
        """May a confirm for ``block_hash`` at ``(height, round_)`` be signed?"""
        if height < self.guard:
            return False
        lock = self.lock
        if lock is None or (height, round_) > (lock.height, lock.round):
            return True
        return (height, round_) == (lock.height, lock.round) and block_hash == lock.hash

    def preconfirmed(self, height: int) -> Vote | None:
        """The latest pre-confirm signed at ``height``."""
        return self.preconfirms.get(height)

    def forget_below(self, height: int) -> None:
        """Drop pre-confirms at final heights (they can never be signed again anyway)."""
        for h in [h for h in self.preconfirms if h < height]:
            del self.preconfirms[h]

    # -- encoding ---------------------------------------------------------------------

    def encode(self) -> bytes:
        """Canonical RLP (what goes into ``Ready.persist``)."""
        lock = [] if self.lock is None else [self.lock.height, self.lock.round, self.lock.hash]
        pre = [[v.height, v.round, v.hash] for _, v in sorted(self.preconfirms.items())]
        return bytes(
            rlp.encode(
                [
                    VERSION,
                    self.slot,
                    self.last_block_slot + 1,
                    self.last_block_height,
                    self.guard,
                    lock,
                    pre,
                ]
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> HardState:
        """Inverse of :meth:`encode`; raises ``ValueError`` on anything else."""
        try:
            items = rlp.decode(data, strict=True)
            version, slot, block_slot, block_height, guard = (_uint(x) for x in items[:5])
            lock_raw, pre_raw = items[5], items[6]
            if version != VERSION or len(items) != 7:
                raise ValueError(f"unsupported DPoS hard state version {version}")
            lock = _vote(lock_raw) if lock_raw else None
            votes = [_vote(v) for v in pre_raw]
        except (rlp.exceptions.RLPException, TypeError, IndexError) as exc:
            raise ValueError(f"malformed DPoS hard state: {exc}") from exc
        return cls(
            slot=slot,
            last_block_slot=block_slot - 1,
            last_block_height=block_height,
            guard=guard,
            lock=lock,
            preconfirms={v.height: v for v in votes},
        )


def _uint(raw: object) -> int:
    if not isinstance(raw, bytes) or len(raw) > 32 or (raw and raw[0] == 0):
        raise ValueError("malformed DPoS hard state: bad integer")
    return int.from_bytes(raw, "big")


def _vote(raw: object) -> Vote:
    if not isinstance(raw, list) or len(raw) != 3 or not isinstance(raw[2], bytes):
        raise ValueError("malformed DPoS hard state: bad vote")
    if len(raw[2]) != 32:
        raise ValueError("malformed DPoS hard state: bad vote hash")
    return Vote(_uint(raw[0]), _uint(raw[1]), Hash32(raw[2]))
