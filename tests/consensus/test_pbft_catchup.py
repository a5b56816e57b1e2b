"""PBFT catch-up: a replica that learns it is behind asks for committed blocks and commits
them once their certificates and contents verify, without replaying messages."""

from __future__ import annotations

from dataclasses import replace

from node.consensus.certificate import CommitCertificate
from node.consensus.engine import CommittedBlock
from node.consensus.messages import Kind
from node.consensus.pbft import PbftConfig
from node.consensus.types import ZERO_HASH
from tests.consensus.pbft_harness import (
    CHAIN_ID,
    Cluster,
    block_hash,
    make_block,
    sign,
    view_change,
)


def test_lagging_replica_catches_up_by_delivered_blocks() -> None:
    c = Cluster(4)
    c.down.add(3)
    c.stop_at = 5
    c.pump()
    c.down.discard(3)
    c.stop_at = 8
    c.run_until(lambda: c.heights() == [8, 8, 8, 8])
    r = c.replicas[3]
    assert r.syncs >= 1
    assert not any(m.height <= 5 for m in r.sent if m.kind in (Kind.PREPARE, Kind.COMMIT))
    c.assert_agreement()


def test_replica_beyond_its_window_syncs_and_moves_its_watermarks() -> None:
    c = Cluster(4, PbftConfig(chain_id=CHAIN_ID, checkpoint_interval=2, watermark_window=4))
    c.down.add(3)
    c.stop_at = 10
    c.pump()
    c.down.discard(3)
    c.stop_at = 14
    c.run_until(lambda: c.heights() == [14, 14, 14, 14])
    e = c.engine(3)
    assert e.stable_checkpoint.height >= 12 and e.status().dropped.get("out_of_window", 0) > 0
    c.assert_agreement()


def test_delivered_blocks_are_verified_before_they_are_committed() -> None:
    c = Cluster(4)
    c.stop_at = 0
    c.pump()
    e = c.engine(1)
    payload = make_block(1, ZERO_HASH, b"good")
    d = block_hash(payload)
    votes = [sign(s, Kind.COMMIT, 1, 0, d) for s in c.signers[:3]]
    good = CommittedBlock(1, d, payload, CommitCertificate.from_votes(votes))
    orphan = make_block(1, block_hash(b"elsewhere"), b"x")
    forged = [
        replace(good, certificate=CommitCertificate.from_votes(votes[:2])),  # below quorum
        replace(good, payload=make_block(1, ZERO_HASH, b"evil")),  # not the certified block
        CommittedBlock(  # certified, but not on our chain
            1,
            block_hash(orphan),
            orphan,
            CommitCertificate.from_votes(
                [sign(s, Kind.COMMIT, 1, 0, block_hash(orphan)) for s in c.signers[:3]]
            ),
        ),
        replace(good, certificate=replace(good.certificate, height=2)),  # another height
    ]
    for i, bad in enumerate(forged, start=1):
        e.deliver(bad)
        assert e.committed_height == 0
        assert e.status().dropped.get("invalid", 0) == i
    e.deliver(good)
    assert e.committed_height == 1
    assert e.ready().committed == [good]  # delivered blocks reach the host like any other


def test_f_plus_1_validators_ahead_ask_for_catch_up_but_one_does_not() -> None:
    c = Cluster(4)
    c.stop_at = 0
    c.pump()
    e = c.engine(1)
    d = block_hash(b"later")
    e.step(sign(c.signers[2], Kind.PREPARE, 3, 0, d))
    assert e.ready().sync == []  # one validator (maybe faulty) claims to be ahead
    e.step(sign(c.signers[3], Kind.PREPARE, 3, 0, d))
    (req,) = e.ready().sync
    assert req.from_height == 1 and req.peer in (c.address(2), c.address(3))
    assert e.committed_height == 0  # nothing is committed from messages it cannot check


def test_replica_voting_on_a_decided_height_in_a_later_view_gets_the_commits() -> None:
    c = Cluster(4)
    c.stop_at = 1
    c.intercept = lambda _s, d, m: not (d == 3 and m.kind == Kind.COMMIT)  # 3 misses them
    c.pump()
    assert c.heights() == [1, 1, 1, 0]
    e, lagging = c.engine(1), c.signers[3]
    d = c.replicas[1].chain[0].block_hash
    e.step(sign(lagging, Kind.COMMIT, 1, 0, d))  # merely late, same view: nothing to do
    assert e.ready().messages == []
    e.step(sign(lagging, Kind.PREPARE, 1, 1, d))  # still at height 1, in view 1: it missed it
    forwarded = e.ready().messages
    assert {o.to for o in forwarded} == {lagging.address}
    assert len(forwarded) == c.vset.quorum and all(o.message.kind == Kind.COMMIT for o in forwarded)
    c.intercept = None
    for o in forwarded:
        c.engine(3).step(o.message)
    assert c.engine(3).committed_height == 1  # decided by the forwarded certificate votes


def test_view_change_carrying_a_certificate_for_our_pending_block_commits_it() -> None:
    c = Cluster(4)
    c.stop_at = 1
    c.intercept = lambda _s, _d, m: m.kind != Kind.COMMIT  # everyone prepared, none committed
    c.pump()
    e = c.engine(1)
    assert e.committed_height == 0
    pp = next(m for m in c.replicas[0].sent if m.kind == Kind.PRE_PREPARE)
    votes = [sign(c.signers[j], Kind.COMMIT, 1, 0, pp.digest) for j in (0, 2, 3)]
    cert = CommitCertificate.from_votes(votes)
    e.step(view_change(c.signers[3], 1, committed=cert))
    assert e.committed_height == 1
    assert e.ready().committed[0].certificate == cert
