"""DPoS committees: a new committee takes effect at the epoch boundary after the block that
determined it, and only once that block is final and applied."""

from __future__ import annotations

import pytest

from node.consensus.dpos import DposConfig
from node.consensus.dpos_schedule import Committees
from node.consensus.engine import CommittedBlock
from node.consensus.messages import Kind, SignedMessage
from node.consensus.types import ValidatorSet
from tests.consensus.dpos_harness import CHAIN_ID, Net, signers

KEYS = signers(4)
FIRST = ValidatorSet(0, tuple(k.address for k in KEYS))
SECOND = ValidatorSet(2, tuple(reversed(FIRST.members)))  # same delegates, new schedule


def test_committee_is_fixed_only_once_its_boundary_block_is_applied() -> None:
    c = Committees(4, FIRST, next_height=1)
    c.offer(SECOND, 8)  # read from block 4 (offered early: nothing happens yet)
    c.resolve(applied_height=3)
    assert c.at(7) == FIRST and c.at(8) is None
    c.resolve(applied_height=4)
    assert c.at(8) == SECOND and c.at(11) == SECOND and c.at(12) is None


def test_committee_carries_over_when_none_was_offered() -> None:
    c = Committees(4, FIRST, next_height=1)
    c.resolve(applied_height=4)
    assert c.at(4) == FIRST and c.at(8) == FIRST


def test_set_validators_rejects_non_boundaries_and_rewriting_a_fixed_committee() -> None:
    c = Committees(4, FIRST, next_height=1)
    with pytest.raises(ValueError, match="epoch boundary"):
        c.offer(SECOND, 6)
    c.resolve(applied_height=0)  # epoch 1 fixed (carried over) when genesis was applied
    with pytest.raises(ValueError, match="already fixed"):
        c.offer(SECOND, 4)
    c.offer(FIRST, 4)  # the same committee again is harmless


def test_committee_switch_waits_until_the_determining_block_is_final() -> None:
    net = Net(4, DposConfig(chain_id=CHAIN_ID, epoch_length=4))

    def host_reads_election(i: int, blk: CommittedBlock) -> None:
        if blk.height == 4:  # the boundary block of epoch 1 determines epoch 2
            net.engine(i).set_validators(SECOND, 8)

    net.on_commit = host_reads_election
    hold_block_4 = True
    net.intercept = lambda _s, _d, m: (
        not (hold_block_4 and m.kind == Kind.CONFIRM and m.height == 4)
    )
    net.run(120)
    sent: list[SignedMessage] = [m for d in net.delegates for m in d.sent if m.kind == Kind.BLOCK]
    assert max(net.heights()) == 3  # block 4 cannot become final
    assert max(m.height for m in sent) == 7  # nothing beyond the epoch: no schedule for it
    hold_block_4 = False
    net.run(160)
    assert min(net.heights()) >= 10
    net.assert_agreement()
    produced = {m.digest: m for d in net.delegates for m in d.sent if m.kind == Kind.BLOCK}
    for blk in net.delegates[0].chain:
        msg = produced[blk.block_hash]
        committee = SECOND if blk.height >= 8 else FIRST
        assert msg.signer == committee.member_at(msg.round), blk.height
        blk.certificate.verify(CHAIN_ID, committee)
