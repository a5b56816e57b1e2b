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

*Confirmation.* Blocks become final through Tendermint-style confirmation rounds at the
lowest non-final height, described (with the safety and liveness arguments) in
:mod:`node.consensus.dpos_confirm`. A block is final once a quorum of the committee has
signed a confirm for it; those confirms are its :class:`CommitCertificate`, which verifies
on its own. Delegates confirm their branch block by block, so a certificate for a
descendant also proves a block final (its confirmers had it final): the engine takes it
as a reason to catch up.

*Evidence.* Every admitted BLOCK and CONFIRM goes through an
:class:`EquivocationDetector`: two BLOCKs for one ``(height, slot)`` or two confirmation
votes for one ``(height, message round)`` with different digests become
``Ready.evidence``.

*Catch-up.* A vote at ``h >= F + 2`` (votes are cast at the signer's active height, so
it has ``h - 1`` final) or a message beyond the window shows a delegate it is behind: it
asks for committed blocks (``Ready.sync``) and :meth:`DposEngine.deliver` verifies each
one (certificate against the committee of its height, payload via the validator, parent
= last final block) before making it final. A delegate that already finalised ``h``
answers a late pre-confirm at ``h`` (from a later round than the certificate's) by
sending that delegate the certificate's confirms.

*Persistence.* See :mod:`node.consensus.dpos_state`: what was signed is in
``Ready.persist`` before it is sent. A delegate restarted without it produces nothing
until ``max_lag`` heights past its committed one, and at the one height it may have voted
at, pre-confirms only in rounds its lost incarnation cannot have reached.

*Finality lag.* ``status().finality_lag`` is head height minus final height. Producers
stop extending a chain more than ``max_lag`` heights above the last final block, which
bounds memory, the window of admitted messages, and what an amnesiac may have signed.
"""

from __future__ import annotations

from node.consensus.certificate import CommitCertificate
from node.consensus.dpos_config import DposConfig
from node.consensus.dpos_confirm import ConfirmationRounds
from node.consensus.dpos_schedule import Committees, SlotClock
from node.consensus.dpos_state import HardState
from node.consensus.dpos_tree import BlockNode, BlockTree
from node.consensus.dpos_votes import (
    CONFIRM,
    NIL,
    PRECONFIRM,
    VoteBook,
    decode_preconfirm_payload,
    split_round,
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

__all__ = ["DposConfig", "DposEngine"]

#: Most committed blocks buffered from catch-up answers ahead of the final height.
_DELIVERY_BUFFER = 64


class DposEngine(ConfirmationRounds):
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
        self._evidence_total = 0
        self._out: list[Outbound] = []
        self._committed: list[CommittedBlock] = []
        self._evidence: list[EquivocationEvidence] = []
        self._propose_out: ProposalRequest | None = None
        self._sync_out: list[SyncRequest] = []
        self._init_rounds()
        self._drive()

    @staticmethod
    def _load_hard_state(data: bytes | None, committed_height: int, max_lag: int) -> HardState:
        if data is None:
            if committed_height == 0:
                return HardState()
            # Above genesis, no hard state means it was lost (a first start persists one
            # at once): see "Lost hard state" in node.consensus.dpos_state.
            return HardState(guard=committed_height + max_lag + 1, taint=committed_height + 1)
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
        if msg.height > self._final_height + 1:
            # Votes are cast at the active height only: the signer has ``height - 1`` final.
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
        if asked == from_height:
            if wait > 0:
                return
            peer = None  # the peer asked last time did not help: let the host pick another
        self._sync_asked = (from_height, self.config.confirm_timeout // 2)
        self._sync_out.append(SyncRequest(from_height, peer))

    # -- the protocol -----------------------------------------------------------------

    def _drive(self) -> None:
        """Apply every rule until nothing changes, then produce and relay."""
        while True:
            changed = self._finalize()
            changed = self._follow_rounds() or changed
            changed = self._confirm_active() or changed
            if not changed:
                break
        self._produce()

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
        for _ in range(self._tree.finalize(block_hash, h)):
            self._filter.drop(DropReason.INVALID)  # a block that never validated
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


def _well_formed(msg: SignedMessage) -> bool:
    """Kind-specific shape: a digest, and the body each kind and phase requires."""
    if msg.kind == Kind.BLOCK:
        return len(msg.digest) == 32 and bool(msg.payload)
    if msg.kind != Kind.CONFIRM:
        return False
    if split_round(msg.round)[1] == CONFIRM:
        return len(msg.digest) == 32 and not msg.payload
    if msg.digest != NIL and len(msg.digest) != 32:
        return False
    try:
        decode_preconfirm_payload(msg.payload)
    except ValueError:
        return False
    return True
