"""PBFT (Castro & Liskov) as a sans-IO engine: one consensus instance per block height.

Theory of operation
-------------------
*Views.* The view is global and only grows, as in PBFT: it is not reset per height. The
primary of view ``v`` at height ``h`` is ``validators_at(h).member_at(v)``; while a view
lasts its primary proposes every height, and a view change rotates the proposer. View 0
is installed at genesis; every later view is installed by a NEW-VIEW.

*Normal case* (pending height ``h = committed + 1``, installed view ``v``). The primary
asks the host for a block (``Ready.propose``), checks it with the injected validator and
broadcasts PRE-PREPARE(h, v, digest = block hash, payload = block). A backup checks the
block (hash, height, parent = its committed block) and broadcasts PREPARE(h, v, digest).
With the PRE-PREPARE and ``q - 1`` PREPAREs from backups a replica is *prepared* and
broadcasts COMMIT(h, v, digest) with an empty payload: exactly the vote
:class:`~node.consensus.certificate.CommitCertificate` verifies. ``q`` COMMITs for one
digest in any view commit the block with the certificate made of them. Heights are not
pipelined: a primary proposes ``h + 1`` once ``h`` is committed (the block needs its
parent), but messages for later heights are kept and used when their height comes.

*Checkpoints and watermarks.* After committing a height that is a multiple of ``K`` a
replica broadcasts CHECKPOINT(h, 0, block hash). ``q`` matching ones make it the stable
checkpoint; a block delivered by catch-up at such a height is a stable checkpoint by its
commit certificate. Messages are admitted for heights in ``(s, s + L]`` (``s`` the stable
checkpoint), VIEW-CHANGE and NEW-VIEW for heights ``<= s + L`` (their height is the
sender's checkpoint). Making a checkpoint stable garbage-collects the log, the replay
filter and the equivocation detector at or below it.

*View change* (the rules are in :mod:`node.consensus.pbft_viewchange`, the NEW-VIEW
computation in :mod:`node.consensus.pbft_newview`). The timer of the pending height
restarts when the height becomes pending, when its PRE-PREPARE is accepted and when the
replica is prepared (a slow but working primary is not deposed; a faulty one delays a
height by at most three timeouts).
Late in the timeout a replica re-sends its own votes (a lost message should not cost a
view change); at the timeout it sends VIEW-CHANGE(v + 1) and stops voting in ``v``. It
escalates to ``v + 2`` only once a quorum asked for ``v + 1`` or higher and the NEW-VIEW
still did not come within the (doubled) timeout; until then it re-sends its VIEW-CHANGE.
The timeout doubles with each consecutive view change up to ``max_timeout`` and resets
when a block commits. A replica joins a higher view once ``f + 1`` others ask for views
above its own. Together these prevent view-change storms: a replica cut off alone can
neither drag the others along nor run its view far ahead, and it follows the chain by
commit certificates until the others change view.

*Catch-up.* Evidence of being behind yields ``Ready.sync`` (naming a peer known to be
ahead): ``f + 1`` validators voting above the pending height or sending anything above
the window, ``q`` COMMITs for a later height or for a block we lack, a stable checkpoint or NEW-VIEW
above the committed height, a VIEW-CHANGE carrying a commit certificate above it. Blocks
handed back with :meth:`PbftEngine.deliver` are committed, without replaying messages,
once their certificate verifies against the validator set and the validator confirms hash,
height and parent; they reach the host through ``Ready.committed`` like any other.

*Persistence.* ``Ready.persist`` holds the :class:`~node.consensus.pbft_codec.HardState`:
view, own votes and prepared certificates above the vote floor, the stable checkpoint
proof, the active view's NEW-VIEW plan. The host writes it before sending the messages of
the same ``Ready``; a replica restarted with it never signs a second digest for a
(phase, height, view) and never votes at or below its floor.

*Votes lost.* A replica started without hard state but with committed blocks (or, at
genesis, one that learns that its peers are past height 1) is *amnesiac*: it may have
signed anything at the height it was deciding when it lost its state. A replica signs
PREPAREs, COMMITs and its own proposals only at its pending height (above its committed
one), and the host stores a committed block before it sends anything signed
after it; so every lost signature is at or below the stored tip + 1. That height becomes
the replica's vote floor (persisted; it never signs at or below it), and until the others
commit it the replica is passive: no PRE-PREPARE, PREPARE, COMMIT or NEW-VIEW; it follows
the chain by commit certificates, checkpoints and catch-up and marks its VIEW-CHANGEs
amnesiac (new primaries put those into their quorum first). Once it commits that height
it is an ordinary replica again. An earlier rule re-enabled voting at the first view
whose NEW-VIEW carried one of its amnesiac VIEW-CHANGEs; the long soak found the hole
(run 4234: a Byzantine primary built a second NEW-VIEW for a view the replica had voted in
before its crash, and it prepared a different block there). The price of the height rule:
an amnesiac replica counts against ``f`` until its tip + 1 is committed without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from node.consensus.certificate import CommitCertificate
from node.consensus.engine import (
    BlockValidator,
    CommittedBlock,
    DropReason,
    EngineStatus,
    Outbound,
    ProposalRequest,
    Ready,
)
from node.consensus.messages import Kind, SignedMessage, Signer
from node.consensus.pbft_codec import PreparedCertificate
from node.consensus.pbft_log import Slot
from node.consensus.pbft_state import SEQUENCE_KINDS, PbftConfig
from node.consensus.pbft_viewchange import ViewChangeRules
from node.consensus.types import ZERO_HASH, Address, Hash32, ValidatorSet
from node.errors import InvalidInput

__all__ = ["PbftConfig", "PbftEngine"]

#: Phases whose messages live in a (height, view) slot.
VOTE_KINDS = frozenset({Kind.PRE_PREPARE, Kind.PREPARE, Kind.COMMIT})
#: Votes for views further ahead than this are dropped (a replica that far behind in
#: views joins through VIEW-CHANGEs instead); it bounds the slots a flood can create.
MAX_VIEWS_AHEAD = 64


class PbftEngine(ViewChangeRules):
    """One PBFT replica (implements :class:`node.consensus.engine.Engine`)."""

    _HANDLERS: ClassVar[dict[int, Callable[[PbftEngine, SignedMessage], None]]]

    def __init__(
        self,
        config: PbftConfig,
        signer: Signer,
        validators: ValidatorSet,
        validate: BlockValidator,
        *,
        committed_height: int = 0,
        committed_hash: Hash32 = ZERO_HASH,
        hard_state: bytes | None = None,
    ) -> None:
        super().__init__(
            config,
            signer,
            validators,
            validate,
            committed_height=committed_height,
            committed_hash=committed_hash,
            hard_state=hard_state,
        )
        self._drive()  # a primary asks for its first block at once

    # ------------------------------------------------------------------ public API

    def tick(self) -> None:
        """One unit of logical time: timeouts, retransmissions."""
        self._ticks += 1
        self._timer += 1
        if self.pending_height > self._stable.height + self.config.watermark_window:
            self._timer = 0  # waiting for a stable checkpoint is not the primary's fault
        # Re-send late in a view (votes), but often during a view change: one lost
        # VIEW-CHANGE must not make the others escalate past the view it would complete.
        nudge = self.timeout * 3 // 4 if self._active else self.config.base_timeout
        if self._timer >= self.timeout:
            self._on_timeout()
        elif self._timer >= nudge and (self._timer - nudge) % self.config.base_timeout == 0:
            self._retransmit()
        if self._ticks % self.config.base_timeout == 0:
            self._retransmit_checkpoints()
        self._drive()

    def step(self, message: SignedMessage) -> None:
        """Admit, check and apply one message from a peer (dropped and counted if not)."""
        low, high = self._window(message.kind)
        vset = self._vset_at(
            message.height if message.kind in SEQUENCE_KINDS else self.pending_height
        )
        if not self._filter.admit(message, vset, low, high):
            self._note_ahead(message, high)
            return
        handler = self._HANDLERS.get(message.kind)
        if handler is None:
            self._drop(DropReason.INVALID)
            return
        if message.kind in VOTE_KINDS and message.round > self._view + MAX_VIEWS_AHEAD:
            self._drop(DropReason.OUT_OF_WINDOW)  # bounds the slots a flood could create
            return
        drops = self._filter.dropped.total()
        handler(self, message)
        if self._filter.dropped.total() == drops:  # only messages that passed count
            self._note_fresh_progress(message)
        self._drive()

    def propose(self, payload: bytes) -> None:
        """Answer ``Ready.propose``: pre-prepare ``payload`` if it is still wanted.

        A stale answer (the height was committed or the view changed meanwhile) is
        ignored; a block the validator rejects raises :class:`InvalidInput` (the host
        built a block its own validator refuses: a bug, not a peer's fault).
        """
        h, v = self.pending_height, self._view
        if not self._may_propose(h):
            return
        info = self._validate(payload)
        if info is None:
            raise InvalidInput("the block validator rejects the proposed block")
        if info.height != h or info.parent_hash != self._committed_hash:
            return
        pp = self._vote(Kind.PRE_PREPARE, h, v, info.hash, payload)
        if pp is None:
            return
        log = self._log.at(h)
        log.infos[info.hash] = info
        log.blocks[info.hash] = payload
        slot = log.slot(v)
        slot.pre_prepare, slot.accepted = pp, True
        self._broadcast(pp)
        self._drive()

    def deliver(self, block: CommittedBlock) -> None:
        """Take a committed block fetched by catch-up; committed once verified."""
        if block.height <= self._committed_height:
            return
        if block.height > self._committed_height + self.config.watermark_window:
            return  # too far ahead to buffer; the host delivers in order
        self._delivered[block.height] = block
        while (nxt := self._delivered.pop(self._committed_height + 1, None)) is not None:
            if not self._verify_delivered(nxt):
                self._drop(DropReason.INVALID)
                break
            self._commit(nxt.height, nxt.block_hash, nxt.payload, nxt.certificate, True)
            if self._fresh:  # peers committed blocks we never saw: we may have voted
                self._become_amnesiac()
        self._drive()

    def set_validators(self, validators: ValidatorSet, start_height: int) -> None:
        """Install the validator set in force from ``start_height`` on."""
        kept = [(s, v) for s, v in self._vsets if s != start_height]
        self._vsets = sorted([*kept, (start_height, validators)], key=lambda e: e[0])

    def has_ready(self) -> bool:
        """True when :meth:`ready` would return something."""
        self._flush_hard_state()
        return self._pending_persist is not None or not self._outbox.is_empty()

    def ready(self) -> Ready:
        """Drain what the host must do now: persist, send, commit, record, answer."""
        self._flush_hard_state()
        out, self._outbox = self._outbox, Ready()
        out.persist, self._pending_persist = self._pending_persist, None
        return out

    def advance(self) -> None:
        """Acknowledge the last :meth:`ready` (outputs are drained by ``ready`` itself)."""

    def status(self) -> EngineStatus:
        """Status snapshot (finality lag is always 0: PBFT blocks are final on commit)."""
        h = self.pending_height
        vset = self._vset_at(h)
        return EngineStatus(
            engine="pbft",
            height=h,
            round=self._view,
            epoch=vset.epoch,
            proposer=vset.member_at(self._view),
            committed_height=self._committed_height,
            finality_lag=0,
            round_changes=self._round_changes,
            dropped=dict(sorted(self._filter.dropped.items())),
            evidence=self._evidence_total,
        )

    # ------------------------------------------------------------------ handlers

    def _on_pre_prepare(self, msg: SignedMessage) -> None:
        h, v = msg.height, msg.round
        if len(msg.digest) != 32 or not msg.payload or msg.signer != self.primary(v, h):
            self._drop(DropReason.INVALID)
            return
        self._observe(msg)  # a signature is a fact, even over a bad block
        self._note_height(msg.signer, h)
        if h <= self._committed_height:
            self._help_lagging(msg, h)
            return
        if h == self.pending_height:
            if self._block_info(h, msg.digest, msg.payload) is None:
                self._drop(DropReason.INVALID)  # not a valid block, or not the one named
                return
        else:
            self._log.at(h).unverified.setdefault(msg.digest, msg.payload)
        slot = self._log.at(h).slot(v)
        if slot.pre_prepare is None:
            slot.pre_prepare = msg

    def _on_prepare(self, msg: SignedMessage) -> None:
        h, v = msg.height, msg.round
        if len(msg.digest) != 32 or msg.payload or msg.signer == self.primary(v, h):
            self._drop(DropReason.INVALID)
            return
        self._observe(msg)
        self._note_height(msg.signer, h)
        if h > self._committed_height:
            self._log.at(h).slot(v).prepares.setdefault(msg.signer, msg)
        else:
            self._help_lagging(msg, h)

    def _on_commit(self, msg: SignedMessage) -> None:
        h, v = msg.height, msg.round
        if len(msg.digest) != 32 or msg.payload:
            self._drop(DropReason.INVALID)
            return
        self._observe(msg)
        self._note_height(msg.signer, h)
        if h <= self._committed_height:
            self._help_lagging(msg, h)
            return
        slot = self._log.at(h).slot(v)
        slot.commits.setdefault(msg.signer, msg)
        if h > self.pending_height:
            quorum = self._vset_at(h).quorum
            if any(len(votes) >= quorum for _, votes in slot.commit_groups()):
                self._request_sync()  # a later height is decided: we are behind

    def _on_checkpoint(self, msg: SignedMessage) -> None:
        h = msg.height
        if h % self.config.checkpoint_interval or msg.round or len(msg.digest) != 32:
            self._drop(DropReason.INVALID)
            return
        if msg.payload:
            self._drop(DropReason.INVALID)
            return
        self._log.add_checkpoint(msg)
        self._check_stable(h)

    def _help_lagging(self, msg: SignedMessage, h: int) -> None:
        """``msg``'s sender still works on ``h``, which we committed. If it does so in a
        later view than the one that decided ``h`` (or two heights back), it missed the
        decision, not merely sent late: forward it the COMMITs that decided ``h`` (once
        per peer and height) so it commits without waiting for a view change. The votes
        are signed by their authors; the peer checks them like any other."""
        log, peer = self._log.peek(h), msg.signer
        if log is None or peer == self._me or (peer, h) in self._helped:
            return
        digest, quorum = self._hashes.get(h), self._vset_at(h).quorum
        for view in log.views():
            votes = [m for m in log.slots[view].commits.values() if m.digest == digest]
            if len(votes) < quorum:
                continue
            if msg.round > view or h < self._committed_height - 1:
                self._helped.add((peer, h))
                for vote in sorted(votes, key=lambda m: m.signer)[:quorum]:
                    self._outbox.messages.append(Outbound(peer, vote))
            return

    # -------------------------------------------------------------- normal case

    def _drive(self) -> None:
        """Make every step the current state allows (loops until nothing changes)."""
        if self._equivocating_view is not None:
            v, self._equivocating_view = self._equivocating_view, None
            if self._active and v == self._view:
                self._start_view_change(v + 1)
        while self._advance_pending():
            pass

    def _advance_pending(self) -> bool:
        h = self.pending_height
        if self._commit_if_decided(h):
            return True
        s = self._stable.height
        if h <= s or h > s + self.config.watermark_window:
            return False
        if not self._active or self._amnesiac:
            return False
        log = self._log.peek(h)
        slot = log.slots.get(self._view) if log is not None else None
        primary = self.primary(self._view, h)
        if slot is not None and slot.pre_prepare is not None:
            if not slot.accepted and not slot.rejected:
                self._accept_pre_prepare(h, slot, primary)
                return True
            if slot.accepted and self._commit_vote_if_prepared(h, slot, primary):
                return True
        if primary == self._me:
            self._maybe_request_proposal(h)
        return False

    def _accept_pre_prepare(self, h: int, slot: Slot, primary: Address) -> None:
        """Backups validate before preparing: hash, height and parent must match."""
        pp = slot.pre_prepare
        assert pp is not None
        info = self._block_info(h, pp.digest, pp.payload)
        if info is None or info.parent_hash != self._committed_hash:
            slot.rejected = True
            self._drop(DropReason.INVALID)
            return
        slot.accepted = True
        self._timer = 0  # the primary is alive and proposed: time the rest of the height
        if pp.signer != self._me:
            vote = self._vote(Kind.PREPARE, h, self._view, pp.digest)
            if vote is not None:
                slot.prepares.setdefault(self._me, vote)
                self._broadcast(vote)

    def _commit_vote_if_prepared(self, h: int, slot: Slot, primary: Address) -> bool:
        pp = slot.pre_prepare
        assert pp is not None
        quorum = self._vset_at(h).quorum
        prepares = slot.matching_prepares(pp.digest, primary)
        if len(prepares) + 1 < quorum:
            return False
        held = self._prepared.get(h)
        if held is None or held.view < self._view:
            self._prepared[h] = PreparedCertificate(pp, tuple(prepares[: quorum - 1]))
            self._dirty = True
            self._timer = 0  # a quorum agreed on the block: time the commit phase afresh
        if (Kind.COMMIT, h, self._view) in self._votes:
            return False
        vote = self._vote(Kind.COMMIT, h, self._view, pp.digest)
        if vote is None:
            return False
        slot.commits.setdefault(self._me, vote)
        self._broadcast(vote)
        return True

    def _commit_if_decided(self, h: int) -> bool:
        """Commit ``h`` if a quorum of COMMITs (any view) names a block we hold."""
        log = self._log.peek(h)
        if log is None:
            return False
        vset = self._vset_at(h)
        quorum = vset.quorum
        for view in log.views():
            for digest, group in log.slots[view].commit_groups():
                # votes admitted before a validator-set change may include non-members
                votes = [v for v in group if v.signer in vset]
                if len(votes) < quorum:
                    continue
                payload = log.payload(digest)
                if payload is None:
                    self._request_sync()  # decided, but the block never reached us
                    continue
                info = self._block_info(h, digest, payload)
                if info is None or info.parent_hash != self._committed_hash:
                    continue
                cert = CommitCertificate.from_votes(votes[:quorum])
                self._commit(h, digest, payload, cert, False)
                return True
        return False

    def _maybe_request_proposal(self, h: int) -> None:
        if self._proposal_asked == (h, self._view) or not self._may_propose(h):
            return
        self._proposal_asked = (h, self._view)
        self._outbox.propose = ProposalRequest(h, self._view, self._committed_hash)

    def _may_propose(self, h: int) -> bool:
        v = self._view
        if not self._active or self._amnesiac or self.primary(v, h) != self._me:
            return False
        if h != self.pending_height or self._nv_plan.get(h) is not None:
            return False  # a re-proposal holds this height in this view
        if (Kind.PRE_PREPARE, h, v) in self._votes:
            return False
        s = self._stable.height
        if not s < h <= s + self.config.watermark_window:
            return False
        log = self._log.peek(h)
        slot = log.slots.get(v) if log is not None else None
        return slot is None or slot.pre_prepare is None


PbftEngine._HANDLERS = {
    Kind.PRE_PREPARE: PbftEngine._on_pre_prepare,
    Kind.PREPARE: PbftEngine._on_prepare,
    Kind.COMMIT: PbftEngine._on_commit,
    Kind.CHECKPOINT: PbftEngine._on_checkpoint,
    Kind.VIEW_CHANGE: PbftEngine._on_view_change,
    Kind.NEW_VIEW: PbftEngine._on_new_view,
}
