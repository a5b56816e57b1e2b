"""A tiny in-test DPoS network: every message delivered at once, no randomness.

This is not the simulator (``node.consensus.sim``): it exists so the DPoS unit tests can
put delegates into precise states. Each :meth:`Net.run` tick ticks every running engine,
then delivers queued messages FIFO (each delivery followed by draining Ready) until the
queue is empty. A test can take delegates ``down``, cut messages with ``intercept``,
inject messages of its own, and restart a delegate with or without its hard state.
Blocks are ``rlp([height, parent, tag])`` and hash to ``keccak`` of their bytes; a tag of
``b"invalid"`` makes the validator reject the block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import rlp
from eth_hash.auto import keccak

from node.consensus.dpos import DposConfig, DposEngine
from node.consensus.dpos_votes import preconfirm_payload, wire_round
from node.consensus.engine import BlockInfo, CommittedBlock, Ready
from node.consensus.evidence import EquivocationDetector, EquivocationEvidence
from node.consensus.messages import EngineId, Kind, SignedMessage, Signer
from node.consensus.types import ZERO_HASH, Hash32, ValidatorSet

CHAIN_ID = 0xD905


def signers(n: int) -> list[Signer]:
    """``n`` deterministic delegate keys."""
    return [Signer(keccak(b"dpos-test-key-%d" % i)) for i in range(n)]


def make_block(height: int, parent: bytes, tag: bytes = b"") -> bytes:
    """An encoded test block."""
    return bytes(rlp.encode([height, parent, tag]))


def block_hash(payload: bytes) -> Hash32:
    """Hash of a test block."""
    return Hash32(keccak(payload))


def validate(payload: bytes) -> BlockInfo | None:
    """The injected validator for test blocks (never raises)."""
    try:
        height, parent, tag = rlp.decode(payload)
    except Exception:
        return None
    if tag == b"invalid" or len(parent) != 32:
        return None
    return BlockInfo(block_hash(payload), Hash32(parent), int.from_bytes(height, "big"))


def block_msg(s: Signer, height: int, slot: int, payload: bytes) -> SignedMessage:
    """A BLOCK message signed by ``s``."""
    return s.sign(CHAIN_ID, EngineId.DPOS, Kind.BLOCK, height, slot, block_hash(payload), payload)


def preconfirm(s: Signer, height: int, round_: int, digest: bytes, slot: int = 0) -> SignedMessage:
    """A pre-confirm signed by ``s`` (``digest=b""`` for nil)."""
    return s.sign(
        CHAIN_ID,
        EngineId.DPOS,
        Kind.CONFIRM,
        height,
        wire_round(round_, 0),
        digest,
        preconfirm_payload(slot),
    )


def confirm(s: Signer, height: int, round_: int, digest: bytes) -> SignedMessage:
    """A confirm (certificate vote) signed by ``s``."""
    return s.sign(CHAIN_ID, EngineId.DPOS, Kind.CONFIRM, height, wire_round(round_, 1), digest)


@dataclass
class Delegate:
    """One engine plus its host's durable state and what it did."""

    signer: Signer
    engine: DposEngine
    hard_state: bytes | None = None
    chain: list[CommittedBlock] = field(default_factory=list)
    sent: list[SignedMessage] = field(default_factory=list)
    evidence: list[EquivocationEvidence] = field(default_factory=list)
    syncs: int = 0


Intercept = Callable[[int, int, SignedMessage], bool]
"""``(src, dst, message) -> deliver?``"""


class Net:
    """``n`` DPoS delegates wired together in memory."""

    def __init__(self, n: int, config: DposConfig | None = None) -> None:
        self.config = config or DposConfig(chain_id=CHAIN_ID)
        self.signers = signers(n)
        self.vset = ValidatorSet(0, tuple(s.address for s in self.signers))
        self.index = {s.address: i for i, s in enumerate(self.signers)}
        self.delegates = [Delegate(s, self._build(s, 0, ZERO_HASH, None)) for s in self.signers]
        self.queue: list[tuple[int, int, SignedMessage]] = []
        self.down: set[int] = set()
        self.intercept: Intercept | None = None
        self.tags: dict[int, bytes] = {}  # delegate -> tag of the blocks it builds
        self.on_commit: Callable[[int, CommittedBlock], None] | None = None
        self.serve_sync = True
        self.now = 0
        self.drain()

    def _build(self, s: Signer, height: int, tip: Hash32, hard_state: bytes | None) -> DposEngine:
        return DposEngine(
            self.config,
            s,
            self.vset,
            validate,
            committed_height=height,
            committed_hash=tip,
            hard_state=hard_state,
        )

    def engine(self, i: int) -> DposEngine:
        """Engine of delegate ``i``."""
        return self.delegates[i].engine

    def restart(self, i: int, *, keep_hard_state: bool = True) -> DposEngine:
        """Rebuild delegate ``i`` from its durable state (optionally losing its votes)."""
        d = self.delegates[i]
        tip = d.chain[-1].block_hash if d.chain else ZERO_HASH
        hs = d.hard_state if keep_hard_state else None
        d.hard_state = hs
        d.engine = self._build(d.signer, len(d.chain), tip, hs)
        self.down.discard(i)
        self.drain()
        return d.engine

    # -- driving ----------------------------------------------------------------------

    def inject(self, src: int, dst: int, msg: SignedMessage) -> None:
        """Queue ``msg`` as if ``src`` had sent it to ``dst``."""
        self.queue.append((src, dst, msg))

    def broadcast(self, src: int, msg: SignedMessage) -> None:
        """Queue ``msg`` from ``src`` to every other delegate."""
        for dst in range(len(self.delegates)):
            if dst != src:
                self.queue.append((src, dst, msg))

    def drain(self) -> None:
        """Handle every running delegate's Ready until none has anything left."""
        busy = True
        while busy:
            busy = False
            for i, d in enumerate(self.delegates):
                if i in self.down:
                    continue
                while d.engine.has_ready():
                    busy = True
                    rd = d.engine.ready()
                    self._handle(i, rd)
                    d.engine.advance()
                    self._answer(i, rd)

    def _handle(self, i: int, rd: Ready) -> None:
        d = self.delegates[i]
        if rd.persist is not None:
            d.hard_state = rd.persist  # durable before anything is sent
        for out in rd.messages:
            if out.message.signer == d.signer.address:
                d.sent.append(out.message)
            targets = [self.index[out.to]] if out.to is not None else range(len(self.delegates))
            for dst in targets:
                if dst != i:
                    self.queue.append((i, dst, out.message))
        for blk in rd.committed:
            assert blk.height == len(d.chain) + 1, "commits must be consecutive"
            d.chain.append(blk)
            if self.on_commit is not None:
                self.on_commit(i, blk)
        d.evidence.extend(rd.evidence)

    def _answer(self, i: int, rd: Ready) -> None:
        d = self.delegates[i]
        if rd.propose is not None:
            req = rd.propose
            tag = self.tags.get(i, b"d%d" % i) + b"/s%d" % req.round
            d.engine.propose(make_block(req.height, req.parent_hash, tag))
        for sync in rd.sync:
            d.syncs += 1
            if self.serve_sync:
                self._serve_sync(i, sync.from_height)

    def _serve_sync(self, i: int, from_height: int) -> None:
        best = max(
            (d for j, d in enumerate(self.delegates) if j != i and j not in self.down),
            key=lambda d: len(d.chain),
            default=None,
        )
        if best is None:
            return
        for blk in best.chain[from_height - 1 :]:
            self.delegates[i].engine.deliver(blk)

    def deliver_queue(self) -> None:
        """Deliver queued messages (and everything they cause) until none is left."""
        while self.queue:
            src, dst, msg = self.queue.pop(0)
            if dst in self.down or src in self.down:
                continue
            if self.intercept is not None and not self.intercept(src, dst, msg):
                continue
            self.delegates[dst].engine.step(msg)
            self.drain()

    def run(self, ticks: int) -> None:
        """``ticks`` ticks of every running delegate, each followed by full delivery."""
        for _ in range(ticks):
            self.now += 1
            for i, d in enumerate(self.delegates):
                if i not in self.down:
                    d.engine.tick()
            self.drain()
            self.deliver_queue()

    # -- checks -----------------------------------------------------------------------

    def heights(self) -> list[int]:
        """Committed height of every delegate."""
        return [len(d.chain) for d in self.delegates]

    def assert_agreement(self) -> None:
        """No two delegates committed different blocks at a height."""
        seen: dict[int, bytes] = {}
        for d in self.delegates:
            for blk in d.chain:
                assert seen.setdefault(blk.height, blk.block_hash) == blk.block_hash

    def double_signers(self) -> list[EquivocationEvidence]:
        """Equivocations among everything the delegates themselves ever signed."""
        detector = EquivocationDetector()
        found = []
        for d in self.delegates:
            for msg in d.sent:
                ev = detector.observe(msg)
                if ev is not None:
                    found.append(ev)
        return found
