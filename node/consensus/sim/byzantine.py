"""Byzantine replicas: an honest engine whose outbound traffic is corrupted on purpose.

Theory of operation
-------------------
:class:`ByzantineEngine` wraps any engine and implements the same protocol. Inputs pass
through untouched, so the inner engine keeps a coherent view of the protocol and produces
well-timed messages; :meth:`ByzantineEngine.ready` then rewrites ``Ready.messages`` with the
replica's own :class:`Signer`, knowing only :class:`Kind` and the simulated block format:

=============  ===========================================================================
behaviour      what the replica does to its traffic
=============  ===========================================================================
silent         sends nothing at all
equivocate     a block proposal (PRE-PREPARE / BLOCK) goes as block A to some backups and
               as a same-length twin B to the others (sometimes both to one backup)
conflict       a vote (PREPARE / COMMIT / CONFIRM / CHECKPOINT) is re-signed over a second
               digest for part of the recipients
invalid        a block proposal carries a block marked invalid (or with a bogus parent)
replay         re-sends old messages it sent or received, to random peers
forge          adds messages signed by a non-validator key, messages claiming an honest
               signer with a wrong signature, tampered copies, unsigned and wrong-chain ones
=============  ===========================================================================

Blocks are swapped *inside* whatever body the engine uses by replacing the block's bytes
with a variant of identical length (:func:`node.consensus.sim.blocks.twin_block`), so the
mutation works for any engine that embeds proposed blocks verbatim. Catch-up answers from a
Byzantine host (``badsync``) are tampered by the host, see :mod:`node.consensus.sim.host`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum

from eth_hash.auto import keccak

from node.consensus.engine import CommittedBlock, Engine, EngineStatus, Outbound, Ready
from node.consensus.messages import EngineId, Kind, SignedMessage, Signer, sighash
from node.consensus.sim.blocks import INVALID_MARK, decode_block, make_block, twin_block
from node.consensus.sim.rng import SimRng
from node.consensus.types import Address, Hash32, ValidatorSet


class Behaviour(Enum):
    """One kind of Byzantine misbehaviour (see the module docstring)."""

    SILENT = "silent"
    EQUIVOCATE = "equivocate"
    CONFLICT = "conflict"
    INVALID = "invalid"
    REPLAY = "replay"
    FORGE = "forge"
    BADSYNC = "badsync"


#: What a Byzantine replica does when behaviours are "mixed": drawn per replica and seed.
ACTIVE_BEHAVIOURS = (
    Behaviour.EQUIVOCATE,
    Behaviour.CONFLICT,
    Behaviour.INVALID,
    Behaviour.REPLAY,
    Behaviour.FORGE,
    Behaviour.BADSYNC,
)

PROPOSAL_KINDS = frozenset({Kind.PRE_PREPARE, Kind.BLOCK})
#: Votes a ``conflict`` replica re-signs over a second digest. CHECKPOINT is no
#: equivocation kind (no evidence is owed), but a lying checkpoint must not move anyone's
#: stable checkpoint or watermarks.
VOTE_KINDS = frozenset({Kind.PREPARE, Kind.COMMIT, Kind.CONFIRM, Kind.CHECKPOINT})
_HISTORY = 128


@dataclass(frozen=True)
class ByzantineProfile:
    """Which behaviours a replica has and how often it uses each opportunity."""

    behaviours: frozenset[Behaviour]
    rate: float = 0.5

    def has(self, behaviour: Behaviour) -> bool:
        """True if this replica misbehaves in that way."""
        return behaviour in self.behaviours

    def label(self) -> str:
        """Short sorted name list, for summaries."""
        return "+".join(sorted(b.value for b in self.behaviours))


def mixed_profile(rng: SimRng) -> ByzantineProfile:
    """A random profile: silent with probability 1/5, else a random non-empty mix."""
    if rng.chance(0.2):
        return ByzantineProfile(frozenset({Behaviour.SILENT}))
    chosen = [b for b in ACTIVE_BEHAVIOURS if rng.chance(0.5)]
    if not chosen:
        chosen = [rng.choice(ACTIVE_BEHAVIOURS)]
    return ByzantineProfile(frozenset(chosen), rate=0.3 + 0.6 * rng.random())


def parse_profile(spec: str, rng: SimRng) -> ByzantineProfile:
    """``"mixed"`` or a comma list of behaviour names (``"equivocate,replay"``)."""
    if spec == "mixed":
        return mixed_profile(rng)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    try:
        return ByzantineProfile(frozenset(Behaviour(n) for n in names))
    except ValueError as exc:
        raise ValueError(f"unknown Byzantine behaviour in {spec!r}") from exc


class ByzantineEngine:
    """An :class:`Engine` that misbehaves on the way out (see the module docstring)."""

    def __init__(
        self,
        inner: Engine,
        signer: Signer,
        outsider: Signer,
        chain_id: int,
        peers: Sequence[Address],
        rng: SimRng,
        profile: ByzantineProfile,
    ) -> None:
        self.inner = inner
        self.signer = signer
        self.outsider = outsider
        self.chain_id = chain_id
        self.peers = list(peers)
        self.rng = rng
        self.profile = profile
        self._history: list[SignedMessage] = []
        self._alt: dict[bytes, tuple[bytes, bytes, bool]] = {}  # digest -> (A, B, B invalid)
        self._alt_at_height: dict[int, Hash32] = {}
        self.sent_equivocations = 0

    # -- pass-through inputs ----------------------------------------------------------

    def tick(self) -> None:
        """Forward to the inner engine."""
        self.inner.tick()

    def step(self, message: SignedMessage) -> None:
        """Forward, remembering the message for replays and forgeries."""
        self._remember(message)
        self.inner.step(message)

    def propose(self, payload: bytes) -> None:
        """Forward; remember the block so outbound proposals can be swapped."""
        variant = self._variant(payload)
        if variant is not None:
            self._alt[keccak(payload)] = variant
        self.inner.propose(payload)

    def deliver(self, block: CommittedBlock) -> None:
        """Forward to the inner engine."""
        self.inner.deliver(block)

    def set_validators(self, validators: ValidatorSet, start_height: int) -> None:
        """Forward to the inner engine."""
        self.inner.set_validators(validators, start_height)

    def has_ready(self) -> bool:
        """Forward to the inner engine."""
        return self.inner.has_ready()

    def advance(self) -> None:
        """Forward to the inner engine."""
        self.inner.advance()

    def status(self) -> EngineStatus:
        """Forward to the inner engine."""
        return self.inner.status()

    # -- corrupted output -------------------------------------------------------------

    def ready(self) -> Ready:
        """The inner engine's Ready with its messages corrupted."""
        rd = self.inner.ready()
        if self.profile.has(Behaviour.SILENT):
            return replace(rd, messages=[])
        out: list[Outbound] = []
        for ob in rd.messages:
            self._remember(ob.message)
            out.extend(self._corrupt(ob))
        if self.profile.has(Behaviour.REPLAY) and self._history and self._roll():
            for _ in range(self.rng.between(1, 3)):
                out.append(Outbound(self.rng.choice(self.peers), self.rng.choice(self._history)))
        if self.profile.has(Behaviour.FORGE) and self._history and self._roll():
            out.append(Outbound(self.rng.choice(self.peers), self._forge()))
        return replace(rd, messages=out)

    def _roll(self) -> bool:
        return self.rng.chance(self.profile.rate)

    def _remember(self, msg: SignedMessage) -> None:
        self._history.append(msg)
        if len(self._history) > _HISTORY:
            del self._history[: len(self._history) - _HISTORY]

    def _variant(self, payload: bytes) -> tuple[bytes, bytes, bool] | None:
        """``(A, B, B is invalid)`` if this replica swaps block A for B in its proposal."""
        variant: bytes | None = None
        invalid = False
        if self.profile.has(Behaviour.INVALID) and self._roll():
            variant, invalid = _invalid_block(payload, self.rng), True
        elif self.profile.has(Behaviour.EQUIVOCATE) and self._roll():
            variant = twin_block(payload)
        return None if variant is None else (payload, variant, invalid)

    def _corrupt(self, ob: Outbound) -> list[Outbound]:
        msg = ob.message
        if msg.signer != self.signer.address:
            return [ob]
        if msg.kind in PROPOSAL_KINDS and msg.digest in self._alt:
            block, variant, invalid = self._alt[msg.digest]
            if block in msg.payload:
                body = msg.payload.replace(block, variant)
                other = self._resign(msg, keccak(variant), body)
                self._alt_at_height[msg.height] = Hash32(keccak(variant))
                return self._split(ob, other, everyone=invalid and self.rng.chance(0.5))
        if msg.kind in VOTE_KINDS and self.profile.has(Behaviour.CONFLICT) and self._roll():
            digest = self._alt_at_height.get(msg.height) or keccak(self.rng.bytes(32))
            if digest == msg.digest:
                digest = keccak(self.rng.bytes(32))
            return self._split(ob, self._resign(msg, digest, msg.payload))
        return [ob]

    def _split(self, ob: Outbound, other: SignedMessage, everyone: bool = False) -> list[Outbound]:
        """Send ``other`` instead of ``ob.message`` to part of the recipients."""
        recipients = [ob.to] if ob.to is not None else list(self.peers)
        if everyone:
            return [Outbound(to, other) for to in recipients]
        self.rng.shuffle(recipients)
        cut = self.rng.between(1, max(1, len(recipients) - 1)) if len(recipients) > 1 else 0
        out = [Outbound(to, ob.message) for to in recipients[:cut]]
        out += [Outbound(to, other) for to in recipients[cut:]]
        if recipients[:cut] and self.rng.chance(0.5):
            out.append(Outbound(self.rng.choice(recipients[:cut]), other))  # reveal both
        self.sent_equivocations += 1
        return out

    def _resign(self, msg: SignedMessage, digest: bytes, payload: bytes) -> SignedMessage:
        return self.signer.sign(
            self.chain_id,
            EngineId(msg.engine),
            Kind(msg.kind),
            msg.height,
            msg.round,
            digest,
            payload,
        )

    def _forge(self) -> SignedMessage:
        """One inadmissible message built from a remembered one."""
        t = self.rng.choice(self._history)
        other = Hash32(keccak(self.rng.bytes(32)))
        variant = self.rng.below(6)
        if variant == 0:  # a non-validator signs
            return self.outsider.sign(
                self.chain_id,
                EngineId(t.engine),
                Kind(t.kind),
                t.height,
                t.round,
                other,
                t.payload,
            )
        if variant == 1:  # claims an honest signer, signed with our key: bad signature
            victim = self.rng.choice(self.peers)
            h = sighash(
                self.chain_id, t.engine, t.kind, t.height, t.round, other, keccak(t.payload)
            )
            return replace(t, digest=other, signer=victim, signature=self.signer.sign_hash(h))
        if variant == 2:  # someone's message, tampered after signing
            return replace(t, digest=other)
        if variant == 3:  # unsigned
            return replace(t, digest=other, signature=b"\x00" * 65)
        if variant == 4:  # signed for another chain
            return self.signer.sign(
                self.chain_id + 1,
                EngineId(t.engine),
                Kind(t.kind),
                t.height,
                t.round,
                other,
                t.payload,
            )
        return replace(t, engine=t.engine ^ 3)  # another engine's domain: wrong engine


def _invalid_block(payload: bytes, rng: SimRng) -> bytes | None:
    """A same-length block that an honest validator must reject."""
    block = decode_block(payload)
    if block is None:
        return None
    if rng.chance(0.5):
        bad = replace(block, data=(INVALID_MARK + block.data)[: len(block.data)])
    else:
        bad = replace(block, parent_hash=Hash32(keccak(rng.bytes(32))))
    out = make_block(bad.height, bad.parent_hash, bad.proposer, bad.data)
    return out if len(out) == len(payload) else None
