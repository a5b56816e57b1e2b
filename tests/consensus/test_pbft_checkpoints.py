"""PBFT checkpoints: every K heights, stable at a quorum, watermarks, garbage collection."""

from __future__ import annotations

from node.consensus.messages import Kind
from node.consensus.pbft import PbftConfig
from node.consensus.types import ZERO_HASH
from tests.consensus.pbft_harness import CHAIN_ID, Cluster, block_hash, sign

SMALL = PbftConfig(chain_id=CHAIN_ID, checkpoint_interval=2, watermark_window=8)


def _no_checkpoints(_src: int, _dst: int, m: object) -> bool:
    return getattr(m, "kind", None) != Kind.CHECKPOINT


def test_checkpoint_every_k_heights_names_the_block() -> None:
    c = Cluster(4, SMALL)
    c.stop_at = 6
    c.pump()
    for r in c.replicas:
        cps = [m for m in r.sent if m.kind == Kind.CHECKPOINT]
        assert [m.height for m in cps] == [2, 4, 6]
        assert all(m.round == 0 and m.payload == b"" for m in cps)
        assert [m.digest for m in cps] == [r.chain[h - 1].block_hash for h in (2, 4, 6)]
    assert all(r.engine.stable_checkpoint.height == 6 for r in c.replicas)


def test_checkpoint_becomes_stable_only_at_a_quorum() -> None:
    c = Cluster(4, SMALL)
    c.stop_at = 2
    c.intercept = _no_checkpoints
    c.pump()
    e = c.engine(1)
    assert e.committed_height == 2 and e.stable_checkpoint.height == 0
    theirs = {j: next(m for m in c.replicas[j].sent if m.kind == Kind.CHECKPOINT) for j in (2, 3)}
    e.step(theirs[2])  # with its own: 2 of 4, quorum is 3
    assert e.stable_checkpoint.height == 0
    e.step(theirs[3])
    stable = e.stable_checkpoint
    assert (stable.height, stable.digest) == (2, c.replicas[1].chain[1].block_hash)
    stable.verify(e._sigs, c.vset)  # the proof is q matching CHECKPOINTs


def test_stable_checkpoint_garbage_collects_log_filter_and_detector() -> None:
    c = Cluster(4, SMALL)
    c.stop_at = 5
    c.pump()
    e = c.engine(1)
    assert e.stable_checkpoint.height == 4
    assert all(h > 4 for h in e.log.heights())
    assert all(h > 4 for h in e.log.checkpoint_heights())
    assert all(key[3] > 4 for key in e._detector._first)  # white box: evidence memory
    old = next(m for m in c.replicas[2].sent if m.kind == Kind.COMMIT and m.height == 3)
    before = e.status().dropped.get("out_of_window", 0)
    e.step(old)  # forgotten by the replay filter, refused by the low watermark
    assert e.status().dropped.get("out_of_window", 0) == before + 1
    assert "replay" not in e.status().dropped


def test_watermarks_bound_the_heights_admitted() -> None:
    c = Cluster(4, SMALL)
    c.stop_at = 0
    c.pump()
    e, s = c.engine(1), c.signers[2]
    d = block_hash(b"any")
    e.step(sign(s, Kind.PREPARE, 9, 0, d))  # above stable (0) + L (8)
    assert e.status().dropped == {"out_of_window": 1}
    e.step(sign(s, Kind.PREPARE, 8, 0, d))  # the high watermark itself is inside
    assert e.status().dropped == {"out_of_window": 1}
    assert 8 in e.log.heights()


def test_primary_stops_at_the_high_watermark_until_a_checkpoint_is_stable() -> None:
    c = Cluster(4, PbftConfig(chain_id=CHAIN_ID, checkpoint_interval=2, watermark_window=4))
    c.stop_at = 100
    c.intercept = _no_checkpoints
    c.pump()
    assert c.heights() == [4, 4, 4, 4]  # window (0, 4]: nothing stable, nothing beyond
    c.tick(100)
    assert c.heights() == [4, 4, 4, 4]
    assert all(r.engine.view == 0 for r in c.replicas)  # no one blamed the primary
    c.intercept = None  # checkpoints get through again: re-sent, stable, window moves
    c.stop_at = 10
    c.run_until(lambda: min(c.heights()) == 10)
    c.assert_agreement()
    assert all(r.engine.view == 0 for r in c.replicas)


def test_genesis_anchor_needs_no_proof() -> None:
    c = Cluster(4)
    e = c.engine(0)
    assert (e.stable_checkpoint.height, e.stable_checkpoint.digest) == (0, ZERO_HASH)
