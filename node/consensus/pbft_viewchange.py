"""PBFT view change as rules over :class:`~node.consensus.pbft_state.PbftState`.

Theory of operation
-------------------
Timers: the pending height's timer restarts when the height becomes pending, when its
PRE-PREPARE is accepted and when the replica is prepared. Late in the timeout a replica
re-sends its own votes for the pending height (a lost message should not cost a view
change); at the timeout it sends VIEW-CHANGE(v + 1) and stops voting in ``v``. In a view
change it re-sends its VIEW-CHANGE every ``base_timeout`` ticks; once a quorum asked for
its view or a higher one the next timeout moves it on to ``v + 2``, never before (no
replica runs ahead alone). ``f + 1`` validators asking for higher views make it join the
lowest of the ``f + 1`` highest.
Each consecutive view change doubles the timeout up to ``max_timeout``; a commit resets
it.

Rejoining: a replica that asked to leave view ``v`` (a spurious timeout, a short cut) but
then commits a block decided in ``v`` by the others' COMMITs returns to ``v`` instead of
waiting, passive, for the others' next view change. It may PREPARE there but never
COMMIT (persisted as ``no_commit_view``): the COMMITs that decide blocks in ``v`` then all
come from replicas whose VIEW-CHANGEs, if any, postdate their prepared certificates, which
is what the NEW-VIEW computation relies on; its own stale VIEW-CHANGE can be in a NEW-VIEW
quorum without hiding anything.

NEW-VIEW: the new primary builds it from a quorum of verified VIEW-CHANGEs with
:func:`~node.consensus.pbft_newview.plan_new_view`, signs a PRE-PREPARE in the new view for
every re-proposed block and installs it itself; backups recompute it with
:func:`~node.consensus.pbft_newview.check_new_view` and drop one that does not match.
Installing a NEW-VIEW makes its re-proposals the PRE-PREPAREs of the new view, adopts the
carried stable checkpoint and asks for catch-up if that is above our chain. A replica that
receives a VIEW-CHANGE for a view it has already installed answers with the NEW-VIEW, so a
replica that missed it is not left behind.
"""

from __future__ import annotations

from node.consensus.engine import DropReason, Outbound
from node.consensus.messages import EngineId, Kind, SignedMessage
from node.consensus.pbft_codec import MalformedError, ProofError, Reproposal, ViewChangeBody
from node.consensus.pbft_newview import (
    NewViewPlan,
    ViewChange,
    check_new_view,
    choose_view_changes,
    decode_view_change,
    join_target,
    new_view_body,
    plan_new_view,
    reproposal_message,
)
from node.consensus.pbft_state import PbftState
from node.consensus.types import ValidatorSet


class ViewChangeRules(PbftState):
    """Timers, VIEW-CHANGE and NEW-VIEW handling (see the module docstring)."""

    # ---------------------------------------------------------------- timers

    def _on_timeout(self) -> None:
        if self._active and self._recently_synced() and self._sync_grace != self.pending_height:
            # The others progress and we are catching up: not the primary's fault. Once
            # per height only: a catch-up nobody answers must not stop view changes.
            self._sync_grace, self._timer = self.pending_height, 0
        elif self._active or self._vc_quorum:
            self._start_view_change(self._view + 1)
        else:
            self._timer = 0  # no quorum yet for our view: re-send, do not escalate
            self._resend_view_change()

    def _resend_view_change(self) -> None:
        """Re-sign (new attempt number, so no replay filter swallows it) and re-send."""
        self._vc_attempt += 1
        self._dirty = True
        self._send_view_change()

    def _retransmit(self) -> None:
        """Late in the timeout, re-send what we said: a lost message should not cost a
        view change. In a view change that is our VIEW-CHANGE (the new primary may lack
        it); otherwise our votes for the pending height, which peers that already have
        drop as replays. (A lost NEW-VIEW is recovered by the replica that missed it: it
        re-sends its VIEW-CHANGE and gets the NEW-VIEW back.)"""
        if not self._active:
            self._resend_view_change()
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

    # ----------------------------------------------------------- view change

    def _start_view_change(self, target: int) -> None:
        if target <= self._view:
            return
        if self._active:
            self._left_view = self._view  # kept (with its NEW-VIEW) in case we rejoin it
        self._view, self._active, self._vc_quorum = target, False, False
        self._timer, self._proposal_asked = 0, None
        self._consecutive += 1
        self._round_changes += 1
        self._dirty = True
        self._send_view_change()
        self._after_view_change_stored()

    def _send_view_change(self) -> None:
        s = self._stable.height
        certs = tuple(self._prepared[h] for h in sorted(self._prepared) if h > s)
        body = ViewChangeBody(
            self._stable, certs, self._vc_attempt, self._amnesiac, self._last_certificate
        )
        msg = self._signer.sign(
            self.config.chain_id, EngineId.PBFT, Kind.VIEW_CHANGE, s, self._view, b"", body.encode()
        )
        self._vcs.add(ViewChange(msg, body))
        self._broadcast(msg)

    def _on_view_change(self, msg: SignedMessage) -> None:
        t = msg.round
        if t < self._view or (self._active and t == self._view):
            if self._active and self._nv_message is not None and msg.signer != self._me:
                # It missed the NEW-VIEW of a view we installed: hand it over.
                self._outbox.messages.append(Outbound(msg.signer, self._nv_message))
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
        self._learn_from(vc)
        self._vcs.add(vc)
        self._after_view_change_stored()

    def _learn_from(self, vc: ViewChange) -> None:
        """Votes inside prepared certificates are evidence material; a commit certificate
        above our chain proves we are behind (no f + 1 needed: it is a quorum's word)."""
        for cert in vc.body.prepared:
            self._observe(cert.pre_prepare)
            for p in cert.prepares:
                self._observe(p)
        committed = vc.body.committed
        if committed is not None and self._commit_by_certificate(committed):
            return  # the certificate decides our pending height and we hold the block
        if committed is not None and committed.height > self._committed_height:
            if committed.height + 1 > self._ahead.get(vc.signer, -1):
                self._ahead[vc.signer] = committed.height + 1
            self._request_sync()

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

    # --------------------------------------------------------------- new view

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
        if self._active:
            self._round_changes += 1  # jumped to a later view without asking for it
        self._view, self._active, self._vc_quorum = t, True, False
        self._timer, self._proposal_asked, self._left_view = 0, None, None
        self._nv_message = msg
        self._nv_plan = {h: (c.digest if c is not None else None) for h, c in plan.entries}
        self._vcs.prune_through(t)
        self._dirty = True
        for vc in vcs:
            self._learn_from(vc)
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
