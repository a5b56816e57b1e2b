"""PBFT NEW-VIEW computation and the VIEW-CHANGE store (pure functions, no engine state).

Theory of operation
-------------------
When the primary of view ``v`` fails, replicas send VIEW-CHANGE for ``v' > v`` carrying
their stable checkpoint proof and their prepared certificates above it. The primary of
``v'`` gathers a quorum of them and computes the NEW-VIEW deterministically
(:func:`plan_new_view`, Castro & Liskov section 4.4):

- ``min_s`` is the highest stable checkpoint among the quorum (everything at or below it
  is decided and is fetched by catch-up, never re-proposed);
- ``max_s`` is the highest height with a prepared certificate above ``min_s``;
- for every height in ``(min_s, max_s]`` the block of the prepared certificate from the
  *highest view* is re-proposed in ``v'``; a height with no certificate gets a null
  re-proposal, meaning the new primary proposes a fresh block there.

Because any quorum of VIEW-CHANGEs intersects any prepared quorum in an honest replica,
a block that may have committed in an earlier view is always carried over; and because
the choice is by highest view, a replica prepared on block X in view ``v`` is released as
soon as a NEW-VIEW carries a certificate from a later view (the IBFT-1.0 "locked on
different blocks" trap) or proves, by the absence of certificates in a quorum, that
nothing could have committed.

Backups recompute the plan from the VIEW-CHANGEs carried in the NEW-VIEW and reject a
NEW-VIEW whose re-proposals differ (:func:`check_new_view`).
"""

from __future__ import annotations

from dataclasses import dataclass

from node.consensus.messages import EngineId, Kind, SignedMessage
from node.consensus.pbft_codec import (
    CheckpointProof,
    NewViewBody,
    PreparedCertificate,
    ProofError,
    Reproposal,
    SignatureCache,
    ValidatorsAt,
    ViewChangeBody,
)
from node.consensus.types import Address, Hash32, ValidatorSet

#: How many distinct views per validator the store keeps (bounds a flood of VIEW-CHANGEs).
VIEWS_PER_VALIDATOR = 4


@dataclass(frozen=True)
class ViewChange:
    """A verified VIEW-CHANGE and its decoded body."""

    message: SignedMessage
    body: ViewChangeBody

    @property
    def view(self) -> int:
        """The view the sender wants to move to."""
        return self.message.round

    @property
    def signer(self) -> Address:
        """Who sent it."""
        return self.message.signer


@dataclass(frozen=True)
class NewViewPlan:
    """What a NEW-VIEW must contain, computed from a quorum of VIEW-CHANGEs."""

    checkpoint: CheckpointProof
    entries: tuple[tuple[int, PreparedCertificate | None], ...]  # (height, winner or null)


class ViewChangeStore:
    """The latest VIEW-CHANGE per (view, validator), for views above the current one."""

    def __init__(self) -> None:
        self._by_view: dict[int, dict[Address, ViewChange]] = {}

    def add(self, vc: ViewChange) -> None:
        """Keep ``vc`` (a retransmission replaces the earlier one from the same sender)."""
        self._by_view.setdefault(vc.view, {})[vc.signer] = vc
        views = sorted(v for v, by in self._by_view.items() if vc.signer in by)
        for old in views[:-VIEWS_PER_VALIDATOR]:
            self._discard(old, vc.signer)

    def _discard(self, view: int, signer: Address) -> None:
        by = self._by_view.get(view)
        if by is not None:
            by.pop(signer, None)
            if not by:
                del self._by_view[view]

    def for_view(self, view: int) -> list[ViewChange]:
        """VIEW-CHANGEs for exactly ``view``, sorted by signer."""
        by = self._by_view.get(view, {})
        return [by[s] for s in sorted(by)]

    def highest_views_above(self, view: int, exclude: Address) -> list[int]:
        """Each other validator's highest requested view above ``view``, descending."""
        best: dict[Address, int] = {}
        for v, by in self._by_view.items():
            if v <= view:
                continue
            for signer in by:
                if signer != exclude and v > best.get(signer, -1):
                    best[signer] = v
        return sorted(best.values(), reverse=True)

    def signers_at_or_above(self, view: int) -> int:
        """How many validators asked for ``view`` or a higher one."""
        return len({s for v, by in self._by_view.items() if v >= view for s in by})

    def prune_through(self, view: int) -> None:
        """Forget VIEW-CHANGEs for views at or below ``view`` (installed or passed)."""
        for v in [v for v in self._by_view if v <= view]:
            del self._by_view[v]


def join_target(views_above: list[int], weak_quorum: int) -> int | None:
    """The view to join given other validators' requested views (descending), or None.

    With ``f + 1`` validators asking for views above ours, at least one honest replica
    has moved on; we join the lowest view among the ``f + 1`` highest requests, the
    highest view we know an honest replica has reached (Castro & Liskov's liveness rule).
    """
    if len(views_above) < weak_quorum:
        return None
    return views_above[weak_quorum - 1]


def choose_view_changes(
    candidates: list[ViewChange], validators: ValidatorSet, own: Address
) -> list[ViewChange]:
    """Pick the quorum a new primary puts in its NEW-VIEW, deterministically.

    Its own VIEW-CHANGE first, then those marked amnesiac (including them lets a
    replica that lost its votes vote again, see the votes-lost rule), then by
    position in the validator set.
    """

    def key(vc: ViewChange) -> tuple[int, int, int]:
        return (
            0 if vc.signer == own else 1,
            0 if vc.body.amnesiac else 1,
            validators.index_of(vc.signer),
        )

    members = [vc for vc in candidates if vc.signer in validators]
    chosen = sorted(members, key=key)[: validators.quorum]
    return sorted(chosen, key=lambda vc: vc.signer)


def plan_new_view(bodies: list[ViewChangeBody]) -> NewViewPlan:
    """Compute checkpoint and re-proposals from a quorum of VIEW-CHANGE bodies."""
    if not bodies:
        raise ProofError("new view: no view changes")
    checkpoint = bodies[0].checkpoint
    for body in bodies[1:]:
        if body.checkpoint.height > checkpoint.height:
            checkpoint = body.checkpoint
    best: dict[int, PreparedCertificate] = {}
    for body in bodies:
        for cert in body.prepared:
            if cert.height <= checkpoint.height:
                continue
            cur = best.get(cert.height)
            # Highest view wins; equal views with different digests can only come from
            # more than f faulty replicas, and then any deterministic choice will do.
            if cur is None or (cert.view, cur.digest) > (cur.view, cert.digest):
                best[cert.height] = cert
    top = max(best, default=checkpoint.height)
    entries = tuple((h, best.get(h)) for h in range(checkpoint.height + 1, top + 1))
    return NewViewPlan(checkpoint, entries)


def reproposal_message(
    cert: PreparedCertificate, view: int, primary: Address, signature: bytes
) -> SignedMessage:
    """The PRE-PREPARE a re-proposal stands for (its block comes from ``cert``)."""
    return SignedMessage(
        engine=EngineId.PBFT,
        kind=Kind.PRE_PREPARE,
        height=cert.height,
        round=view,
        digest=cert.digest,
        payload=cert.pre_prepare.payload,
        signer=primary,
        signature=signature,
    )


def decode_view_change(
    msg: SignedMessage, sigs: SignatureCache, validators_at: ValidatorsAt
) -> ViewChange:
    """Decode and verify the body of an (already signature-checked) VIEW-CHANGE."""
    if msg.kind != Kind.VIEW_CHANGE or msg.digest or msg.round < 1:
        raise ProofError("view change: wrong kind, digest or view")
    body = ViewChangeBody.decode(msg.payload)
    if body.checkpoint.height != msg.height:
        raise ProofError("view change: height is not the carried checkpoint's")
    body.verify(sigs, validators_at, msg.round)
    return ViewChange(msg, body)


def check_new_view(
    msg: SignedMessage,
    sigs: SignatureCache,
    validators_at: ValidatorsAt,
    validators: ValidatorSet,
) -> tuple[NewViewPlan, list[ViewChange], list[SignedMessage]]:
    """Verify a NEW-VIEW by recomputing it; return the plan, its view changes and the
    re-issued PRE-PREPAREs. Raises :class:`ProofError` on any mismatch."""
    body = NewViewBody.decode(msg.payload)
    primary = validators.member_at(msg.round)
    if msg.signer != primary or msg.digest:
        raise ProofError("new view: not from the view's primary")
    vcs: list[ViewChange] = []
    seen: set[bytes] = set()
    for raw in body.view_changes:
        if raw.engine != EngineId.PBFT or raw.round != msg.round:
            raise ProofError("new view: view change for another view")
        if raw.signer not in validators or raw.signer in seen or not sigs.verify(raw):
            raise ProofError("new view: bad or duplicate view change signer")
        seen.add(raw.signer)
        vcs.append(decode_view_change(raw, sigs, validators_at))
    if len(vcs) < validators.quorum:
        raise ProofError("new view: fewer view changes than a quorum")
    plan = plan_new_view([vc.body for vc in vcs])
    if msg.height != plan.checkpoint.height:
        raise ProofError("new view: height is not the chosen checkpoint's")
    if len(body.reproposals) != len(plan.entries):
        raise ProofError("new view: re-proposals do not cover the recomputed heights")
    pre_prepares = []
    for prop, (height, cert) in zip(body.reproposals, plan.entries, strict=True):
        if prop.height != height or (cert is None) != prop.is_null:
            raise ProofError(f"new view: re-proposal at {height} differs from recomputation")
        if cert is None:
            if prop.signature:
                raise ProofError("new view: null re-proposal carries a signature")
            continue
        if prop.digest != cert.digest:
            raise ProofError(f"new view: re-proposal at {height} has the wrong block")
        pp = reproposal_message(cert, msg.round, primary, prop.signature)
        if not sigs.verify(pp):
            raise ProofError(f"new view: bad re-proposal signature at {height}")
        pre_prepares.append(pp)
    return plan, vcs, pre_prepares


def new_view_body(vcs: list[ViewChange], reproposals: list[Reproposal]) -> NewViewBody:
    """Assemble the NEW-VIEW payload (view changes sorted by signer)."""
    ordered = sorted(vcs, key=lambda vc: vc.signer)
    return NewViewBody(tuple(vc.message for vc in ordered), tuple(reproposals))


def digest_of(entry: tuple[int, PreparedCertificate | None]) -> Hash32 | None:
    """The block a plan entry re-proposes, or None for a null re-proposal."""
    return entry[1].digest if entry[1] is not None else None
