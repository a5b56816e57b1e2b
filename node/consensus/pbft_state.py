"""PBFT replica state: what a replica knows, remembers and persists, and the helpers every
rule uses (admission windows, voting, stable checkpoints, catch-up requests, hard state).

Theory of operation
-------------------
:class:`PbftState` is the store of the PBFT engine, in the spirit of consensus-specs'
``Store``: the rules live in :mod:`node.consensus.pbft` (normal case, checkpoints,
catch-up) and :mod:`node.consensus.pbft_viewchange` (view change), and they only change
this state through the helpers here. Two helpers carry the safety rules that matter
across crashes:

- :meth:`PbftState._vote` is the only way to sign a PRE-PREPARE, PREPARE or COMMIT. It
  refuses while amnesiac, at or below the vote floor, and for a (phase, height, view)
  already signed with another digest; every vote it signs goes into the hard state, which
  the host persists before sending (``Ready.persist`` comes with the messages);
- :meth:`PbftState._set_stable` adopts a stable checkpoint and garbage-collects the log,
  the replay filter and the equivocation detector below it; the vote floor rises with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.consensus.certificate import CommitCertificate
from node.consensus.engine import (
    BlockInfo,
    BlockValidator,
    CommittedBlock,
    DropReason,
    MessageFilter,
    Outbound,
    Ready,
    SyncRequest,
)
from node.consensus.evidence import EquivocationDetector
from node.consensus.messages import EngineId, Kind, SignedMessage, Signer
from node.consensus.pbft_codec import (
    CheckpointProof,
    HardState,
    PreparedCertificate,
    ProofError,
    SignatureCache,
)
from node.consensus.pbft_log import MessageLog
from node.consensus.pbft_newview import ViewChangeStore
from node.consensus.types import ZERO_HASH, Address, Hash32, ValidatorSet
from node.errors import StorageError

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


class PbftState:
    """Everything one PBFT replica knows (see the module docstring)."""

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
        self._last_certificate: CommitCertificate | None = None  # of our highest block
        self._new_view_built = 0
        self._vc_attempt = 0
        self._amnesiac = False
        self._fresh = hard_state is None and committed_height == 0
        self._restart_tip = committed_height  # what the host had stored when we started
        if hard_state is None and committed_height > 0:
            self._become_amnesiac()
        self._nv_message: SignedMessage | None = None
        self._nv_plan: dict[int, Hash32 | None] = {}
        self._timer = 0
        self._ticks = 0
        self._consecutive = 0
        self._round_changes = 0
        self._vc_quorum = False
        self._left_view: int | None = None  # the installed view we last asked to leave
        self._no_commit_view: int | None = None  # rejoined: never COMMIT in this view
        self._equivocating_view: int | None = None
        self._proposal_asked: tuple[int, int] | None = None
        self._ahead: dict[Address, int] = {}
        self._last_sync: tuple[int, int] | None = None
        self._sync_grace = -1  # last height whose timeout was deferred for a catch-up
        self._sync_attempts = 0
        self._delivered: dict[int, CommittedBlock] = {}
        self._helped: set[tuple[Address, int]] = set()  # (lagging peer, height) answered
        self._evidence_total = 0
        self.refused_votes = 0  # conflicting votes refused (the persistence contract at work)
        self._outbox = Ready()  # what the next ready() hands over (persist added then)
        self._dirty = True
        self._last_persist = hard_state
        self._pending_persist: bytes | None = None
        if hard_state is not None:
            self._restore(hard_state)

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

    def hard_state_bytes(self) -> bytes:
        """The hard state as of now (what the next ``Ready.persist`` would hold)."""
        return self._hard_state().encode()

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
            self._become_amnesiac()

    def _become_amnesiac(self) -> None:
        """We may have voted before our hard state was lost: see the votes-lost rule.

        Votes were only ever signed at the pending height, and the host stores a committed
        block before it sends anything signed after it; so every vote we may have lost is at
        or below the tip stored when we started, + 1 (for a replica that starts fresh at
        genesis and later learns it may not be fresh: height 1). That height is closed to
        us for good (the floor, persisted). We stay passive (no votes, proposals or
        NEW-VIEWs) until the others commit it; above it we cannot contradict a vote of an
        earlier incarnation.
        """
        self._floor = max(self._floor, self._restart_tip + 1)
        self._fresh, self._dirty = False, True
        self._amnesiac = self._committed_height < self._floor

    def _observe(self, msg: SignedMessage) -> None:
        ev = self._detector.observe(msg)
        if ev is None:
            return
        self._outbox.evidence.append(ev)
        self._evidence_total += 1
        if msg.kind == Kind.PRE_PREPARE and self._active and msg.round == self._view:
            self._equivocating_view = msg.round  # acted on in _drive, outside handlers

    # -------------------------------------------------------------------- voting

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

    def _vote(
        self, kind: Kind, h: int, view: int, digest: Hash32, payload: bytes = b""
    ) -> SignedMessage | None:
        """Sign a vote unless it could contradict one we already signed."""
        if self._amnesiac or h <= self._floor:
            return None
        if self._signer.address not in self._vset_at(h):
            return None  # not a validator at h (e.g. removed by governance): observe only
        if kind == Kind.COMMIT and view == self._no_commit_view:
            return None  # see the rejoin rule: a rejoined replica prepares, never commits
        prev = self._votes.get((kind, h, view))
        if prev is not None and prev != digest:
            self.refused_votes += 1
            return None
        msg = self._signer.sign(self.config.chain_id, EngineId.PBFT, kind, h, view, digest, payload)
        self._votes[(kind, h, view)] = digest
        self._fresh, self._dirty = False, True
        return msg

    def _broadcast(self, msg: SignedMessage) -> None:
        self._outbox.messages.append(Outbound(None, msg))

    # ------------------------------------- commit, stable checkpoints and GC

    def _commit(
        self, h: int, digest: Hash32, payload: bytes, cert: CommitCertificate, delivered: bool
    ) -> None:
        """Commit block ``digest`` at the pending height ``h`` with its certificate."""
        self._committed_height, self._committed_hash = h, digest
        self._last_certificate = cert
        self._hashes[h] = digest
        self._outbox.committed.append(CommittedBlock(h, digest, payload, cert))
        if self._amnesiac and h >= self._floor:
            self._amnesiac = False  # past every height a lost vote can be at
        self._floor = max(self._floor, h)
        self._votes = {k: d for k, d in self._votes.items() if k[1] > self._floor}
        self._timer, self._consecutive, self._proposal_asked = 0, 0, None
        self._dirty = True
        if not self._active and cert.round == self._left_view:
            self._rejoin(cert.round)
        if h % self.config.checkpoint_interval or h <= self._stable.height:
            return
        cp = self._signer.sign(self.config.chain_id, EngineId.PBFT, Kind.CHECKPOINT, h, 0, digest)
        self._log.add_checkpoint(cp)
        self._broadcast(cp)
        if delivered:
            self._set_stable(CheckpointProof(h, digest, (), cert))
        else:
            self._check_stable(h)

    def _rejoin(self, view: int) -> None:
        """Return to ``view``, which we asked to leave but which still decides blocks.

        Safe because we never COMMIT in it again: every replica whose COMMIT helps decide
        a block in ``view`` from now on left it (if ever) only after preparing that block,
        so its VIEW-CHANGE reports the certificate, and our own stale VIEW-CHANGE is never
        the one a NEW-VIEW depends on. We still PREPARE (helping the others) and commit
        from the others' COMMITs.
        """
        self._view, self._active, self._vc_quorum = view, True, False
        self._no_commit_view, self._left_view = view, None
        self._timer, self._dirty = 0, True

    def _commit_by_certificate(self, cert: CommitCertificate) -> bool:
        """Commit the pending height from a verified certificate if we hold its block."""
        h = cert.height
        log = self._log.peek(h)
        payload = log.payload(cert.block_hash) if log is not None else None
        if h != self.pending_height or payload is None:
            return False
        info = self._block_info(h, cert.block_hash, payload)
        if info is None or info.parent_hash != self._committed_hash:
            return False
        self._commit(h, cert.block_hash, payload, cert, False)
        return True

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
        self._helped = {(a, h) for a, h in self._helped if h > s}
        self._filter.forget_below(s + 1)
        self._detector.forget_below(s + 1)
        self._dirty = True
        if s > self._committed_height:
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
        self._outbox.sync.append(SyncRequest(start, peer))

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
            no_commit_view=self._no_commit_view,
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
        self._no_commit_view = hs.no_commit_view
        if self._floor > self._committed_height:
            self._request_sync()  # we had committed more than the host stored
