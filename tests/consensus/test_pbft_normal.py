"""PBFT normal case: quorums, happy path for n = 1 and n = 4, certificates."""

from __future__ import annotations

import pytest
from eth_hash.auto import keccak

from node.consensus.messages import Kind, Signer
from node.consensus.pbft import PbftConfig
from node.consensus.types import ZERO_HASH, ValidatorSet
from node.errors import InvalidInput
from tests.consensus.pbft_harness import CHAIN_ID, Cluster, block_hash, make_block, sign


def test_quorums_follow_castro_liskov() -> None:
    sizes = {1: (0, 1, 1), 4: (1, 3, 2), 5: (1, 4, 2), 6: (1, 4, 2), 7: (2, 5, 3), 13: (4, 9, 5)}
    for n, (f, q, weak) in sizes.items():
        vset = ValidatorSet(0, tuple(bytes([i + 1]) * 20 for i in range(n)))
        assert (vset.f, vset.quorum, vset.weak_quorum) == (f, q, weak)


def test_single_node_network_commits_on_its_own() -> None:
    c = Cluster(1)
    c.stop_at = 5
    c.pump()
    assert c.heights() == [5]
    assert all(b.certificate.is_valid(CHAIN_ID, c.vset) for b in c.replicas[0].chain)


def test_four_replicas_commit_the_same_blocks_with_valid_certificates() -> None:
    c = Cluster(4)
    c.stop_at = 3
    c.pump()
    assert c.heights() == [3, 3, 3, 3]
    c.assert_agreement()
    for r in c.replicas:
        parent = None
        for b in r.chain:
            b.certificate.verify(CHAIN_ID, c.vset)
            assert b.certificate.kind == Kind.COMMIT and b.certificate.round == 0
            assert len(b.certificate.signatures) == c.vset.quorum
            if parent is not None:
                assert b.payload and parent
            parent = b.block_hash


def test_prepare_and_commit_carry_digest_only_and_pre_prepare_carries_the_block() -> None:
    c = Cluster(4)
    c.stop_at = 1
    c.pump()
    block = c.replicas[0].chain[0]
    kinds = {}
    for r in c.replicas:
        for m in r.sent:
            kinds.setdefault(m.kind, []).append(m)
    (pp,) = kinds[Kind.PRE_PREPARE]
    assert pp.digest == block.block_hash and pp.payload == block.payload
    assert pp.signer == c.address(0)  # primary of view 0
    assert all(m.payload == b"" and m.digest == block.block_hash for m in kinds[Kind.PREPARE])
    assert all(m.payload == b"" and m.digest == block.block_hash for m in kinds[Kind.COMMIT])
    assert c.address(0) not in {m.signer for m in kinds[Kind.PREPARE]}  # primary does not prepare


def test_status_reports_pbft_with_zero_finality_lag() -> None:
    c = Cluster(4, PbftConfig(chain_id=CHAIN_ID))
    c.stop_at = 2
    c.pump()
    st = c.engine(1).status()
    assert (st.engine, st.committed_height, st.height, st.finality_lag) == ("pbft", 2, 3, 0)
    assert st.proposer == c.address(0) and st.round == 0


def test_primary_refuses_a_block_its_validator_rejects() -> None:
    c = Cluster(4)
    c.auto_propose = False
    c.pump()
    ((i, h, _),) = c.pending_proposals
    with pytest.raises(InvalidInput):
        c.engine(i).propose(make_block(h, ZERO_HASH, b"invalid"))
    assert not c.engine(i).has_ready()


def test_backups_refuse_to_prepare_an_invalid_block() -> None:
    c = Cluster(4)
    c.stop_at = 0
    c.pump()
    bad = make_block(1, ZERO_HASH, b"invalid")
    for j in (1, 2, 3):
        c.engine(j).step(sign(c.signers[0], Kind.PRE_PREPARE, 1, 0, block_hash(bad), bad))
        assert c.engine(j).status().dropped == {"invalid": 1}
        assert not [o for o in c.engine(j).ready().messages if o.message.kind == Kind.PREPARE]


def test_validator_set_change_moves_quorums_and_primaries() -> None:
    c = Cluster(4)
    c.stop_at = 2
    c.pump()
    newcomer = Signer(keccak(b"newcomer"))
    members = (c.address(1), c.address(2), c.address(3), newcomer.address)
    nxt = ValidatorSet(1, members)
    for r in c.replicas:
        r.engine.set_validators(nxt, 3)
    e = c.engine(1)
    assert e.primary(0, 3) == c.address(1) and e.primary(0, 2) == c.address(0)
    assert e.status().epoch == 1
    blk = make_block(3, c.replicas[1].chain[1].block_hash, b"old")
    e.step(sign(c.signers[0], Kind.PRE_PREPARE, 3, 0, block_hash(blk), blk))
    assert e.status().dropped == {"not_validator": 1}  # replica 0 left at height 3


def test_votes_for_views_far_ahead_are_dropped() -> None:
    c = Cluster(4)
    c.stop_at = 0
    c.pump()
    e = c.engine(1)
    e.step(sign(c.signers[2], Kind.PREPARE, 1, 10_000, block_hash(b"x")))
    assert e.status().dropped == {"out_of_window": 1} and e.log.heights() == []
