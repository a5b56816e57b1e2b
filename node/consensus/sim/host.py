"""A simulated replica: one engine plus the host that honours its Ready contract.

Theory of operation
-------------------
A :class:`Host` owns a :class:`DurableStore` (what survives a crash: the engine's hard
state and the committed chain) and, while running, an engine built by an
:data:`EngineFactory`. After every input it drains the engine's Ready in the contract's
order:

1. ``persist`` is written to the durable store *before* any message leaves, so a crash at
   any tick boundary restarts the engine from a hard state that covers everything it sent;
2. ``messages`` go to the network (each honest signature is shown to the checker first);
3. ``committed`` blocks are checked (certificate, validity, agreement) and appended;
4. ``evidence`` is checked and recorded;
5. ``propose`` is answered with a fresh block (at once, or after a simulated build delay);
6. ``sync`` requests become :class:`SyncAsk` messages to a peer, whose host answers from its
   committed store through the network; the blocks come back through ``engine.deliver``.

A crash drops the engine (and everything only it remembered); a restart rebuilds it from
the durable store, or, in the lost-state scenario, with ``hard_state=None``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from node.consensus.engine import (
    BlockValidator,
    CommittedBlock,
    Engine,
    ProposalRequest,
    Ready,
    SyncRequest,
)
from node.consensus.messages import SignedMessage, Signer
from node.consensus.sim.blocks import BlockBook, decode_block, make_block
from node.consensus.sim.byzantine import Behaviour, ByzantineEngine, ByzantineProfile
from node.consensus.sim.checker import SafetyChecker
from node.consensus.sim.network import Envelope, Network, SyncAnswer, SyncAsk
from node.consensus.sim.rng import SimRng
from node.consensus.types import ZERO_HASH, Address, Hash32, ValidatorSet

EngineFactory = Callable[[Signer, ValidatorSet, BlockValidator, int, Hash32, bytes | None], Engine]
"""``(signer, validators, validate, committed_height, committed_hash, hard_state) -> Engine``."""

Unwrap = Callable[[SignedMessage], list[SignedMessage]]
"""Signed messages carried inside another message's body (engine-specific)."""

SYNC_BATCH = 16  # blocks per catch-up answer
SYNC_RETRY = 8  # ticks before the same catch-up request is sent to the same peer again
_ADMISSION_DROPS = (
    "malformed",
    "wrong_engine",
    "unsigned",
    "bad_signature",
    "not_validator",
    "replay",
    "out_of_window",
)


@dataclass
class DurableStore:
    """What survives a crash."""

    hard_state: bytes | None = None
    chain: list[CommittedBlock] = field(default_factory=list)
    persist_writes: int = 0

    @property
    def height(self) -> int:
        """Height of the last committed block."""
        return len(self.chain)

    @property
    def tip_hash(self) -> Hash32:
        """Hash of the last committed block (zero before the first)."""
        return self.chain[-1].block_hash if self.chain else ZERO_HASH


@dataclass
class HostContext:
    """What every host of a cluster shares."""

    chain_id: int
    validators: ValidatorSet
    network: Network
    checker: SafetyChecker
    factory: EngineFactory
    address_index: dict[bytes, int]
    byzantine: frozenset[int] = frozenset()
    propose_delay: int = 0
    epoch_length: int = 0  # > 0: a new committee every epoch_length heights
    unwrap: Unwrap | None = None
    on_sent: Callable[[int, SignedMessage], None] | None = None


def committee(validators: ValidatorSet, epoch_length: int, height: int) -> ValidatorSet:
    """The committee in force at ``height``: the same members, rotated by the epoch index.

    The simulator's stand-in for the Election contract: every epoch reorders the members,
    which moves the PBFT primaries and the DPoS producer schedule, and every honest host
    derives it from committed chain state alone (the epoch boundary), as a real one would.
    """
    if epoch_length <= 0:
        return validators
    epoch = height // epoch_length
    k = epoch % validators.n
    members = validators.members[k:] + validators.members[:k]
    return ValidatorSet(epoch, members)


class Host:
    """One replica and the host that runs it (see the module docstring)."""

    def __init__(
        self,
        index: int,
        signer: Signer,
        ctx: HostContext,
        rng: SimRng,
        tick_rate: float = 1.0,
        byzantine: ByzantineProfile | None = None,
        outsider: Signer | None = None,
    ) -> None:
        self.index = index
        self.signer = signer
        self.address: Address = signer.address
        self.ctx = ctx
        self.rng = rng
        self.tick_rate = tick_rate
        self.byzantine = byzantine
        self.outsider = outsider
        self.store = DurableStore()
        self.engine: Engine | None = None
        self.incarnation = 0
        self.round_changes_before = 0  # carried over crashes, for the summary
        self._tick_credit = 0.0
        self._pending_proposal: tuple[int, ProposalRequest] | None = None
        self._asked: dict[tuple[int, int], int] = {}
        self.book = BlockBook()
        self._offered_epoch = 0
        self.now = 0

    @property
    def honest(self) -> bool:
        """False for Byzantine replicas."""
        return self.byzantine is None

    @property
    def running(self) -> bool:
        """False while crashed."""
        return self.engine is not None

    # -- lifecycle --------------------------------------------------------------------

    def start(self, lose_hard_state: bool = False) -> None:
        """Build the engine from the durable store (a fresh start or a restart)."""
        if lose_hard_state:
            self.store.hard_state = None
        self.book = BlockBook()
        for blk in self.store.chain:
            self.book.learn(blk.block_hash, blk.height)
        inner = self.ctx.factory(
            self.signer,
            self.committee_at(self.store.height + 1),
            self.book.validate,
            self.store.height,
            self.store.tip_hash,
            self.store.hard_state,
        )
        if self.byzantine is not None and self.outsider is not None:
            peers = [a for a in self.ctx.validators.members if a != self.address]
            inner = ByzantineEngine(
                inner,
                self.signer,
                self.outsider,
                self.ctx.chain_id,
                peers,
                self.rng.fork(),
                self.byzantine,
            )
        self.engine = inner
        self._offered_epoch = -1  # re-announce every epoch: proofs may cite old heights
        self._offer_committees()
        self.incarnation += 1
        self._tick_credit = 0.0
        self._pending_proposal = None
        self._asked.clear()
        self.drain()

    def committee_at(self, height: int) -> ValidatorSet:
        """The validator set in force at ``height``."""
        return committee(self.ctx.validators, self.ctx.epoch_length, height)

    def _offer_committees(self) -> None:
        """Hand the engine every committee the committed chain has determined.

        The committee of epoch ``k`` is fixed by the block at height ``(k-1)*E`` and takes
        effect at ``k*E`` (DPoS: the engine switches only once that block is final). At a
        (re)start every earlier epoch is announced again, as a real host reading them
        from its chain would: peers' proofs may still cite heights of past epochs.
        """
        e = self.ctx.epoch_length
        if e <= 0 or self.engine is None:
            return
        while self._offered_epoch * e <= self.store.height:
            k = self._offered_epoch + 1
            self.engine.set_validators(self.committee_at(k * e), k * e)
            self._offered_epoch = k

    def crash(self) -> None:
        """Lose everything not in the durable store."""
        if self.engine is not None:
            self.round_changes_before += self.engine.status().round_changes
        self.engine = None

    def round_changes(self) -> int:
        """View changes (PBFT) or skipped slots (DPoS) over all incarnations."""
        live = self.engine.status().round_changes if self.engine is not None else 0
        return self.round_changes_before + live

    # -- inputs -----------------------------------------------------------------------

    def on_tick(self, now: int) -> None:
        """A global tick: feed the engine its (skewed) share of ticks."""
        self.now = now
        if self.engine is None:
            return
        self._tick_credit += self.tick_rate
        while self._tick_credit >= 1.0:
            self._tick_credit -= 1.0
            self.engine.tick()
        if self._pending_proposal is not None and self._pending_proposal[0] <= now:
            _, request = self._pending_proposal
            self._pending_proposal = None
            self.engine.propose(self._build_block(request))
        self.drain()

    def receive(self, env: Envelope, now: int) -> None:
        """An envelope arrived from the network."""
        self.now = now
        if self.engine is None:
            return
        body = env.body
        if isinstance(body, SignedMessage):
            self._step(body)
        elif isinstance(body, SyncAsk):
            self._answer_sync(env.src, body)
        else:
            for blk in body.blocks:
                if self.engine is None:
                    break
                self.engine.deliver(blk)
                self.drain()
        self.drain()

    def _step(self, msg: SignedMessage) -> None:
        assert self.engine is not None
        watch = self.honest and self.ctx.address_index.get(msg.signer, -1) in self.ctx.byzantine
        if not watch:
            self.engine.step(msg)
            return
        before = self._admission_drops()
        self.engine.step(msg)
        if self._admission_drops() == before:
            self.ctx.checker.on_byzantine_admitted(self.index, self.incarnation, msg, self.now)

    def _admission_drops(self) -> int:
        assert self.engine is not None
        dropped = self.engine.status().dropped
        return sum(dropped.get(k, 0) for k in _ADMISSION_DROPS)

    # -- the Ready contract -----------------------------------------------------------

    def drain(self) -> None:
        """Process Ready until the engine has nothing more to do."""
        while self.engine is not None and self.engine.has_ready():
            rd = self.engine.ready()
            self._handle(rd)
            self.engine.advance()
            # Requests are answered after advance(): whatever propose() produces belongs
            # to the next Ready, and an engine that clears its outbox on advance() would
            # otherwise lose it.
            if rd.propose is not None:
                self._on_propose(rd.propose)
            for req in rd.sync:
                self._ask_sync(req)

    def _handle(self, rd: Ready) -> None:
        if rd.persist is not None:
            self.store.hard_state = rd.persist  # durable before anything is sent
            self.store.persist_writes += 1
        for ob in rd.messages:
            self._send(ob.to, ob.message)
        for blk in rd.committed:
            self._commit(blk)
        if self.honest:
            for ev in rd.evidence:
                self.ctx.checker.on_evidence(self.index, ev, self.now)

    def _send(self, to: Address | None, msg: SignedMessage) -> None:
        if self.honest:
            self.ctx.checker.on_honest_send(self.index, msg, self.now)
            for inner in self.ctx.unwrap(msg) if self.ctx.unwrap is not None else []:
                self.ctx.checker.on_honest_send(self.index, inner, self.now)
        if self.ctx.on_sent is not None:
            self.ctx.on_sent(self.index, msg)
        size = len(msg.encode())
        if to is None:
            targets = [i for i in range(self.ctx.validators.n) if i != self.index]
        else:
            target = self.ctx.address_index.get(to)
            targets = [] if target is None or target == self.index else [target]
        for dst in targets:
            self.ctx.network.send(self.index, dst, msg, size, self.now)

    def _commit(self, blk: CommittedBlock) -> None:
        if self.honest:
            self.ctx.checker.on_commit(self.index, blk, self.now)
        if blk.height == self.store.height + 1:
            self.store.chain.append(blk)
            self.book.learn(blk.block_hash, blk.height)
            self._offer_committees()

    def _on_propose(self, request: ProposalRequest) -> None:
        assert self.engine is not None
        if self.ctx.propose_delay <= 0:
            self.engine.propose(self._build_block(request))
            return
        due = self.now + self.rng.between(0, self.ctx.propose_delay)
        self._pending_proposal = (due, request)

    def _build_block(self, request: ProposalRequest) -> bytes:
        data = self.rng.bytes(12)
        return make_block(request.height, request.parent_hash, self.address, data)

    # -- catch-up ---------------------------------------------------------------------

    def _ask_sync(self, req: SyncRequest) -> None:
        peer = self.ctx.address_index.get(req.peer) if req.peer is not None else None
        if peer is None or peer == self.index:
            others = [i for i in range(self.ctx.validators.n) if i != self.index]
            peer = self.rng.choice(others)
        last = self._asked.get((req.from_height, peer))
        if last is not None and self.now - last < SYNC_RETRY:
            return
        self._asked[(req.from_height, peer)] = self.now
        self.ctx.network.send(self.index, peer, SyncAsk(req.from_height), 8, self.now)

    def _answer_sync(self, src: int, ask: SyncAsk) -> None:
        if self.byzantine is not None and not self.byzantine.has(Behaviour.BADSYNC):
            return  # Byzantine replicas do not help
        start = max(ask.from_height, 1) - 1
        blocks = tuple(self.store.chain[start : start + SYNC_BATCH])
        if not blocks:
            return
        if self.byzantine is not None:
            blocks = tuple(self._tamper(b) for b in blocks)
        size = sum(len(b.payload) + len(b.certificate.encode()) for b in blocks)
        self.ctx.network.send(self.index, src, SyncAnswer(blocks), size, self.now)

    def _tamper(self, blk: CommittedBlock) -> CommittedBlock:
        """A Byzantine catch-up answer: another block under the same certificate."""
        original = decode_block(blk.payload)
        parent = original.parent_hash if original is not None else ZERO_HASH
        forged = make_block(blk.height, parent, self.address, self.rng.bytes(12))
        if self.rng.chance(0.5):
            return replace(blk, payload=forged)  # payload does not hash to block_hash
        return replace(blk, payload=forged, block_hash=Hash32(self.rng.bytes(32)))
