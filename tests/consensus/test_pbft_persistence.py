"""PBFT persistence contract: votes and view are persisted before they are sent, a replica
restarted with its hard state never double-signs, and one restarted without it (votes
lost) never votes at its stored tip + 1, the only height a lost vote can be at."""

from __future__ import annotations

from node.consensus.messages import Kind, SignedMessage
from node.consensus.pbft_codec import HardState
from node.consensus.types import ZERO_HASH
from tests.consensus.pbft_harness import Cluster, block_hash, make_block, sign, vote_slots


def _no_double_signing(c: Cluster) -> None:
    for i, r in enumerate(c.replicas):
        for slot, digests in vote_slots(r.sent, c.address(i)).items():
            assert len(digests) == 1, (i, slot)


def _votes_from(c: Cluster, i: int, since: int = 0) -> list[SignedMessage]:
    return [
        m
        for m in c.replicas[i].sent[since:]
        if m.kind in (Kind.PRE_PREPARE, Kind.PREPARE, Kind.COMMIT)
    ]


def test_hard_state_round_trips_through_its_encoding() -> None:
    c = Cluster(4)
    c.stop_at = 2
    c.intercept = lambda _s, _d, m: not (m.kind == Kind.COMMIT and m.height == 2)
    c.pump()
    hs = c.replicas[1].hard_state
    assert hs is not None
    decoded = HardState.decode(hs)
    assert decoded.encode() == hs
    assert decoded.floor == 1 and decoded.view == 0 and decoded.active
    assert {(k, h) for k, h, _r, _d in decoded.votes} == {(Kind.PREPARE, 2), (Kind.COMMIT, 2)}
    assert [p.height for p in decoded.prepared] == [2]  # its lock on height 2


def test_own_votes_are_persisted_before_they_are_sent() -> None:
    c = Cluster(4)
    c.stop_at = 4
    c.down.add(0)  # a view change on the way, so NEW-VIEW re-proposals are covered too
    c.run_until(lambda: min(c.heights()[1:]) >= 4)
    # The harness checked every Ready: each own vote leaving was already in the hard
    # state handed over in the same Ready (or at/below its vote floor).
    assert all(c.replicas[i].hard_state is not None for i in (1, 2, 3))


def test_restarted_replica_with_hard_state_never_double_signs() -> None:
    c = Cluster(4)
    c.stop_at = 1
    c.intercept = lambda _s, d, m: m.kind != Kind.COMMIT and not (d == 1 and m.kind == Kind.PREPARE)
    c.pump()
    (x_vote,) = [m for m in _votes_from(c, 1) if m.kind == Kind.PREPARE]
    engine = c.restart(1)  # from its hard state: it remembers PREPARE(1, 0, X)
    y = make_block(1, ZERO_HASH, b"y")
    engine.step(sign(c.signers[0], Kind.PRE_PREPARE, 1, 0, block_hash(y), y))
    c.pump()
    assert engine.refused_votes == 1
    assert all(m.digest == x_vote.digest for m in _votes_from(c, 1))
    _no_double_signing(c)


def test_restarted_replica_that_lost_its_votes_does_not_double_sign() -> None:
    c = Cluster(4)
    c.stop_at = 1
    c.pump()
    c.stop_at = 2  # height 2: replica 1 prepares X, nothing commits
    c.intercept = lambda _s, d, m: m.kind != Kind.COMMIT and not (d != 1 and m.kind == Kind.PREPARE)
    c.pump()
    assert any(m.height == 2 for m in _votes_from(c, 1))
    engine = c.restart(1, keep_hard_state=False)
    assert engine.amnesiac
    mark = len(c.replicas[1].sent)
    y = make_block(2, c.replicas[1].chain[0].block_hash, b"y")
    engine.step(sign(c.signers[0], Kind.PRE_PREPARE, 2, 0, block_hash(y), y))
    c.pump()
    assert _votes_from(c, 1, mark) == []  # passive: it may have voted at height 2
    c.intercept = None
    c.stop_at = 5
    c.run_until(lambda: min(c.heights()) >= 5, max_ticks=2000)
    assert not engine.amnesiac  # the others committed height 2 without it
    assert all(m.height >= 3 for m in _votes_from(c, 1, mark))
    assert _votes_from(c, 1, mark)  # and above it, it votes again
    _no_double_signing(c)
    c.assert_agreement()


def test_amnesiac_replica_never_votes_at_its_tip_plus_one_then_votes_again() -> None:
    c = Cluster(4)
    c.stop_at = 2
    c.pump()
    engine = c.restart(3, keep_hard_state=False)  # stored tip 2: it may have voted at 3
    assert engine.amnesiac
    mark = len(c.replicas[3].sent)
    c.stop_at = 6
    c.pump()
    assert c.heights() == [6, 6, 6, 6] and not engine.amnesiac
    votes = _votes_from(c, 3, mark)
    assert votes and all(m.height >= 4 for m in votes)
    c.assert_agreement()


def test_fresh_replica_at_genesis_turns_amnesiac_when_peers_are_ahead() -> None:
    c = Cluster(4)
    c.down.add(3)
    c.stop_at = 3
    c.pump()
    c.down.discard(3)
    engine = c.restart(3, keep_hard_state=False)  # committed height 0, no hard state
    assert not engine.amnesiac  # could be a brand-new network
    mark = len(c.replicas[3].sent)
    ahead = next(m for m in c.replicas[1].sent if m.height == 3 and m.kind == Kind.COMMIT)
    engine.step(ahead)
    assert engine.amnesiac  # peers vote above height 1: it may have voted at height 1
    c.stop_at = 5
    c.pump()
    assert c.heights()[3] == 5 and not engine.amnesiac
    assert all(m.height >= 2 for m in _votes_from(c, 3, mark))
    c.assert_agreement()


def test_restart_after_persist_but_before_storing_the_block_asks_for_catch_up() -> None:
    c = Cluster(4)
    c.stop_at = 3
    c.pump()
    r = c.replicas[2]
    r.chain = r.chain[:2]  # the host crashed after persisting, before storing block 3
    engine = c.restart(2)
    ready = engine.ready()
    assert [s.from_height for s in ready.sync] == [3]
    engine.deliver(c.replicas[0].chain[2])
    assert engine.committed_height == 3
    assert engine.status().height == 4
