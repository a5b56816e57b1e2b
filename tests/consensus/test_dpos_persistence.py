"""DPoS persistence contract: what a delegate signs is in Ready.persist before it is sent,
and a restarted delegate never signs a conflicting message — with its hard state, or
with it lost."""

from __future__ import annotations

import pytest

from node.consensus.dpos import DposConfig, DposEngine
from node.consensus.dpos_state import HardState, Vote
from node.consensus.dpos_votes import split_round
from node.consensus.evidence import EquivocationDetector
from node.consensus.messages import Kind, SignedMessage
from node.consensus.types import ZERO_HASH, Hash32, ValidatorSet
from node.errors import StorageError
from tests.consensus.dpos_harness import (
    CHAIN_ID,
    Net,
    block_hash,
    block_msg,
    make_block,
    preconfirm,
    signers,
    validate,
)

KEYS = signers(4)
VSET = ValidatorSet(0, tuple(k.address for k in KEYS))
CONFIG = DposConfig(chain_id=CHAIN_ID)
A = make_block(1, ZERO_HASH, b"A")
B = make_block(1, ZERO_HASH, b"B")


class Host:
    """One delegate's host: persists before it sends, keeps everything it sent."""

    def __init__(self) -> None:
        self.hard_state: bytes | None = None
        self.sent: list[SignedMessage] = []

    def drain(self, engine: DposEngine) -> None:
        while engine.has_ready():
            rd = engine.ready()
            if rd.persist is not None:
                self.hard_state = rd.persist
            own = [o.message for o in rd.messages if o.message.signer == KEYS[3].address]
            if own:
                assert self.hard_state is not None
                _assert_covered(HardState.decode(self.hard_state), own)
            self.sent += own
            engine.advance()


def _assert_covered(state: HardState, own: list[SignedMessage]) -> None:
    """Every vote leaving is recorded by (or superseded in) the persisted state."""
    for m in own:
        if m.kind == Kind.BLOCK:
            assert state.last_block_slot >= m.round
            continue
        round_, phase = split_round(m.round)
        recorded = state.preconfirms.get(m.height) if phase == 0 else state.lock
        assert recorded is not None
        assert (recorded.height, recorded.round) >= (m.height, round_)


def _no_double_signing(sent: list[SignedMessage]) -> None:
    detector = EquivocationDetector()
    assert [e for e in map(detector.observe, sent) if e is not None] == []


def test_votes_are_in_the_persisted_hard_state_before_they_are_sent() -> None:
    host = Host()
    engine = DposEngine(CONFIG, KEYS[3], VSET, validate)
    host.drain(engine)
    assert host.hard_state is not None  # a first start persists at once
    engine.step(block_msg(KEYS[0], 1, 0, A))
    for k in KEYS[:2]:
        engine.step(preconfirm(k, 1, 0, block_hash(A)))
    host.drain(engine)
    assert {(m.kind, m.round) for m in host.sent} == {(Kind.CONFIRM, 0), (Kind.CONFIRM, 1)}


def test_restarted_delegate_with_hard_state_never_double_signs() -> None:
    host = Host()
    engine = DposEngine(CONFIG, KEYS[3], VSET, validate)
    engine.step(block_msg(KEYS[0], 1, 0, A))
    for k in KEYS[:2]:
        engine.step(preconfirm(k, 1, 0, block_hash(A)))
    host.drain(engine)  # pre-confirmed and confirmed A in round 0: locked on A
    # crash; the restarted delegate sees only the twin B and a round-0 quorum for it
    engine = DposEngine(CONFIG, KEYS[3], VSET, validate, hard_state=host.hard_state)
    engine.step(block_msg(KEYS[0], 1, 0, B))
    for k in KEYS[:3]:
        engine.step(preconfirm(k, 1, 0, block_hash(B)))
    for _ in range(30):
        engine.tick()
    host.drain(engine)
    _no_double_signing(host.sent)
    assert block_hash(B) not in {m.digest for m in host.sent}


def test_restarted_delegate_with_votes_lost_never_double_signs() -> None:
    host = Host()
    c1 = block_hash(A)  # height 1 is final; the delegate votes at height 2
    a2, b2 = make_block(2, c1, b"A2"), make_block(2, c1, b"B2")
    fresh = HardState().encode()
    engine = DposEngine(
        CONFIG, KEYS[3], VSET, validate, committed_height=1, committed_hash=c1, hard_state=fresh
    )
    engine.step(block_msg(KEYS[1], 2, 1, a2))
    host.drain(engine)  # pre-confirmed A2 at (2, round 0) ... and then lost its disk
    engine = DposEngine(CONFIG, KEYS[3], VSET, validate, committed_height=1, committed_hash=c1)
    state = HardState.decode(_persisted(engine))
    assert (state.guard, state.taint, state.taint_round) == (1 + CONFIG.max_lag + 1, 2, -1)
    engine.step(block_msg(KEYS[1], 2, 1, b2))  # the twin, and a round-0 quorum for it
    for k in KEYS[:3]:
        engine.step(preconfirm(k, 2, 0, block_hash(b2)))
    for _ in range(CONFIG.amnesia_watch + 60):
        engine.tick()
        host.drain(engine)
    _no_double_signing(host.sent)
    pre = [split_round(m.round)[0] for m in host.sent if m.height == 2 and m.round % 2 == 0]
    assert pre[0] == 0 and pre[1:] and all(r >= 2 for r in pre[1:])  # then only fresh rounds


def _persisted(engine: DposEngine) -> bytes:
    rd = engine.ready()
    engine.advance()
    assert rd.persist is not None
    return rd.persist


def test_network_with_a_delegate_restarted_without_its_votes_keeps_going_safely() -> None:
    net = Net(4)
    net.run(33)
    net.down.add(2)
    net.restart(2, keep_hard_state=False)
    guard = HardState.decode(net.delegates[2].hard_state or b"").guard
    net.run(200)
    assert net.double_signers() == []
    net.assert_agreement()
    assert min(net.heights()) >= 15
    late_blocks = [m for m in net.delegates[2].sent if m.kind == Kind.BLOCK and m.height < guard]
    before_crash = [m for m in late_blocks if m.height <= 4]
    assert late_blocks == before_crash  # nothing new below the guard


def test_hard_state_round_trips_and_an_unreadable_one_is_a_storage_error() -> None:
    state = HardState(
        slot=7,
        last_block_slot=4,
        last_block_height=3,
        guard=12,
        taint=4,
        taint_round=2,
        lock=Vote(4, 1, Hash32(b"\x01" * 32)),
        preconfirms={4: Vote(4, 3, Hash32(b"")), 5: Vote(5, 0, Hash32(b"\x02" * 32))},
    )
    assert HardState.decode(state.encode()) == state
    with pytest.raises(StorageError):
        DposEngine(CONFIG, KEYS[3], VSET, validate, hard_state=b"\xc3garbage")
