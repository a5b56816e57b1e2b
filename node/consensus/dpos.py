"""DPoS: elected delegates produce blocks in turn; BFT confirmations make them final.

Theory of operation
-------------------
*Production.* Each epoch has a committee of delegates (see
:mod:`node.consensus.dpos_schedule` for how committees switch). Time is cut into slots of
``slot_ticks`` ticks; the producer of slot ``s`` is ``committee.member_at(s)``. When its
slot starts, the producer asks the host for a block on its fork-choice head
(``Ready.propose``) and broadcasts it as a signed BLOCK message (``height``, ``round`` =
slot, ``digest`` = block hash, ``payload`` = the block). A producer that misses its slot
is simply skipped: the next producer builds on whatever head it has. Blocks are accepted
up to ``slot_window`` slots ahead of the local slot clock (clocks drift), and any number of
slots behind as long as slots increase along the chain.

*Confirmation.* Finality is a BFT agreement per height, run on the blocks the producers
already made (Tendermint's two voting phases, with the producers in the proposer's role).
For the lowest non-final height ``h`` (the *active* height), in confirmation round ``r``:

1. *pre-confirm*: a delegate signs a pre-confirm for its fork-choice child of the last
   final block — unless it is locked on another block ``L`` at ``h`` and that child has no
   pre-confirm quorum (POL) in a round later than its lock round, in which case it
   pre-confirms ``L`` again;
2. *confirm*: on a quorum of pre-confirms for block ``B`` in round ``r`` (a POL), a
   delegate that has validated ``B`` signs a confirm for ``B`` and locks on ``(B, r)``;
3. *final*: a quorum of confirms for ``B`` in one round makes ``B`` final; those confirms
   are its :class:`CommitCertificate` (kind CONFIRM, round ``2r + 1``, see
   :mod:`node.consensus.dpos_votes`), which verifies on its own against the committee.

A round lasts ``confirm_timeout`` ticks (growing slowly with the round) while there is a
block to confirm; then the delegate moves to the next round and re-broadcasts what others
may have missed (the block it pre-confirms, the POL of its lock). A delegate that sees
``f+1`` delegates in a higher round at ``h`` joins it. Heights above the active one are
*pipelined*: a delegate pre-confirms, in round 0, each block of its fork-choice chain
whose parent it pre-confirmed, in order — so when ``h`` becomes final the POL for
``h + 1`` is often already there and one more message delay finalises it. Confirms are
never pipelined: a delegate confirms at ``h`` only once ``h - 1`` is final, so final
blocks always form one chain. A block is thus final once a quorum has signed on it
directly; a certificate for a descendant also proves it final (the descendant's
confirmers had it final), which the engine uses as a reason to catch up.

*Safety* (no two final blocks at one height). An honest delegate signs at most one
pre-confirm and one confirm per ``(h, r)``. If ``B`` is final in round ``r``, a quorum
confirmed ``B`` in ``r``, so at least ``q - f`` honest delegates are locked on ``B`` with
lock round ``>= r``. Suppose some round ``r' > r`` had a POL for ``B' != B`` and take the
first one: its quorum intersects those locked delegates in an honest one, which
pre-confirmed ``B'`` in ``r'`` while locked on ``B`` — allowed only given a POL for ``B'``
in a round in ``(lock round, r')``, hence in ``[r, r')``: round ``r`` has none (two
quorums of one round would share an honest pre-confirmer), and later rounds have none by
the choice of ``r'``. So no honest delegate ever confirms ``B' != B`` at ``h``, and no
quorum can. Final blocks therefore never revert, and fork choice starts from them.

*Liveness* (after faults heal). Rounds synchronise (timeouts, ``f+1`` joins); the POL of
every lock is relayed, so all honest delegates learn the highest POL round at ``h``; fork
choice ranks the POL first, so unlocked delegates pre-confirm the same block as the
delegate with the highest lock, and a delegate locked lower is released by that POL
(Tendermint's unlock rule — this is what defeats the IBFT-1.0 "locked on different
blocks" stall and a Byzantine producer's equivocation). Everyone then pre-confirms one
block in one round, and it becomes final.

*Evidence.* Every admitted BLOCK and CONFIRM goes through an
:class:`EquivocationDetector`: two BLOCKs for one ``(height, slot)`` or two confirmation
votes for one ``(height, message round)`` with different digests become
``Ready.evidence``.

*Catch-up.* Confirms at ``h >= F + 2`` or messages beyond the window show a delegate it is
behind: it asks for committed blocks (``Ready.sync``) and :meth:`DposEngine.deliver`
verifies each one (certificate against the committee of its height, payload via the
validator, parent = last final block) before making it final. A delegate that already
finalised ``h`` answers a late pre-confirm at ``h`` (from a later round than the
certificate's) by sending that delegate the certificate's confirms.

*Persistence.* See :mod:`node.consensus.dpos_state`: what was signed is in
``Ready.persist`` before it is sent, and a delegate restarted without it stays silent
until the chain is final past everything it may have signed.

*Finality lag.* ``status().finality_lag`` is head height minus final height. Producers
stop extending a chain more than ``max_lag`` heights above the last final block, which
bounds memory, the window of admitted messages, and what an amnesiac may have signed.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.consensus.certificate import CommitCertificate
from node.consensus.dpos_schedule import Committees, SlotClock
from node.consensus.dpos_state import HardState, Vote
from node.consensus.dpos_tree import BlockNode, BlockTree
from node.consensus.dpos_votes import (
    CONFIRM,
    PRECONFIRM,
    VoteBook,
    decode_preconfirm_payload,
    preconfirm_payload,
    split_round,
    wire_round,
)
from node.consensus.engine import (
    BlockValidator,
    CommittedBlock,
    DropReason,
    EngineStatus,
    MessageFilter,
    Outbound,
    ProposalRequest,
    Ready,
    SyncRequest,
)
from node.consensus.evidence import EquivocationDetector, EquivocationEvidence
from node.consensus.messages import EngineId, Kind, SignedMessage, Signer
from node.consensus.types import ZERO_HASH, Address, Hash32, ValidatorSet
from node.errors import StorageError

#: Most committed blocks buffered from catch-up answers ahead of the final height.
_DELIVERY_BUFFER = 64


@dataclass(frozen=True)
class DposConfig:
    """Parameters of the DPoS engine (all times in ticks)."""

    chain_id: int
    slot_ticks: int = 10  # ticks per producer slot
    blocks_per_slot: int = 1  # blocks a producer may chain within its slot
    epoch_length: int = 64  # heights per epoch (committee term)
    confirm_timeout: int = 40  # ticks of a confirmation round (grows to 2x with rounds)
    slot_window: int = 3  # accept blocks at most this many slots ahead of the local slot
    max_lag: int = 8  # produce/pre-confirm at most this many heights above the final one

    def __post_init__(self) -> None:
        for name in ("slot_ticks", "blocks_per_slot", "epoch_length", "confirm_timeout"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} >= 1")
        if self.slot_window < 0 or self.max_lag < 1:
            raise ValueError("slot_window >= 0 and max_lag >= 1")

    def round_timeout(self, round_: int) -> int:
        """Ticks of confirmation round ``round_``: +25% per round, capped at 2x."""
        return self.confirm_timeout + self.confirm_timeout * min(round_, 4) // 4


class DposEngine:
    """The DPoS engine (implements :class:`node.consensus.engine.Engine`).

    ``validators`` is the committee of the epoch of ``committed_height + 1``; later
    committees come through :meth:`set_validators`. ``hard_state`` is exactly the bytes
    last put in ``Ready.persist`` (None on a first start).
    """

    def __init__(
        self,
        config: DposConfig,
        signer: Signer,
        validators: ValidatorSet,
        validate: BlockValidator,
        *,
        committed_height: int = 0,
        committed_hash: Hash32 = ZERO_HASH,
        hard_state: bytes | None = None,
    ) -> None:
        self.config = config
        self._signer = signer
        self._me: Address = signer.address
        self._validate = validate
        self._filter = MessageFilter(config.chain_id, EngineId.DPOS)
        self._detector = EquivocationDetector()
        self._committees = Committees(config.epoch_length, validators, committed_height + 1)
        self._tree = BlockTree(committed_hash, committed_height, config.blocks_per_slot)
        self._votes = VoteBook()
        self._final_height = committed_height
        self._final_hash = committed_hash
        self._applied = committed_height  # final height the host has acknowledged
        self._reported = committed_height  # final height as of the last ready()
        self._hard = self._load_hard_state(hard_state, committed_height, config.max_lag)
        self._dirty = hard_state is None  # a first start persists its initial state
        self._clock = SlotClock(
            config.slot_ticks, max(self._hard.slot, self._hard.last_block_slot, 0)
        )
        self._round = 0
        self._round_elapsed = 0
        self._slot_run = (-1, 0)  # (slot, blocks this process produced in it)
        self._request: ProposalRequest | None = None
        self._requested: tuple[int, int] | None = None  # (slot, height) last asked for
        self._slots_with_block: set[int] = set()
        self._skipped = 0
        self._recent: dict[int, tuple[CommitCertificate, SignedMessage | None]] = {}
        self._deliveries: dict[int, list[CommittedBlock]] = {}
        self._behind: tuple[int, Address | None] | None = None  # (final height seen, peer)
        self._behind_wait = 0
        self._sync_asked: tuple[int, int] = (-1, 0)  # (from_height, ticks until re-ask)
        self._relay_due = False
        self._evidence_total = 0
        self._out: list[Outbound] = []
        self._committed: list[CommittedBlock] = []
        self._evidence: list[EquivocationEvidence] = []
        self._propose_out: ProposalRequest | None = None
        self._sync_out: list[SyncRequest] = []
        self._enter_height()
        self._drive()

    @staticmethod
    def _load_hard_state(data: bytes | None, committed_height: int, max_lag: int) -> HardState:
        if data is None:
            # Above genesis, no hard state means it was lost (a first start persists one
            # at once): sign nothing where the lost incarnation may have signed.
            guard = committed_height + 2 * max_lag + 1 if committed_height > 0 else 0
            return HardState(guard=guard)
        try:
            return HardState.decode(data)
        except ValueError as exc:
            raise StorageError(f"DPoS hard state is unreadable: {exc}") from exc

    # -- the Engine interface ---------------------------------------------------------

    def tick(self) -> None:
        """One tick: slot clock, confirmation-round timer, catch-up timer."""
        self._committees.resolve(self._applied)
        if self._clock.tick():
            self._slot_ended(self._clock.slot - 1)
        self._tick_round()
        self._tick_catch_up()
        self._drive()

    def step(self, message: SignedMessage) -> None:
        """Process a BLOCK or CONFIRM from a peer (dropped and counted if inadmissible)."""
        self._committees.resolve(self._applied)
        if self._admit(message):
            if message.kind == Kind.BLOCK:
                self._on_block(message)
            else:
                self._on_confirm(message)
        self._drive()

    def propose(self, payload: bytes) -> None:
        """Sign and broadcast the block the host built for our ``ProposalRequest``."""
        self._committees.resolve(self._applied)
        req = self._request
        if req is None or req.round != self._clock.slot:
            return  # the slot is over: the answer came too late
        self._request = None
        info = self._validate(payload)
        if (
            info is None
            or info.height != req.height
            or info.parent_hash != req.parent_hash
            or self._tree.get(req.parent_hash) is None
        ):
            self._filter.drop(DropReason.INVALID)
            return
        msg = self._signer.sign(
            self.config.chain_id,
            EngineId.DPOS,
            Kind.BLOCK,
            req.height,
            req.round,
            info.hash,
            payload,
        )
        self._hard.last_block_slot = req.round
        self._hard.last_block_height = req.height
        self._dirty = True
        run = self._slot_run[1] + 1 if self._slot_run[0] == req.round else 1
        self._slot_run = (req.round, run)
        self._out.append(Outbound(None, msg))
        self._detector.observe(msg)
        self._slots_with_block.add(req.round)
        self._tree.offer(msg)
        self._settle()
        self._drive()

    def deliver(self, block: CommittedBlock) -> None:
        """Take a committed block fetched by catch-up; verified before it is used."""
        self._committees.resolve(self._applied)
        if block.height <= self._final_height:
            return
        if block.height > self._final_height + _DELIVERY_BUFFER:
            self._filter.drop(DropReason.OUT_OF_WINDOW)
            return
        queued = self._deliveries.setdefault(block.height, [])
        if block not in queued and len(queued) < 4:
            queued.append(block)
        self._drive()

    def set_validators(self, validators: ValidatorSet, start_height: int) -> None:
        """The committee read from the boundary block ``start_height - epoch_length``.

        Call it after executing that (final) block and before the ``advance()`` that
        acknowledges it — or, at restart, before the first input. It takes effect at
        ``start_height``; see :mod:`node.consensus.dpos_schedule`.
        """
        self._committees.offer(validators, start_height)

    def has_ready(self) -> bool:
        """True when :meth:`ready` has something for the host."""
        return bool(
            self._dirty
            or self._out
            or self._committed
            or self._evidence
            or self._propose_out is not None
            or self._sync_out
        )

    def ready(self) -> Ready:
        """Everything accumulated since the previous call (persist before sending)."""
        persist = None
        if self._dirty:
            self._hard.slot = self._clock.slot
            persist = self._hard.encode()
        rd = Ready(
            persist=persist,
            messages=self._out,
            committed=self._committed,
            evidence=self._evidence,
            propose=self._propose_out,
            sync=self._sync_out,
        )
        self._dirty = False
        self._out, self._committed, self._evidence, self._sync_out = [], [], [], []
        self._propose_out = None
        self._reported = self._final_height
        return rd

    def advance(self) -> None:
        """The host processed the last Ready: its committed blocks are applied."""
        self._applied = self._reported
        self._committees.resolve(self._applied)
        self._settle()
        self._drive()

    def status(self) -> EngineStatus:
        """Snapshot: round is the current slot, round_changes the skipped slots."""
        head = self._head()
        return EngineStatus(
            engine="dpos",
            height=self._final_height + 1,
            round=self._clock.slot,
            epoch=self._committees.epoch_of(self._final_height + 1),
            proposer=self._committees.producer(head.height + 1, self._clock.slot),
            committed_height=self._final_height,
            finality_lag=head.height - self._final_height,
            round_changes=self._skipped,
            dropped=dict(sorted(self._filter.dropped.items())),
            evidence=self._evidence_total,
        )

    # -- admission --------------------------------------------------------------------

    def _low(self) -> int:
        return max(self._final_height + 1 - self.config.epoch_length, self._committees.first_height)

    def _high(self) -> int:
        return min(self._final_height + self.config.max_lag, self._committees.last_height)

    def _admit(self, msg: SignedMessage) -> bool:
        """The admission rules; counts the reason and returns False on a drop."""
        if msg.engine != EngineId.DPOS:
            self._filter.drop(DropReason.WRONG_ENGINE)
            return False
        if not _well_formed(msg):
            self._filter.drop(DropReason.MALFORMED)
            return False
        if msg.height > self._high():
            self._hint_from_ahead(msg)
            self._filter.drop(DropReason.OUT_OF_WINDOW)
            return False
        if msg.kind == Kind.BLOCK and not self._slot_in_window(msg):
            self._filter.drop(DropReason.OUT_OF_WINDOW)
            return False
        committee = self._committees.at(msg.height)
        if not self._filter.admit(msg, committee, self._low(), self._high()):
            return False
        evidence = self._detector.observe(msg)
        if evidence is not None:
            self._evidence.append(evidence)
            self._evidence_total += 1
        return True

    def _slot_in_window(self, msg: SignedMessage) -> bool:
        """Is a block's slot close enough to ours? A verified one may move our clock."""
        limit = self._clock.slot + self.config.slot_window
        if msg.round <= limit:
            return True
        committee = self._committees.at(self._final_height + 1)
        if committee is None or msg.signer not in committee or not msg.verify(self.config.chain_id):
            return False
        self._announce(msg.signer, msg.round)
        return msg.round <= self._clock.slot + self.config.slot_window

    def _hint_from_ahead(self, msg: SignedMessage) -> None:
        """A verified message far above our window means the others are far ahead."""
        if msg.kind == Kind.CONFIRM and split_round(msg.round)[1] == CONFIRM:
            final_there = msg.height - 1
        else:
            final_there = msg.height - 1 - self.config.max_lag
        if final_there <= self._final_height:
            return
        if self._behind is not None and self._behind[0] >= final_there:
            return
        committee = self._committees.at(self._final_height + 1)
        if committee is None or msg.signer not in committee or not msg.verify(self.config.chain_id):
            return
        self._note_behind(final_there, msg.signer)

    # -- inbound messages -------------------------------------------------------------

    def _on_block(self, msg: SignedMessage) -> None:
        if msg.height <= self._final_height:
            return
        if self._committees.producer(msg.height, msg.round) != msg.signer:
            self._filter.drop(DropReason.INVALID)  # not this producer's slot
            return
        self._announce(msg.signer, msg.round)
        self._slots_with_block.add(msg.round)
        if not self._tree.offer(msg):
            self._filter.drop(DropReason.OUT_OF_WINDOW)  # no room for more pending blocks
            return
        self._settle()

    def _on_confirm(self, msg: SignedMessage) -> None:
        round_, phase = split_round(msg.round)
        if phase == PRECONFIRM:
            self._announce(msg.signer, decode_preconfirm_payload(msg.payload))
        if msg.height <= self._final_height:
            self._help_laggard(msg, round_, phase)
            return
        committee = self._committees.at(msg.height)
        assert committee is not None  # admitted, so inside the resolved window
        if self._votes.add(msg, committee.quorum) and phase == PRECONFIRM:
            self._tree.invalidate()
        if phase == CONFIRM and msg.height > self._final_height + 1:
            self._note_behind(msg.height - 1, msg.signer)

    def _help_laggard(self, msg: SignedMessage, round_: int, phase: int) -> None:
        """A pre-confirm at a height we finalised, from a later round than our
        certificate: its sender missed the confirms. Send them (and the block)."""
        recent = self._recent.get(msg.height)
        if phase != PRECONFIRM or recent is None or msg.signer == self._me:
            return
        cert, block = recent
        if round_ <= split_round(cert.round)[0]:
            return
        if block is not None:
            self._out.append(Outbound(msg.signer, block))
        for signer, signature in cert.signatures:
            vote = SignedMessage(
                cert.engine,
                cert.kind,
                cert.height,
                cert.round,
                cert.block_hash,
                b"",
                signer,
                signature,
            )
            self._out.append(Outbound(msg.signer, vote))

    def _announce(self, who: Address, slot: int) -> None:
        self._clock.announce(who, slot)
        committee = self._committees.at(self._final_height + 1)
        if committee is not None and self._clock.follow(committee, self._me):
            self._forget_request()

    def _settle(self) -> None:
        _attached, rejected = self._tree.settle(self._validate)
        for _ in range(rejected):
            self._filter.drop(DropReason.INVALID)

    # -- time -------------------------------------------------------------------------

    def _slot_ended(self, slot: int) -> None:
        if slot not in self._slots_with_block:
            self._skipped += 1
        self._slots_with_block = {s for s in self._slots_with_block if s > slot}
        self._forget_request()

    def _forget_request(self) -> None:
        """The slot of an outstanding ProposalRequest is over: withdraw it."""
        if self._request is not None and self._request.round != self._clock.slot:
            self._request = None
        if self._propose_out is not None and self._propose_out.round != self._clock.slot:
            self._propose_out = None

    def _tick_round(self) -> None:
        h = self._final_height + 1
        lock = self._hard.lock
        if not self._tree.children(self._final_hash) and not (lock and lock.height == h):
            return  # nothing to confirm: the round clock waits for a block
        self._round_elapsed += 1
        if self._round_elapsed >= self.config.round_timeout(self._round):
            self._enter_round(self._round + 1)
            self._relay_due = True

    def _enter_round(self, round_: int) -> None:
        self._round = round_
        self._round_elapsed = 0

    def _tick_catch_up(self) -> None:
        from_height, wait = self._sync_asked
        if wait > 0:
            self._sync_asked = (from_height, wait - 1)
        if self._behind is None:
            return
        target, peer = self._behind
        if self._final_height >= target:
            self._behind = None
            return
        self._behind_wait += 1
        if self._behind_wait >= self.config.confirm_timeout // 2:
            self._behind_wait = 0
            self._request_sync(peer)

    def _note_behind(self, final_there: int, peer: Address) -> None:
        if self._behind is None or final_there > self._behind[0]:
            if self._behind is None:
                self._behind_wait = 0
            self._behind = (final_there, peer)

    def _request_sync(self, peer: Address | None) -> None:
        """Ask for committed blocks from our next height (not twice in a short while)."""
        from_height = self._final_height + 1
        asked, wait = self._sync_asked
        if asked == from_height and wait > 0:
            return
        self._sync_asked = (from_height, self.config.confirm_timeout // 2)
        self._sync_out.append(SyncRequest(from_height, peer))

    # -- the protocol -----------------------------------------------------------------

    def _drive(self) -> None:
        """Apply every rule until nothing changes, then produce and relay."""
        while True:
            changed = self._finalize()
            changed = self._join_higher_round() or changed
            changed = self._confirm_active() or changed
            changed = self._preconfirm_ahead() or changed
            if not changed:
                break
        self._produce()
        if self._relay_due:
            self._relay_due = False
            self._relay()

    def _head_chain(self) -> list[BlockNode]:
        return self._tree.best_chain(self._votes.pol_round)

    def _head(self) -> BlockNode:
        return self._tree.head(self._votes.pol_round)

    def _finalize(self) -> bool:
        """Make the active height final from a delivered block or a confirm quorum."""
        progress = False
        while True:
            h = self._final_height + 1
            committee = self._committees.at(h)
            if committee is None:
                return progress
            if self._finalize_delivered(h, committee):
                progress = True
                continue
            cert = self._votes.certificate(h)
            if cert is None:
                return progress
            node = self._tree.get(cert.block_hash)
            if node is None or node.message is None or node.parent != self._final_hash:
                # The committee finalised a block we lack: fetch it with its certificate.
                self._request_sync(cert.signatures[0][0])
                return progress
            self._commit(node.hash, node.message.payload, cert, node.message)
            progress = True

    def _finalize_delivered(self, height: int, committee: ValidatorSet) -> bool:
        for block in self._deliveries.pop(height, []):
            if self._verify_delivered(block, committee):
                self._commit(block.block_hash, block.payload, block.certificate, None)
                return True
            self._filter.drop(DropReason.INVALID)
        return False

    def _verify_delivered(self, block: CommittedBlock, committee: ValidatorSet) -> bool:
        cert = block.certificate
        if (cert.engine, cert.kind, cert.height, cert.block_hash) != (
            EngineId.DPOS,
            Kind.CONFIRM,
            block.height,
            block.block_hash,
        ) or split_round(cert.round)[1] != CONFIRM:
            return False
        if not cert.is_valid(self.config.chain_id, committee):
            return False
        info = self._validate(block.payload)
        return (
            info is not None
            and info.hash == block.block_hash
            and info.height == block.height
            and info.parent_hash == self._final_hash
        )

    def _commit(
        self,
        block_hash: Hash32,
        payload: bytes,
        cert: CommitCertificate,
        message: SignedMessage | None,
    ) -> None:
        h = self._final_height + 1
        self._committed.append(CommittedBlock(h, block_hash, payload, cert))
        self._final_height, self._final_hash = h, block_hash
        self._recent[h] = (cert, message)
        self._tree.finalize(block_hash, h)
        self._votes.forget_below(h + 1)
        self._hard.forget_below(h + 1)
        low = self._low()
        self._detector.forget_below(low)
        self._filter.forget_below(low)
        self._committees.forget_below(low)
        keep = h - 2 * self.config.max_lag
        self._recent = {k: v for k, v in self._recent.items() if k > keep}
        self._enter_height()
        self._settle()

    def _enter_height(self) -> None:
        """Start confirming ``final + 1``: round 0, unless a vote we hold says otherwise."""
        h = self._final_height + 1
        self._round, self._round_elapsed = 0, 0
        mine = self._hard.preconfirmed(h)
        if mine is not None:
            node = self._tree.get(mine.hash)
            stale = node is None or node.parent != self._final_hash
            # A pipelined vote for a block off the final chain can never help: move past it.
            self._round = mine.round + 1 if stale else mine.round
        lock = self._hard.lock
        if lock is not None and lock.height == h:
            self._round = max(self._round, lock.round)

    def _join_higher_round(self) -> bool:
        h = self._final_height + 1
        committee = self._committees.at(h)
        if committee is None:
            return False
        higher = self._votes.highest_round_with(h, self._round, committee.weak_quorum)
        if higher is None:
            return False
        self._enter_round(higher)
        return True

    def _member_at(self, height: int) -> ValidatorSet | None:
        committee = self._committees.at(height)
        return committee if committee is not None and self._me in committee else None

    def _confirm_active(self) -> bool:
        """Pre-confirm and confirm at the active height in the current round."""
        h, r = self._final_height + 1, self._round
        if self._member_at(h) is None:
            return False
        mine = self._hard.preconfirmed(h)
        if mine is None or mine.round < r:
            target = self._round_target(h, r)
            if target is not None and self._hard.may_preconfirm(h, r, target):
                self._sign_vote(h, r, PRECONFIRM, target)
                if r > 0:
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

    def round_leader(self, height: int, round_: int) -> Address | None:
        """Who picks the block of confirmation round ``round_ >= 1`` at ``height``."""
        committee = self._committees.at(height)
        return None if committee is None else committee.member_at(height + round_)

    def _round_target(self, h: int, r: int) -> Hash32 | None:
        """What to pre-confirm at ``(h, r)``.

        Round 0 takes the delegate's own fork choice (the producer's block, normally
        the only candidate). Fork choices can differ when delegates hold different
        branches (after a partition, or a producer's equivocation), so from round 1 on
        the round leader's pre-confirm decides, as Tendermint's proposal does; the
        leader sends the block and its POL along. A delegate without the leader's vote
        or block waits (the round times out if the leader is faulty).
        """
        leader = self.round_leader(h, r)
        if r == 0 or leader == self._me:
            return self._preconfirm_target(h)
        if leader is None:
            return None
        proposal = self._votes.vote_of(h, r, PRECONFIRM, leader)
        node = self._tree.get(proposal) if proposal is not None else None
        if node is None or node.parent != self._final_hash:
            return None
        return self._allowed_by_lock(h, node.hash)

    def _preconfirm_target(self, h: int) -> Hash32 | None:
        """Own fork choice at ``h``, unless our lock forbids it."""
        chain = self._head_chain()
        return self._allowed_by_lock(h, chain[0].hash if chain else None)

    def _allowed_by_lock(self, h: int, target: Hash32 | None) -> Hash32 | None:
        """Tendermint's unlock rule: leave a lock only for a block with a later POL."""
        lock = self._hard.lock
        if lock is None or lock.height != h or target == lock.hash:
            return target
        if target is None or self._votes.pol_round(target) <= lock.round:
            return lock.hash
        return target

    def _relay_support(self, h: int, target: Hash32) -> None:
        """Send the block we pre-confirm and its POL, so others can follow us."""
        node = self._tree.get(target)
        if node is not None and node.message is not None:
            self._out.append(Outbound(None, node.message))
        pol = self._votes.pol_round(target)
        if pol >= 0:
            for vote in self._votes.votes(h, pol, PRECONFIRM, target):
                if vote.signer != self._me:
                    self._out.append(Outbound(None, vote))

    def _preconfirm_ahead(self) -> bool:
        """Pipelining: pre-confirm (round 0) the fork-choice chain above the active height."""
        for node in self._head_chain()[1:]:
            h = node.height
            if h > self._final_height + self.config.max_lag or self._member_at(h) is None:
                return False
            below = self._hard.preconfirmed(h - 1)
            if below is None or below.hash != node.parent:
                return False
            mine = self._hard.preconfirmed(h)
            if mine is not None:
                if mine.hash == node.hash:
                    continue
                return False
            if not self._hard.may_preconfirm(h, 0, node.hash):
                return False
            self._sign_vote(h, 0, PRECONFIRM, node.hash)
            return True
        return False

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
        self._out.append(Outbound(None, msg))
        if self._votes.add(msg, committee.quorum) and phase == PRECONFIRM:
            self._tree.invalidate()

    def _produce(self) -> None:
        """Ask the host for a block if this is our slot and we may sign one."""
        if self._request is not None:
            return
        slot = self._clock.slot
        head = self._head()
        height = head.height + 1
        if height > self._final_height + self.config.max_lag:
            return
        if self._committees.producer(height, slot) != self._me:
            return
        if self._requested == (slot, height):
            return
        continuing = (
            self._slot_run[0] == slot
            and self._slot_run[1] < self.config.blocks_per_slot
            and head.slot == slot
            and head.producer == self._me
            and height >= self._hard.guard
        )
        if not (self._hard.may_produce(height, slot) or continuing):
            return
        self._request = ProposalRequest(height, slot, head.hash)
        self._propose_out = self._request
        self._requested = (slot, height)

    def _relay(self) -> None:
        """A round timed out: re-send what the next round leader may lack."""
        h = self._final_height + 1
        lock = self._hard.lock
        if lock is not None and lock.height == h:
            self._relay_support(h, lock.hash)
            return
        mine = self._hard.preconfirmed(h)
        if mine is not None:
            self._relay_support(h, mine.hash)


def _well_formed(msg: SignedMessage) -> bool:
    """Kind-specific shape: a digest, and the body each kind and phase requires."""
    if len(msg.digest) != 32:
        return False
    if msg.kind == Kind.BLOCK:
        return bool(msg.payload)
    if msg.kind != Kind.CONFIRM:
        return False
    if split_round(msg.round)[1] == CONFIRM:
        return not msg.payload
    try:
        decode_preconfirm_payload(msg.payload)
    except ValueError:
        return False
    return True
