"""A tiny in-test PBFT network: deliver every message, no randomness, optional cuts.

This is not the simulator (``node.consensus.sim``): it exists so PBFT unit tests can put
replicas into precise states. Messages are delivered FIFO; a test can cut links
(``blocked``), take replicas down (``down``), or intercept messages (``intercept``).
Blocks are ``rlp([height, parent, tag])`` and their hash is keccak of the bytes; a tag of
``b"invalid"`` makes the validator reject the block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import rlp
from eth_hash.auto import keccak

from node.consensus.certificate import CommitCertificate
from node.consensus.engine import BlockInfo, CommittedBlock, Outbound, Ready
from node.consensus.evidence import EquivocationEvidence
from node.consensus.messages import EngineId, Kind, SignedMessage, Signer
from node.consensus.pbft import PbftConfig, PbftEngine
from node.consensus.pbft_codec import (
    CheckpointProof,
    HardState,
    PreparedCertificate,
    ViewChangeBody,
)
from node.consensus.types import ZERO_HASH, Address, Hash32, ValidatorSet

CHAIN_ID = 0x7B


def signers(n: int) -> list[Signer]:
    """``n`` deterministic validator keys."""
    return [Signer(keccak(b"pbft-test-key-%d" % i)) for i in range(n)]


def make_block(height: int, parent: bytes, tag: bytes = b"") -> bytes:
    """An encoded test block."""
    return bytes(rlp.encode([height, parent, tag]))


def block_hash(payload: bytes) -> Hash32:
    """Hash of a test block."""
    return Hash32(keccak(payload))


def validate(payload: bytes) -> BlockInfo | None:
    """The injected validator for test blocks."""
    try:
        height, parent, tag = rlp.decode(payload)
    except Exception:
        return None
    if tag == b"invalid" or len(parent) != 32:
        return None
    return BlockInfo(block_hash(payload), Hash32(parent), int.from_bytes(height, "big"))


def sign(
    s: Signer, kind: Kind, height: int, round_: int, digest: bytes = b"", payload: bytes = b""
) -> SignedMessage:
    """Sign a PBFT message as ``s`` (for Byzantine behaviour in tests)."""
    return s.sign(CHAIN_ID, EngineId.PBFT, kind, height, round_, digest, payload)


@dataclass
class Replica:
    """One engine plus its host's durable state."""

    signer: Signer
    engine: PbftEngine
    hard_state: bytes | None = None
    chain: list[CommittedBlock] = field(default_factory=list)
    sent: list[SignedMessage] = field(default_factory=list)
    evidence: list[EquivocationEvidence] = field(default_factory=list)
    syncs: int = 0


Intercept = Callable[[int, int, SignedMessage], bool]
"""``(src, dst, message) -> deliver?``"""


class Cluster:
    """``n`` PBFT replicas wired together in memory."""

    def __init__(self, n: int, config: PbftConfig | None = None, auto_propose: bool = True):
        self.config = config or PbftConfig(chain_id=CHAIN_ID)
        self.signers = signers(n)
        self.vset = ValidatorSet(0, tuple(s.address for s in self.signers))
        self.replicas = [
            Replica(s, PbftEngine(self.config, s, self.vset, validate)) for s in self.signers
        ]
        self.index = {s.address: i for i, s in enumerate(self.signers)}
        self.queue: list[tuple[int, int, SignedMessage]] = []
        self.down: set[int] = set()
        self.blocked: set[tuple[int, int]] = set()
        self.intercept: Intercept | None = None
        self.auto_propose = auto_propose
        self.tags: dict[int, bytes] = {}  # replica -> tag for its next proposals
        self.pending_proposals: list[tuple[int, int, bytes]] = []
        self.stop_at = 3  # proposals above this height are held back (tests raise it)

    def engine(self, i: int) -> PbftEngine:
        """Engine of replica ``i``."""
        return self.replicas[i].engine

    def restart(self, i: int, *, keep_hard_state: bool = True) -> PbftEngine:
        """Rebuild replica ``i`` from its durable state (optionally losing its votes)."""
        r = self.replicas[i]
        tip = r.chain[-1].block_hash if r.chain else ZERO_HASH
        hs = r.hard_state if keep_hard_state else None
        r.engine = PbftEngine(
            self.config,
            r.signer,
            self.vset,
            validate,
            committed_height=len(r.chain),
            committed_hash=tip,
            hard_state=hs,
        )
        r.hard_state = hs
        return r.engine

    # ------------------------------------------------------------------ driving

    def inject(self, src: int, dst: int, msg: SignedMessage) -> None:
        """Queue ``msg`` as if ``src`` had sent it to ``dst``."""
        self.queue.append((src, dst, msg))

    def _handle_ready(self, i: int, ready: Ready) -> None:
        r = self.replicas[i]
        if ready.persist is not None:
            r.hard_state = ready.persist
        self._check_persisted_before_send(r, ready)
        for out in ready.messages:
            self._route(i, out)
        for block in ready.committed:
            assert block.height == len(r.chain) + 1, "commits must be consecutive"
            r.chain.append(block)
        r.evidence.extend(ready.evidence)
        if ready.propose is not None:
            req = ready.propose
            tag = self.tags.get(i, b"r%d" % i) + b"/v%d" % req.round
            payload = make_block(req.height, req.parent_hash, tag)
            self.pending_proposals.append((i, req.height, payload))
        for sync in ready.sync:
            r.syncs += 1
            self._serve_sync(i, sync.from_height)

    @staticmethod
    def _check_persisted_before_send(r: Replica, ready: Ready) -> None:
        """Every own vote leaving in this Ready is covered by the hard state written."""
        votes = [
            m
            for m in (o.message for o in ready.messages)
            if m.signer == r.signer.address
            and m.kind in (Kind.PRE_PREPARE, Kind.PREPARE, Kind.COMMIT)
        ]
        if not votes:
            return
        assert r.hard_state is not None, "votes sent before any hard state was persisted"
        hs = HardState.decode(r.hard_state)
        recorded = set(hs.votes)
        for m in votes:
            assert (m.kind, m.height, m.round, m.digest) in recorded or m.height <= hs.floor

    def _route(self, src: int, out: Outbound) -> None:
        self.replicas[src].sent.append(out.message)
        targets = [self.index[out.to]] if out.to is not None else range(len(self.replicas))
        for dst in targets:
            if dst != src:
                self.queue.append((src, dst, out.message))

    def _serve_sync(self, i: int, from_height: int) -> None:
        best = max(
            (r for j, r in enumerate(self.replicas) if j != i and j not in self.down),
            key=lambda r: len(r.chain),
            default=None,
        )
        if best is None:
            return
        for block in best.chain[from_height - 1 :]:
            self.replicas[i].engine.deliver(block)

    def drain_ready(self) -> bool:
        """Handle every replica's Ready, answer proposals; True if anything happened."""
        busy = False
        for i, r in enumerate(self.replicas):
            if i in self.down:
                continue
            while r.engine.has_ready():
                busy = True
                self._handle_ready(i, r.engine.ready())
                r.engine.advance()
        if self.auto_propose:
            keep = []
            for j, h, payload in self.pending_proposals:
                if h > self.stop_at or j in self.down:
                    keep.append((j, h, payload))
                    continue
                self.replicas[j].engine.propose(payload)
                busy = True
            self.pending_proposals = keep
        return busy

    def pump(self, max_steps: int = 100_000) -> None:
        """Deliver messages until the network is quiet."""
        for _ in range(max_steps):
            busy = self.drain_ready()
            if not self.queue:
                if not busy:
                    return
                continue
            src, dst, msg = self.queue.pop(0)
            if src in self.down or dst in self.down or (src, dst) in self.blocked:
                continue
            if self.intercept is not None and not self.intercept(src, dst, msg):
                continue
            self.replicas[dst].engine.step(msg)
        raise AssertionError("network did not quiesce")

    def tick(self, ticks: int = 1) -> None:
        """Advance logical time on every running replica, pumping after each tick."""
        for _ in range(ticks):
            for i, r in enumerate(self.replicas):
                if i not in self.down:
                    r.engine.tick()
            self.pump()

    def run_until(self, predicate: Callable[[], bool], max_ticks: int = 2_000) -> int:
        """Tick until ``predicate`` holds; return the ticks it took."""
        self.pump()
        for t in range(max_ticks):
            if predicate():
                return t
            self.tick()
        raise AssertionError(f"condition not reached in {max_ticks} ticks")

    def heights(self) -> list[int]:
        """Committed height of every replica."""
        return [len(r.chain) for r in self.replicas]

    def assert_agreement(self) -> None:
        """No two replicas committed different blocks at a height."""
        by_height: dict[int, Hash32] = {}
        for r in self.replicas:
            for b in r.chain:
                assert by_height.setdefault(b.height, b.block_hash) == b.block_hash

    def address(self, i: int) -> Address:
        """Address of replica ``i``."""
        return self.signers[i].address


def view_change(
    s: Signer,
    view: int,
    checkpoint: CheckpointProof | None = None,
    prepared: tuple[PreparedCertificate, ...] = (),
    *,
    amnesiac: bool = False,
    attempt: int = 0,
    committed: CommitCertificate | None = None,
) -> SignedMessage:
    """A VIEW-CHANGE signed by ``s``."""
    cp = checkpoint or CheckpointProof.genesis()
    body = ViewChangeBody(cp, prepared, attempt, amnesiac, committed)
    return sign(s, Kind.VIEW_CHANGE, cp.height, view, b"", body.encode())


def vote_slots(
    messages: list[SignedMessage], signer: Address
) -> dict[tuple[int, int, int], set[bytes]]:
    """Digests ``signer`` signed per (kind, height, round) among ``messages``."""
    slots: dict[tuple[int, int, int], set[bytes]] = {}
    for m in messages:
        if m.signer == signer and m.kind in (Kind.PRE_PREPARE, Kind.PREPARE, Kind.COMMIT):
            slots.setdefault((m.kind, m.height, m.round), set()).add(m.digest)
    return slots
