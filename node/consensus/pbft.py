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

*View change* (see :mod:`node.consensus.pbft_viewchange` for the NEW-VIEW rules). The
timer of the pending height restarts when the height becomes pending and when its
PRE-PREPARE is accepted (so a slow but working primary is not deposed, and a faulty one
delays a height by at most two timeouts). If the pending height is not committed within
the timeout, a replica sends VIEW-CHANGE(v + 1)
and stops voting in ``v``. It escalates to ``v + 2`` only if a quorum asked for ``v + 1``
or higher and the NEW-VIEW still did not come within the (doubled) timeout; until then it
re-sends its VIEW-CHANGE. The timeout doubles with each consecutive view change up to
``max_timeout`` and resets when a block commits. A replica joins a higher view once
``f + 1`` others ask for views above its own. Together these prevent view-change storms:
a replica cut off alone cannot drag the others along, nor run its view far ahead.

*Catch-up.* Evidence of being behind (``q`` COMMITs or CHECKPOINTs for a later height,
a stable checkpoint or NEW-VIEW above the committed height, ``f + 1`` validators sending
messages above the window) yields ``Ready.sync``; blocks handed back with
:meth:`PbftEngine.deliver` are committed once their certificate verifies against the
validator set and the validator confirms hash, height and parent.

*Persistence.* ``Ready.persist`` holds the :class:`~node.consensus.pbft_codec.HardState`:
view, own votes and prepared certificates above the vote floor, the stable checkpoint
proof, the active view's NEW-VIEW plan. The host writes it before sending the messages of
the same ``Ready``; a replica restarted with it never signs a second digest for a
(phase, height, view) and never votes at or below its floor.

*Votes lost.* A replica started without hard state but with committed blocks (or, at
genesis, one that sees peers beyond height 1) is *amnesiac*: it may have voted in any view
its peers have installed. It signs no PRE-PREPARE, PREPARE or COMMIT; it follows the chain
by commit certificates, checkpoints and catch-up, and marks its VIEW-CHANGEs amnesiac. It
votes again from the first view installed by a NEW-VIEW that carries one of those marked
VIEW-CHANGEs: such a NEW-VIEW was built after the restart, and a replica only ever votes in
a view after its NEW-VIEW, so (one NEW-VIEW per view from an honest primary) it voted in
no earlier incarnation in that view or any later one. New primaries put amnesiac
VIEW-CHANGEs into their quorum first; an amnesiac replica never builds a NEW-VIEW itself
(it may have built one for that very view before, with other re-proposals).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from node.consensus.certificate import CommitCertificate
from node.consensus.engine import (
    BlockInfo,
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
from node.consensus.pbft_codec import (
    CheckpointProof,
    HardState,
    MalformedError,
    PreparedCertificate,
    ProofError,
    Reproposal,
    SignatureCache,
    ViewChangeBody,
)
from node.consensus.pbft_log import MessageLog, Slot
from node.consensus.pbft_viewchange import (
    NewViewPlan,
    ViewChange,
    ViewChangeStore,
    check_new_view,
    choose_view_changes,
    decode_view_change,
    join_target,
    new_view_body,
    plan_new_view,
    reproposal_message,
)
from node.consensus.types import ZERO_HASH, Address, Hash32, ValidatorSet
from node.errors import InvalidInput, StorageError

#: Kinds whose height is a block height (admitted inside the watermarks).
SEQUENCE_KINDS = frozenset({Kind.PRE_PREPARE, Kind.PREPARE, Kind.COMMIT, Kind.CHECKPOINT})


@dataclass(frozen=True)
class PbftConfig:
    """Static PBFT parameters (every replica of a network uses the same)."""

    chain_id: int
    checkpoint_interval: int = 8  # K: checkpoint every K heights
    watermark_window: int = 32  # L: accept heights in (stable, stable + L]
    base_timeout: int = 20  # ticks before a view change for the pending height
    max_timeout: int = 320  # cap of the doubling

    def __post_init__(self) -> None:
        if self.checkpoint_interval < 1 or self.watermark_window < self.checkpoint_interval:
            raise ValueError("need 1 <= checkpoint_interval <= watermark_window")
        if self.base_timeout < 1 or self.max_timeout < self.base_timeout:
            raise ValueError("need 1 <= base_timeout <= max_timeout")


class PbftEngine:
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
        self.config = config
        self._signer = signer
        self._me = signer.address
        self._validate = validate
        self._vsets: list[tuple[int, ValidatorSet]] = [(0, validators)]
        self._filter = MessageFilter(config.chain_id, EngineId.PBFT)
        self._sigs = SignatureCache(config.chain_id)
        self._detector = EquivocationDetector()
        self._log = MessageLog()
        self._vcs = ViewChangeStore()
        self._committed_height = committed_height
        self._committed_hash = committed_hash
        self._hashes: dict[int, Hash32] = {committed_height: committed_hash}
        self._stable = CheckpointProof.genesis()
        self._view = 0
        self._active = True  # view installed (False: changing to it)
        self._floor = committed_height  # never vote at or below this height
        self._votes: dict[tuple[int, int, int], Hash32] = {}
        self._prepared: dict[int, PreparedCertificate] = {}
        self._new_view_built = 0
        self._vc_attempt = 0
        self._amnesiac = hard_state is None and committed_height > 0
        self._fresh = hard_state is None and committed_height == 0
        self._nv_message: SignedMessage | None = None
        self._nv_plan: dict[int, Hash32 | None] = {}
        self._timer = 0
        self._ticks = 0
        self._consecutive = 0
        self._round_changes = 0
        self._vc_quorum = False
        self._equivocating_view: int | None = None
        self._proposal_asked: tuple[int, int] | None = None
        self._ahead: dict[Address, int] = {}
        self._last_sync: tuple[int, int] | None = None
        self._sync_attempts = 0
        self._delivered: dict[int, CommittedBlock] = {}
        self._evidence_total = 0
        self.refused_votes = 0  # conflicting votes refused (the persistence contract at work)
        self._out: list[Outbound] = []
        self._out_committed: list[CommittedBlock] = []
        self._out_evidence: list[EquivocationEvidence] = []
        self._out_sync: list[SyncRequest] = []
        self._out_propose: ProposalRequest | None = None
        self._dirty = True
        self._last_persist = hard_state
        self._pending_persist: bytes | None = None
        if hard_state is not None:
            self._restore(hard_state)
        self._drive()  # a primary asks for its first block at once

    # ------------------------------------------------------------------ public API

    def tick(self) -> None:
        """One unit of logical time: timeouts, retransmissions."""
        self._ticks += 1
        self._timer += 1
        nudge = self.timeout * 3 // 4
        if self._timer >= self.timeout:
            self._on_timeout()
        elif self._timer >= nudge and (self._timer - nudge) % self.config.base_timeout == 0:
            self._retransmit_votes()
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
        self._note_fresh_progress(message)
        handler = self._HANDLERS.get(message.kind)
        if handler is None:
            self._drop(DropReason.INVALID)
            return
        handler(self, message)
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
        self._drive()

    def set_validators(self, validators: ValidatorSet, start_height: int) -> None:
        """Install the validator set in force from ``start_height`` on."""
        kept = [(s, v) for s, v in self._vsets if s != start_height]
        self._vsets = sorted([*kept, (start_height, validators)], key=lambda e: e[0])

    def has_ready(self) -> bool:
        """True when :meth:`ready` would return something."""
        self._flush_hard_state()
        return bool(
            self._pending_persist is not None
            or self._out
            or self._out_committed
            or self._out_evidence
            or self._out_sync
            or self._out_propose is not None
        )

    def ready(self) -> Ready:
        """Drain what the host must do now: persist, send, commit, record, answer."""
        self._flush_hard_state()
        r = Ready(
            persist=self._pending_persist,
            messages=self._out,
            committed=self._out_committed,
            evidence=self._out_evidence,
            propose=self._out_propose,
            sync=self._out_sync,
        )
        self._pending_persist = None
        self._out, self._out_committed, self._out_evidence, self._out_sync = [], [], [], []
        self._out_propose = None
        return r

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

    # -------------------------------------------------------- read-only properties

    @property
    def pending_height(self) -> int:
        """The height being decided."""
        return self._committed_height + 1

    @property
    def committed_height(self) -> int:
        """Height of the last committed block."""
        return self._committed_height

    @property
    def view(self) -> int:
        """Current view (installed, or the one being changed to)."""
        return self._view

    @property
    def view_active(self) -> bool:
        """True when the current view is installed (False during a view change)."""
        return self._active

    @property
    def stable_checkpoint(self) -> CheckpointProof:
        """The stable checkpoint and its proof."""
        return self._stable

    @property
    def amnesiac(self) -> bool:
        """True while the replica refuses to vote because it lost its votes."""
        return self._amnesiac

    @property
    def timeout(self) -> int:
        """Current timeout in ticks: doubles per consecutive view change, capped."""
        doubled = self.config.base_timeout << min(self._consecutive, 32)
        return min(doubled, self.config.max_timeout)

    @property
    def log(self) -> MessageLog:
        """The message log (read-only use: tests, metrics)."""
        return self._log

    def primary(self, view: int | None = None, height: int | None = None) -> Address:
        """Primary of ``view`` (default: current) at ``height`` (default: pending)."""
        h = self.pending_height if height is None else height
        return self._vset_at(h).member_at(self._view if view is None else view)

    # ----------------------------------------------------------------- admission

    def _window(self, kind: int) -> tuple[int, int]:
        s, window = self._stable.height, self.config.watermark_window
        return (s + 1 if kind in SEQUENCE_KINDS else 0), s + window

    def _vset_at(self, height: int) -> ValidatorSet:
        chosen = self._vsets[0][1]
        for start, vset in self._vsets:
            if start > height:
                break
            chosen = vset
        return chosen

    def _drop(self, reason: DropReason) -> None:
        self._filter.drop(reason)

    def _note_ahead(self, msg: SignedMessage, high: int) -> None:
        """A well-signed message above our window from a validator is evidence we lag."""
        if msg.engine != EngineId.PBFT or msg.height <= high or not any(msg.signature):
            return
        vset = self._vset_at(self.pending_height)
        if msg.signer not in vset or self._ahead.get(msg.signer, -1) >= msg.height:
            return
        if self._sigs.verify(msg):
            self._note_height(msg.signer, msg.height)

    def _note_height(self, signer: Address, height: int) -> None:
        """A validator voting at ``height`` has committed ``height - 1``; once ``f + 1``
        validators vote above our pending height, an honest one is ahead of us."""
        if signer == self._me or height <= self.pending_height:
            return
        if height > self._ahead.get(signer, -1):
            self._ahead[signer] = height
        pending = self.pending_height
        vset = self._vset_at(pending)
        if sum(1 for h in self._ahead.values() if h > pending) >= vset.weak_quorum:
            self._request_sync()

    def _note_fresh_progress(self, msg: SignedMessage) -> None:
        """At genesis without hard state, peers beyond height 1 mean we may have voted."""
        if not self._fresh or msg.signer == self._me:
            return
        if msg.height > (1 if msg.kind in SEQUENCE_KINDS else 0):
            self._fresh, self._amnesiac, self._dirty = False, True, True

    def _observe(self, msg: SignedMessage) -> None:
        ev = self._detector.observe(msg)
        if ev is None:
            return
        self._out_evidence.append(ev)
        self._evidence_total += 1
        if msg.kind == Kind.PRE_PREPARE and self._active and msg.round == self._view:
            self._equivocating_view = msg.round  # acted on in _drive, outside handlers

    # ------------------------------------------------------------------ handlers

    def _on_pre_prepare(self, msg: SignedMessage) -> None:
        h, v = msg.height, msg.round
        if len(msg.digest) != 32 or not msg.payload or msg.signer != self.primary(v, h):
            self._drop(DropReason.INVALID)
            return
        self._observe(msg)  # a signature is a fact, even over a bad block
        self._note_height(msg.signer, h)
        if h <= self._committed_height:
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

    def _on_commit(self, msg: SignedMessage) -> None:
        h, v = msg.height, msg.round
        if len(msg.digest) != 32 or msg.payload:
            self._drop(DropReason.INVALID)
            return
        self._observe(msg)
        self._note_height(msg.signer, h)
        if h <= self._committed_height:
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

    def _on_view_change(self, msg: SignedMessage) -> None:
        t = msg.round
        if t < self._view or (self._active and t == self._view):
            if self._active and self._nv_message is not None and msg.signer != self._me:
                self._out.append(Outbound(msg.signer, self._nv_message))  # help it catch up
            self._drop(DropReason.OUT_OF_WINDOW)
            return
        try:
            vc = decode_view_change(msg, self._sigs, self._vset_at)
        except MalformedError:
            self._drop(DropReason.MALFORMED)
            return
        except ProofError:
            self._drop(DropReason.INVALID)
            return
        self._observe_embedded(vc)
        self._vcs.add(vc)
        self._after_view_change_stored()

    def _on_new_view(self, msg: SignedMessage) -> None:
        t = msg.round
        if t < self._view or (self._active and t == self._view):
            self._drop(DropReason.OUT_OF_WINDOW)
            return
        vset = self._vset_at(self.pending_height)
        if msg.signer != vset.member_at(t):
            self._drop(DropReason.INVALID)
            return
        try:
            plan, vcs, pps = check_new_view(msg, self._sigs, self._vset_at, vset)
        except MalformedError:
            self._drop(DropReason.MALFORMED)
            return
        except ProofError:
            self._drop(DropReason.INVALID)
            return
        self._install_new_view(msg, plan, vcs, pps)

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
        quorum = self._vset_at(h).quorum
        for view in log.views():
            for digest, votes in log.slots[view].commit_groups():
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

    def _block_info(self, h: int, digest: bytes, payload: bytes) -> BlockInfo | None:
        """Validate ``payload`` as the block ``digest`` at ``h`` (cached per height).

        Only called for the pending height: the validator needs the parent.
        """
        log = self._log.peek(h)
        known = log.infos.get(Hash32(digest)) if log is not None else None
        if known is not None:
            return known
        info = self._validate(payload)
        if info is None or info.hash != digest or info.height != h:
            return None
        log = self._log.at(h)
        log.infos[info.hash] = info
        log.blocks[info.hash] = payload
        log.unverified.pop(info.hash, None)
        return info

    def _maybe_request_proposal(self, h: int) -> None:
        if self._proposal_asked == (h, self._view) or not self._may_propose(h):
            return
        self._proposal_asked = (h, self._view)
        self._out_propose = ProposalRequest(h, self._view, self._committed_hash)

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

    def _vote(
        self, kind: Kind, h: int, view: int, digest: Hash32, payload: bytes = b""
    ) -> SignedMessage | None:
        """Sign a vote unless it could contradict one we already signed."""
        if self._amnesiac or h <= self._floor:
            return None
        prev = self._votes.get((kind, h, view))
        if prev is not None and prev != digest:
            self.refused_votes += 1
            return None
        msg = self._signer.sign(self.config.chain_id, EngineId.PBFT, kind, h, view, digest, payload)
        self._votes[(kind, h, view)] = digest
        self._fresh, self._dirty = False, True
        return msg

    def _broadcast(self, msg: SignedMessage) -> None:
        self._out.append(Outbound(None, msg))

    # ------------------------------------------------- commit, checkpoints and GC

    def _commit(
        self, h: int, digest: Hash32, payload: bytes, cert: CommitCertificate, delivered: bool
    ) -> None:
        self._committed_height, self._committed_hash = h, digest
        self._hashes[h] = digest
        self._out_committed.append(CommittedBlock(h, digest, payload, cert))
        self._floor = max(self._floor, h)
        self._votes = {k: d for k, d in self._votes.items() if k[1] > self._floor}
        self._timer, self._consecutive, self._proposal_asked = 0, 0, None
        self._dirty = True
        if h % self.config.checkpoint_interval or h <= self._stable.height:
            return
        cp = self._signer.sign(self.config.chain_id, EngineId.PBFT, Kind.CHECKPOINT, h, 0, digest)
        self._log.add_checkpoint(cp)
        self._broadcast(cp)
        if delivered:
            self._set_stable(CheckpointProof(h, digest, (), cert))
        else:
            self._check_stable(h)

    def _check_stable(self, h: int) -> None:
        if h <= self._stable.height:
            return
        digest, votes = self._log.checkpoint_quorum(h, self._vset_at(h).quorum)
        if not votes:
            return
        known = self._hashes.get(h)
        if known is not None and known != digest:
            return  # a quorum checkpointed another block than ours: never adopt it
        self._set_stable(CheckpointProof(h, digest, tuple(votes)))

    def _set_stable(self, proof: CheckpointProof) -> None:
        """Adopt a newer stable checkpoint and garbage-collect everything below it."""
        s = proof.height
        known = self._hashes.get(s)
        if s <= self._stable.height or (known is not None and known != proof.digest):
            return
        self._stable = proof
        self._hashes = {h: d for h, d in self._hashes.items() if h >= s}
        self._hashes[s] = proof.digest
        self._floor = max(self._floor, s)
        self._votes = {k: d for k, d in self._votes.items() if k[1] > self._floor}
        self._prepared = {h: c for h, c in self._prepared.items() if h > s}
        self._nv_plan = {h: d for h, d in self._nv_plan.items() if h > s}
        self._log.collect_through(s)
        self._filter.forget_below(s + 1)
        self._detector.forget_below(s + 1)
        self._dirty = True
        if s > self._committed_height:
            self._request_sync()

    def _retransmit_votes(self) -> None:
        """Late in the timeout, re-send what we said for the pending height in this view:
        a lost message should not cost a view change. Peers that already have a message
        drop the copy as a replay. (A lost NEW-VIEW is recovered differently: the replica
        that missed it re-sends its VIEW-CHANGE and gets the NEW-VIEW back.)"""
        if not self._active:
            return
        log = self._log.peek(self.pending_height)
        slot = log.slots.get(self._view) if log is not None else None
        if slot is None:
            return
        own = [
            slot.pre_prepare if slot.pre_prepare and slot.pre_prepare.signer == self._me else None,
            slot.prepares.get(self._me),
            slot.commits.get(self._me),
        ]
        for msg in own:
            if msg is not None:
                self._broadcast(msg)

    def _retransmit_checkpoints(self) -> None:
        """Re-send own checkpoints that should have become stable by now (lost messages)."""
        for cp in self._log.own_checkpoints(self._me):
            stale = self._committed_height >= cp.height + self.config.checkpoint_interval
            if cp.height > self._stable.height and stale:
                self._broadcast(cp)

    # --------------------------------------------------------------- view change

    def _on_timeout(self) -> None:
        if self._active and self._recently_synced():
            self._timer = 0  # the others progress and we are catching up: not their fault
        elif self._active or self._vc_quorum:
            self._start_view_change(self._view + 1)
        else:
            self._vc_attempt += 1  # no quorum yet for our view: re-send, do not escalate
            self._timer, self._dirty = 0, True
            self._send_view_change()

    def _start_view_change(self, target: int) -> None:
        if target <= self._view:
            return
        self._view, self._active, self._vc_quorum = target, False, False
        self._timer, self._vc_attempt, self._proposal_asked = 0, 0, None
        self._consecutive += 1
        self._round_changes += 1
        self._nv_message, self._nv_plan = None, {}
        self._dirty = True
        self._send_view_change()
        self._after_view_change_stored()

    def _send_view_change(self) -> None:
        s = self._stable.height
        certs = tuple(self._prepared[h] for h in sorted(self._prepared) if h > s)
        body = ViewChangeBody(self._stable, certs, self._vc_attempt, self._amnesiac)
        msg = self._signer.sign(
            self.config.chain_id, EngineId.PBFT, Kind.VIEW_CHANGE, s, self._view, b"", body.encode()
        )
        self._vcs.add(ViewChange(msg, body))
        self._broadcast(msg)

    def _observe_embedded(self, vc: ViewChange) -> None:
        """Votes inside prepared certificates are evidence material too."""
        for cert in vc.body.prepared:
            self._observe(cert.pre_prepare)
            for p in cert.prepares:
                self._observe(p)

    def _after_view_change_stored(self) -> None:
        vset = self._vset_at(self.pending_height)
        above = self._vcs.highest_views_above(self._view, self._me)
        target = join_target(above, vset.weak_quorum)
        if target is not None and target > self._view:
            self._start_view_change(target)
            return
        if self._active:
            return
        # A quorum has given up on the views below ours (asking for ours or higher, so a
        # VIEW-CHANGE lost on the way to us cannot freeze us): the escalation timer runs.
        if not self._vc_quorum and self._vcs.signers_at_or_above(self._view) >= vset.quorum:
            self._vc_quorum, self._timer = True, 0
        self._maybe_build_new_view(vset)

    def _maybe_build_new_view(self, vset: ValidatorSet) -> None:
        t = self._view
        if self._active or t <= self._new_view_built or vset.member_at(t) != self._me:
            return
        if self._amnesiac:
            return  # we may have built (and signed re-proposals for) this view before
        candidates = self._vcs.for_view(t)
        if len(candidates) < vset.quorum:
            return
        chosen = choose_view_changes(candidates, vset, self._me)
        plan = plan_new_view([vc.body for vc in chosen])
        reproposals: list[Reproposal] = []
        pps: list[SignedMessage] = []
        for h, cert in plan.entries:
            if cert is None:
                reproposals.append(Reproposal(h))
                continue
            known = self._hashes.get(h)
            if (known is not None and known != cert.digest) or self._votes.get(
                (Kind.PRE_PREPARE, h, t), cert.digest
            ) != cert.digest:
                return  # would contradict our chain or our votes: impossible with <= f faults
            pp = self._signer.sign(
                self.config.chain_id, EngineId.PBFT, Kind.PRE_PREPARE, h, t, cert.digest,
                cert.pre_prepare.payload,
            )  # fmt: skip
            if h > self._floor:
                self._votes[(Kind.PRE_PREPARE, h, t)] = cert.digest
            reproposals.append(Reproposal(h, cert.digest, pp.signature))
            pps.append(reproposal_message(cert, t, self._me, pp.signature))
        body = new_view_body(chosen, reproposals)
        nv = self._signer.sign(
            self.config.chain_id, EngineId.PBFT, Kind.NEW_VIEW, plan.checkpoint.height, t, b"",
            body.encode(),
        )  # fmt: skip
        self._new_view_built, self._dirty = t, True
        self._broadcast(nv)
        self._install_new_view(nv, plan, chosen, pps)

    def _install_new_view(
        self,
        msg: SignedMessage,
        plan: NewViewPlan,
        vcs: list[ViewChange],
        pps: list[SignedMessage],
    ) -> None:
        t = msg.round
        self._view, self._active, self._vc_quorum = t, True, False
        self._timer, self._proposal_asked = 0, None
        self._nv_message = msg
        self._nv_plan = {h: (c.digest if c is not None else None) for h, c in plan.entries}
        self._vcs.prune_through(t)
        self._dirty = True
        if self._amnesiac and any(vc.signer == self._me and vc.body.amnesiac for vc in vcs):
            self._amnesiac = False  # this view began after our restart: safe to vote
        for vc in vcs:
            self._observe_embedded(vc)
        for pp in pps:
            self._observe(pp)
            if pp.height <= self._committed_height:
                continue
            self._log.at(pp.height).unverified.setdefault(pp.digest, pp.payload)
            slot = self._log.at(pp.height).slot(t)
            slot.pre_prepare, slot.accepted, slot.rejected = pp, False, False
        self._set_stable(plan.checkpoint)
        if plan.checkpoint.height > self._committed_height:
            self._request_sync()

    # ------------------------------------------------------------------ catch-up

    def _request_sync(self) -> None:
        """Ask the host for committed blocks (at most once per base timeout per height).

        The request names a validator known to be ahead, rotating through them on
        retries, so a retry does not keep asking a peer as far behind as we are.
        """
        start = self._committed_height + 1
        last = self._last_sync
        retry_after = self.config.base_timeout
        if last is not None and last[0] == start and self._ticks - last[1] < retry_after:
            return
        self._sync_attempts = self._sync_attempts + 1 if last is not None else 0
        self._last_sync = (start, self._ticks)
        ahead = sorted(a for a, h in self._ahead.items() if h > start)
        peer = ahead[self._sync_attempts % len(ahead)] if ahead else None
        self._out_sync.append(SyncRequest(start, peer))

    def _recently_synced(self) -> bool:
        last = self._last_sync
        return last is not None and self._ticks - last[1] < self.timeout

    def _verify_delivered(self, block: CommittedBlock) -> bool:
        cert = block.certificate
        if (cert.engine, cert.kind, cert.height, cert.block_hash) != (
            EngineId.PBFT,
            Kind.COMMIT,
            block.height,
            block.block_hash,
        ):
            return False
        if not cert.is_valid(self.config.chain_id, self._vset_at(block.height)):
            return False
        info = self._validate(block.payload)
        return (
            info is not None
            and info.hash == block.block_hash
            and info.height == block.height
            and info.parent_hash == self._committed_hash
        )

    # ---------------------------------------------------------------- hard state

    def _hard_state(self) -> HardState:
        f = self._floor
        return HardState(
            view=self._view,
            active=self._active,
            floor=f,
            stable=self._stable,
            votes=tuple(sorted((k, h, r, d) for (k, h, r), d in self._votes.items() if h > f)),
            prepared=tuple(c for h, c in sorted(self._prepared.items()) if h > f),
            new_view_built=self._new_view_built,
            vc_attempt=self._vc_attempt,
            amnesiac=self._amnesiac,
            plan=tuple((h, d or b"") for h, d in sorted(self._nv_plan.items()) if h > f),
        )

    def _flush_hard_state(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        encoded = self._hard_state().encode()
        if encoded != self._last_persist:
            self._last_persist = self._pending_persist = encoded

    def _restore(self, data: bytes) -> None:
        try:
            hs = HardState.decode(data)
        except ProofError as exc:
            raise StorageError(f"unreadable PBFT hard state: {exc}") from exc
        self._view, self._active = hs.view, hs.active
        self._floor = max(hs.floor, self._committed_height)
        self._stable = hs.stable
        if hs.stable.height > 0:
            self._hashes.setdefault(hs.stable.height, hs.stable.digest)
        self._votes = {(k, h, r): d for k, h, r, d in hs.votes if h > self._floor}
        for cert in hs.prepared:
            if cert.height <= self._floor:
                continue
            self._prepared[cert.height] = cert
            log = self._log.at(cert.height)
            log.unverified.setdefault(cert.digest, cert.pre_prepare.payload)
            slot = log.slot(cert.view)
            slot.pre_prepare = cert.pre_prepare
            for p in cert.prepares:
                slot.prepares.setdefault(p.signer, p)
        self._nv_plan = {h: (Hash32(d) if d else None) for h, d in hs.plan if h > self._floor}
        self._new_view_built, self._vc_attempt = hs.new_view_built, hs.vc_attempt
        self._amnesiac, self._fresh = hs.amnesiac, False
        if self._floor > self._committed_height:
            self._request_sync()  # we had committed more than the host stored


PbftEngine._HANDLERS = {
    Kind.PRE_PREPARE: PbftEngine._on_pre_prepare,
    Kind.PREPARE: PbftEngine._on_prepare,
    Kind.COMMIT: PbftEngine._on_commit,
    Kind.CHECKPOINT: PbftEngine._on_checkpoint,
    Kind.VIEW_CHANGE: PbftEngine._on_view_change,
    Kind.NEW_VIEW: PbftEngine._on_new_view,
}
