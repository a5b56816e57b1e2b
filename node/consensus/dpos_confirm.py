"""DPoS confirmation rounds: the BFT agreement that makes produced blocks final.

Theory of operation
-------------------
Finality is agreed height by height on the blocks the producers made, with Tendermint's
two voting phases (producers and round leaders in the proposer's role). Votes are cast at
the *active* height ``h`` (last final height + 1) only, so a delegate confirms the blocks
of its branch one by one, in order, and final blocks always form one chain. In
confirmation round ``r`` at ``h``:

1. *pre-confirm*. In round 0 a delegate pre-confirms its fork-choice child of the last
   final block — normally the one block the slot's producer made. From round 1 on, the
   *round leader* ``committee.member_at(h + r)`` pre-confirms its own fork-choice child
   and sends the block and its POL along; every other delegate pre-confirms the leader's
   block, or *nil* (empty digest) if it has no acceptable leader block within
   ``propose_wait(r)`` ticks. A delegate locked on ``L`` at ``h`` pre-confirms another
   block only if that block has a pre-confirm quorum (POL) in a round later than its lock
   round (Tendermint's unlock rule); otherwise a leader pre-confirms ``L`` and a follower
   nil.
2. *confirm*. On a POL for block ``B`` in its current round ``r``, a delegate that has
   validated ``B`` confirms ``B`` and locks on ``(B, r)``.
3. *final*. A quorum of confirms for ``B`` in one round makes ``B`` final; those confirms
   are its :class:`CommitCertificate` (kind CONFIRM, message round ``2r + 1``; see
   :mod:`node.consensus.dpos_votes`), which verifies on its own against the committee.

*Rounds.* A delegate's round clock runs while the active height has something to agree
on (a block, a lock, or votes). It leaves round ``r`` for ``r + 1`` ``vote_wait(r)``
ticks after a quorum of delegates has voted in rounds ``>= r`` — never alone, so rounds
stay in step however the tick rates drift — and it joins round ``r' > r`` at once when
``f+1`` delegates voted there. Entering a round it re-sends the block and POL of its
lock (or of its last pre-confirm) for the leader; while a round makes no progress it
re-sends its own votes every ``retransmit_every`` ticks, so lost messages are replaced.

*Safety* (no two final blocks at one height). An honest delegate signs at most one
pre-confirm and one confirm per ``(h, r)``. If ``B`` is final in round ``r``, a quorum
confirmed ``B`` in ``r``, so at least ``q - f`` honest delegates are locked on ``B`` with
lock round ``>= r``. Suppose some round ``r' > r`` had a POL for ``B' != B`` and take the
first one: its quorum intersects those locked delegates in an honest one, which
pre-confirmed ``B'`` in ``r'`` while locked on ``B`` — allowed only given a POL for ``B'``
in a round in ``(lock round, r')``, hence in ``[r, r')``: round ``r`` has none (two
quorums of one round would share an honest pre-confirmer), and later rounds have none by
the choice of ``r'``. So no honest delegate ever confirms ``B' != B`` at ``h``, and no
quorum can: final blocks never revert.

*Liveness* (after faults heal). Round 0 succeeds whenever the delegates agree on the
producer's block. When they do not — a Byzantine producer sent different blocks, or a
partition left each side with its own branch, so fork choices differ — the quorum of
votes ends the round quickly and rounds >= 1 take the leader's choice, which depends on
no one else's view. Every lock's POL is relayed, and fork choice ranks the highest POL
first, so an honest leader that has heard the relays picks a block no honest lock
forbids (a lower lock is released by the higher POL: this defeats the IBFT-1.0 "locked on
different blocks" stall); everyone pre-confirms it and it becomes final. Leaders rotate,
so faulty leaders cost a round each.
"""

from __future__ import annotations

from node.consensus.dpos_config import DposConfig
from node.consensus.dpos_schedule import Committees, SlotClock
from node.consensus.dpos_state import HardState, Vote
from node.consensus.dpos_tree import BlockNode, BlockTree
from node.consensus.dpos_votes import (
    CONFIRM,
    NIL,
    PRECONFIRM,
    VoteBook,
    preconfirm_payload,
    wire_round,
)
from node.consensus.engine import Outbound
from node.consensus.messages import EngineId, Kind, SignedMessage, Signer
from node.consensus.types import Address, Hash32, ValidatorSet

VoteSlot = tuple[int, int, int]  # (height, round, phase)


class ConfirmationRounds:
    """The confirmation half of :class:`~node.consensus.dpos.DposEngine` (a mixin).

    The engine owns the shared state declared below; this class holds the rules of the
    rounds at the active height (see the module docstring).
    """

    config: DposConfig
    _signer: Signer
    _me: Address
    _votes: VoteBook
    _tree: BlockTree
    _hard: HardState
    _committees: Committees
    _clock: SlotClock
    _final_height: int
    _final_hash: Hash32
    _out: list[Outbound]
    _dirty: bool

    def _init_rounds(self) -> None:
        self._round = 0
        self._round_elapsed = 0  # ticks in this round while the height is live
        self._quorum_since: int | None = None  # round tick when a quorum reached >= round
        self._quiet = 0  # ticks since the last progress or re-send
        self._alive = 0  # ticks since this process started
        self._own: dict[VoteSlot, SignedMessage] = {}
        self._enter_height()
        self._resume_votes()

    def _resume_votes(self) -> None:
        """After a restart, sign again the votes the hard state records at the active
        height (same digests: no equivocation), so they count and can be re-sent."""
        h = self._final_height + 1
        if self._member_at(h) is None:
            return
        mine = self._hard.preconfirmed(h)
        if mine is not None:
            self._sign_vote(h, mine.round, PRECONFIRM, mine.hash)
        lock = self._hard.lock
        if lock is not None and lock.height == h:
            self._sign_vote(h, lock.round, CONFIRM, lock.hash)

    # -- round clock ------------------------------------------------------------------

    def _enter_height(self) -> None:
        """Start on ``final + 1``: in round 0, or where our own votes say we were."""
        h = self._final_height + 1
        r = 0
        mine = self._hard.preconfirmed(h)
        if mine is not None:
            r = mine.round
        lock = self._hard.lock
        if lock is not None and lock.height == h:
            r = max(r, lock.round)
        if h == self._hard.taint and self._hard.taint_round >= 0:
            r = max(r, self._hard.taint_round + 1)
        self._enter_round(r)
        self._own = {k: v for k, v in self._own.items() if k[0] >= h}

    def _enter_round(self, round_: int) -> None:
        self._round = round_
        self._round_elapsed = 0
        self._quorum_since = None
        self._quiet = 0

    def _live(self) -> bool:
        """Is there anything to agree on at the active height?"""
        h = self._final_height + 1
        lock = self._hard.lock
        return (
            bool(self._tree.children(self._final_hash))
            or (lock is not None and lock.height == h)
            or self._votes.signers_from(h, 0) > 0
        )

    def _tick_round(self) -> None:
        self._alive += 1
        self._fix_taint_round()
        if not self._live():
            return
        self._round_elapsed += 1
        self._quiet += 1
        since = self._quorum_since
        if since is not None and self._round_elapsed - since >= self.config.vote_wait(self._round):
            self._enter_round(self._round + 1)
            self._relay()
        elif self._quiet >= self.config.retransmit_every:
            self._quiet = 0
            self._retransmit()

    def _follow_rounds(self) -> bool:
        """Join a round ``f+1`` delegates are in; note when a quorum reached ours."""
        h = self._final_height + 1
        committee = self._committees.at(h)
        if committee is None:
            return False
        higher = self._votes.highest_round_with(h, self._round, committee.weak_quorum)
        if higher is not None:
            self._enter_round(higher)
            return True
        if self._quorum_since is None and (
            self._votes.signers_from(h, self._round) >= committee.quorum
        ):
            self._quorum_since = self._round_elapsed
        return False

    def _fix_taint_round(self) -> None:
        """An amnesiac at its taint height: after listening, pick the first safe round."""
        h = self._hard.taint
        if self._hard.taint_round >= 0 or h != self._final_height + 1:
            return
        if self._alive < self.config.amnesia_watch:
            return
        self._hard.taint_round = max(self._votes.max_round(h), self._round) + 1
        self._dirty = True
        if self._round <= self._hard.taint_round:
            self._enter_round(self._hard.taint_round + 1)

    # -- votes ------------------------------------------------------------------------

    def round_leader(self, height: int, round_: int) -> Address | None:
        """Who picks the block of confirmation round ``round_ >= 1`` at ``height``."""
        committee = self._committees.at(height)
        return None if committee is None else committee.member_at(height + round_)

    def _member_at(self, height: int) -> ValidatorSet | None:
        committee = self._committees.at(height)
        return committee if committee is not None and self._me in committee else None

    def _confirm_active(self) -> bool:
        """Sign what the rules ask for at the active height in the current round."""
        h, r = self._final_height + 1, self._round
        if self._member_at(h) is None:
            return False
        mine = self._hard.preconfirmed(h)
        if self._hard.may_speak(h, r) and (mine is None or mine.round < r):
            target = self._round_target(h, r)
            if target is not None and self._hard.may_preconfirm(h, r, target):
                self._sign_vote(h, r, PRECONFIRM, target)
                if r > 0 and target and self.round_leader(h, r) == self._me:
                    self._relay_support(h, target)
                return True
        lock = self._hard.lock
        if lock is not None and (lock.height, lock.round) >= (h, r):
            return False
        for block_hash in sorted(self._votes.pols_at(h, r)):
            node = self._tree.get(block_hash)
            if node is None or node.parent != self._final_hash:
                continue  # never confirm a block we have not validated
            if self._hard.may_confirm(h, r, block_hash):
                self._sign_vote(h, r, CONFIRM, block_hash)
                return True
        return False

    def _round_target(self, h: int, r: int) -> Hash32 | None:
        """What to pre-confirm at ``(h, r)``: a block, NIL, or None (not yet)."""
        nil_due = self._round_elapsed >= self.config.propose_wait(r)
        wait = NIL if nil_due else None
        leader = self.round_leader(h, r)
        if r == 0 or leader == self._me:
            own = self._own_choice(h)
            return own if own is not None else wait
        if leader is None or self._votes.equivocated(h, r, PRECONFIRM, leader):
            return wait
        proposal = self._votes.vote_of(h, r, PRECONFIRM, leader)
        if proposal is None:
            return wait
        if proposal == NIL:
            return NIL
        node = self._tree.get(proposal)
        if node is None or node.parent != self._final_hash:
            return wait  # the leader sends the block along; it may still arrive
        return proposal if self._allowed_by_lock(h, proposal) == proposal else NIL

    def _own_choice(self, h: int) -> Hash32 | None:
        """Own fork choice at ``h`` (our lock, unless a later POL releases it)."""
        chain = self._tree.best_chain(self._votes.pol_round)
        return self._allowed_by_lock(h, chain[0].hash if chain else None)

    def _allowed_by_lock(self, h: int, target: Hash32 | None) -> Hash32 | None:
        """Tendermint's unlock rule: leave a lock only for a block with a later POL."""
        lock = self._hard.lock
        if lock is None or lock.height != h or target == lock.hash:
            return target
        if target is None or self._votes.pol_round(target) <= lock.round:
            return lock.hash
        return target

    def _sign_vote(self, height: int, round_: int, phase: int, block_hash: Hash32) -> None:
        committee = self._committees.at(height)
        assert committee is not None
        vote = Vote(height, round_, block_hash)
        if phase == PRECONFIRM:
            payload = preconfirm_payload(self._clock.slot)
            self._hard.preconfirms[height] = vote
        else:
            payload = b""
            self._hard.lock = vote
        msg = self._signer.sign(
            self.config.chain_id,
            EngineId.DPOS,
            Kind.CONFIRM,
            height,
            wire_round(round_, phase),
            block_hash,
            payload,
        )
        self._dirty = True
        self._quiet = 0
        self._own[(height, round_, phase)] = msg
        self._out.append(Outbound(None, msg))
        if self._votes.add(msg, committee.quorum) and phase == PRECONFIRM:
            self._tree.invalidate()

    # -- re-sending -------------------------------------------------------------------

    def _relay(self) -> None:
        """Send the block and POL of our lock (or last pre-confirm) for the next leader."""
        h = self._final_height + 1
        lock = self._hard.lock
        mine = self._hard.preconfirmed(h)
        if lock is not None and lock.height == h:
            self._relay_support(h, lock.hash)
        elif mine is not None and mine.hash:
            self._relay_support(h, mine.hash)

    def _relay_support(self, h: int, target: Hash32) -> None:
        """Send the block we pre-confirm and its POL, so others can follow us."""
        node: BlockNode | None = self._tree.get(target)
        if node is not None and node.message is not None:
            self._out.append(Outbound(None, node.message))
        pol = self._votes.pol_round(target)
        if pol >= 0:
            for vote in self._votes.votes(h, pol, PRECONFIRM, target):
                if vote.signer != self._me:
                    self._out.append(Outbound(None, vote))

    def _retransmit(self) -> None:
        """No progress for a while: re-send this round's votes (they may have been lost)."""
        h = self._final_height + 1
        for key in sorted(self._own):
            if key[0] == h and key[1] == self._round:
                self._out.append(Outbound(None, self._own[key]))
        self._relay()
