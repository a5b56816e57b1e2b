"""The DPoS hard state: what a delegate must remember across crashes to never equivocate.

Theory of operation
-------------------
A delegate signs three things: BLOCKs (one per slot and height), pre-confirms and confirms
(one per height and confirmation round each). The hard state records, for each, the
latest thing signed, and the signing rules below only ever allow signing *after* it:

=============  ====================================  ======================================
what           remembered                            may sign ``(h, r, x)`` / ``(h, s)`` iff
=============  ====================================  ======================================
BLOCK          ``(slot, height)`` of the last block  ``s`` is a later slot and ``h >=
                                                     guard`` (in-slot runs for
                                                     ``blocks_per_slot > 1`` are tracked in
                                                     memory and end with the process)
pre-confirm    latest ``(round, hash)`` per height   ``r`` is higher, or the same round and
               not yet final                         the same hash (a re-send)
confirm        the lock: ``(height, round, hash)``   ``(h, r)`` is higher, or the same with
               of the latest confirm                 the same hash
=============  ====================================  ======================================

The engine puts the encoded hard state in ``Ready.persist`` whenever it changes, in the
same Ready as the messages it covers, and the host stores it before sending them: a
restarted delegate given these bytes back therefore refuses anything that could conflict
with what it sent before the crash.

Lost hard state (amnesia). A delegate restarted with ``hard_state=None`` above genesis
cannot know what it signed. What it *could* have signed is narrow, because the engine
votes only at the active height (final + 1) and produces at most ``L`` (``max_lag``)
heights above the final one. With ``c`` its committed height at restart — its final
height at the crash, since the host stores ``Ready.committed`` with ``Ready.persist`` —
the lost incarnation signed at most BLOCKs at heights ``<= c + L``, and pre-confirms and
confirms at height ``c + 1``. So the amnesiac

- sets ``guard = c + L + 1``: no BLOCK below it;
- sets ``taint = c + 1`` and, at that height, signs no pre-confirm (block or nil) in a
  round its lost incarnation may have reached. A delegate enters round ``r + 1`` only
  after a quorum voted in rounds ``>= r``, or after ``f+1`` voted in a round ``> r``
  (:mod:`node.consensus.dpos_confirm`), so it never got more than one round beyond the
  highest round an honest delegate had voted in. Honest delegates re-send their current
  round's votes while a height is stuck, so after listening ``amnesia_watch`` ticks the
  amnesiac has seen that round ``M`` (rounds only grow) and fixes ``taint_round = M + 1``:
  it pre-confirms from round ``M + 2`` on;
- confirms on a pre-confirm quorum (POL) in any round at ``c + 1``: a round has at most
  one POL, so such a confirm equals any confirm its lost incarnation signed in that
  round;
- is a normal delegate again from height ``c + 2``.

Its lost *lock* cannot be honoured, so for agreement an amnesiac counts as one of the
``f`` faults until ``c + 1`` is final (as in PBFT, where a replica without its votes
weakens the quorum intersection the same way). ``guard``, ``taint`` and ``taint_round``
are persisted, so a crash with state during the recovery keeps them.
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
    taint: int = 0
    taint_round: int = -1
    lock: Vote | None = None
    preconfirms: dict[int, Vote] = field(default_factory=dict)

    # -- the signing rules ------------------------------------------------------------

    def may_produce(self, height: int, slot: int) -> bool:
        """May a block at ``height`` be signed in ``slot`` (a slot not used before)?"""
        return height >= self.guard and slot > self.last_block_slot

    def may_preconfirm(self, height: int, round_: int, block_hash: bytes) -> bool:
        """May a pre-confirm for ``block_hash`` at ``(height, round_)`` be signed?"""
        prev = self.preconfirms.get(height)
        if prev is None or round_ > prev.round:
            return True
        return round_ == prev.round and block_hash == prev.hash

    def may_confirm(self, height: int, round_: int, block_hash: bytes) -> bool:
        """May a confirm for ``block_hash`` at ``(height, round_)`` be signed?"""
        lock = self.lock
        if lock is None or (height, round_) > (lock.height, lock.round):
            return True
        return (height, round_) == (lock.height, lock.round) and block_hash == lock.hash

    def may_speak(self, height: int, round_: int) -> bool:
        """May a pre-confirm be signed at all at ``(height, round_)``? False at the
        height an amnesiac may have voted at, up to its taint round (module docstring)."""
        return height != self.taint or round_ > self.taint_round >= 0

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
                    self.taint,
                    self.taint_round + 1,
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
            ints = [_uint(x) for x in items[:7]]
            version, slot, block_slot, block_height, guard, taint, taint_round = ints
            lock_raw, pre_raw = items[7], items[8]
            if version != VERSION or len(items) != 9:
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
            taint=taint,
            taint_round=taint_round - 1,
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
    if len(raw[2]) not in (0, 32):  # 0: a nil pre-confirm
        raise ValueError("malformed DPoS hard state: bad vote hash")
    return Vote(_uint(raw[0]), _uint(raw[1]), Hash32(raw[2]))
