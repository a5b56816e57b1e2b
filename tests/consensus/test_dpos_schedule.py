"""DPoS producer schedule and slot clock: round-robin, skipped slots, slot window."""

from __future__ import annotations

from node.consensus.dpos import DposConfig, DposEngine
from node.consensus.dpos_schedule import SlotClock
from node.consensus.messages import Kind
from node.consensus.types import ZERO_HASH, ValidatorSet
from tests.consensus.dpos_harness import CHAIN_ID, Net, block_msg, make_block, signers, validate


def test_producer_schedule_is_round_robin_over_the_committee() -> None:
    net = Net(4)
    net.run(80)
    blocks = sorted(
        (m.round, m.signer) for d in net.delegates for m in d.sent if m.kind == Kind.BLOCK
    )
    assert len(blocks) >= 8
    for slot, producer in blocks:
        assert producer == net.vset.member_at(slot)
    # every committed block was produced by the member owning its slot, in slot order
    slot_of = {m.digest: m.round for d in net.delegates for m in d.sent if m.kind == Kind.BLOCK}
    slots = [slot_of[b.block_hash] for b in net.delegates[0].chain]
    assert len(slots) >= 7
    assert slots == sorted(slots) and len(set(slots)) == len(slots)
    net.assert_agreement()


def test_status_names_the_producer_of_the_current_slot() -> None:
    net = Net(4)
    net.run(25)
    st = net.engine(0).status()
    assert st.engine == "dpos"
    assert st.proposer == net.vset.member_at(st.round)


def test_missed_slot_is_skipped_by_the_next_producer() -> None:
    net = Net(4)
    net.down.add(1)  # the producer of slots 1, 5, 9, ... is silent
    net.run(40)
    chain = net.delegates[0].chain
    produced = {m.digest: m for d in net.delegates for m in d.sent if m.kind == Kind.BLOCK}
    slots = [produced[b.block_hash].round for b in chain]
    assert 1 not in slots and 2 in slots
    block_at_slot2 = next(b for b in chain if produced[b.block_hash].round == 2)
    block_at_slot0 = next(b for b in chain if produced[b.block_hash].round == 0)
    assert block_at_slot2.height == block_at_slot0.height + 1  # built on slot 0's block
    assert net.engine(0).status().round_changes >= 1  # skipped slots are counted


def test_block_from_a_delegate_that_does_not_own_the_slot_is_invalid() -> None:
    keys = signers(4)
    vset = ValidatorSet(0, tuple(s.address for s in keys))
    engine = DposEngine(DposConfig(chain_id=CHAIN_ID), keys[0], vset, validate)
    engine.step(block_msg(keys[2], 1, 1, make_block(1, ZERO_HASH, b"usurper")))  # slot 1: k1
    assert engine.status().dropped == {"invalid": 1}
    assert engine.status().finality_lag == 0


def test_block_too_far_ahead_of_the_local_slot_is_out_of_window() -> None:
    keys = signers(4)
    vset = ValidatorSet(0, tuple(s.address for s in keys))
    config = DposConfig(chain_id=CHAIN_ID, slot_window=2)
    engine = DposEngine(config, keys[0], vset, validate)
    engine.step(block_msg(keys[3], 1, 7, make_block(1, ZERO_HASH, b"early")))
    assert engine.status().dropped == {"out_of_window": 1}
    engine.step(block_msg(keys[2], 1, 2, make_block(1, ZERO_HASH, b"in-window")))
    assert engine.status().finality_lag == 1


def test_slot_clock_follows_f_plus_one_announcements_forward_only() -> None:
    keys = signers(4)
    vset = ValidatorSet(0, tuple(s.address for s in keys))
    clock = SlotClock(10, slot=5)
    clock.announce(keys[1].address, 40)  # one delegate (maybe Byzantine) alone: ignored
    assert not clock.follow(vset, keys[0].address) and clock.slot == 5
    clock.announce(keys[2].address, 30)  # f+1 = 2 announce >= 30: one is honest
    assert clock.follow(vset, keys[0].address) and clock.slot == 30
    clock.announce(keys[3].address, 3)
    clock.follow(vset, keys[0].address)
    assert clock.slot == 30  # never backward


def test_slot_clock_more_than_a_slot_ahead_of_the_committee_runs_at_half_speed() -> None:
    keys = signers(4)
    vset = ValidatorSet(0, tuple(s.address for s in keys))
    clock = SlotClock(10, slot=0)
    for k in keys[1:]:
        clock.announce(k.address, 0)
    clock.follow(vset, keys[0].address)
    ended = sum(clock.tick() for _ in range(60))
    assert ended == 2 + 2  # two slots at full speed, then 20 ticks per slot
    assert clock.slot == 4


def test_a_producer_chains_at_most_blocks_per_slot_blocks_in_its_slot() -> None:
    net = Net(4, DposConfig(chain_id=CHAIN_ID, blocks_per_slot=2))
    net.run(40)
    per_slot: dict[int, list[int]] = {}
    for m in (m for d in net.delegates for m in d.sent if m.kind == Kind.BLOCK):
        assert m.signer == net.vset.member_at(m.round)
        per_slot.setdefault(m.round, []).append(m.height)
    assert len(per_slot) >= 4 and all(len(hs) == 2 for hs in per_slot.values())
    net.assert_agreement()
    assert min(net.heights()) >= 7
