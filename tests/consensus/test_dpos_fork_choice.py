"""DPoS fork choice: deterministic, POL first, longest chain, earliest slot, lowest hash;
final blocks never revert."""

from __future__ import annotations

from itertools import permutations

from node.consensus.dpos_tree import BlockTree
from node.consensus.messages import Kind, SignedMessage
from node.consensus.types import ZERO_HASH, Hash32
from tests.consensus.dpos_harness import Net, block_hash, block_msg, make_block, signers, validate

KEYS = signers(4)


def _chain_of(blocks: list[tuple[int, int, bytes, bytes]]) -> dict[str, SignedMessage]:
    """Named BLOCK messages from ``(height, slot, parent name or b'', name)``."""
    msgs: dict[str, SignedMessage] = {}
    for height, slot, parent, name in blocks:
        parent_hash = msgs[parent.decode()].digest if parent else ZERO_HASH
        payload = make_block(height, parent_hash, name)
        msgs[name.decode()] = block_msg(KEYS[slot % 4], height, slot, payload)
    return msgs


FORKS = _chain_of(
    [
        (1, 0, b"", b"a1"),
        (1, 1, b"", b"b1"),
        (2, 2, b"a1", b"a2"),
        (2, 3, b"b1", b"b2"),
        (3, 5, b"a2", b"a3"),
    ]
)


def _best(msgs: list[SignedMessage], pol: dict[bytes, int] | None = None) -> list[Hash32]:
    tree = BlockTree(ZERO_HASH, 0)
    for m in msgs:
        tree.offer(m)
        tree.settle(validate)
    rounds = pol or {}
    return [n.hash for n in tree.best_chain(lambda h: rounds.get(h, -1))]


def test_fork_choice_is_deterministic_whatever_the_arrival_order() -> None:
    expected = [FORKS[n].digest for n in ("a1", "a2", "a3")]
    for order in permutations(FORKS.values()):
        assert _best(list(order)) == expected


def test_fork_choice_prefers_a_pol_over_a_longer_chain() -> None:
    best = _best(list(FORKS.values()), pol={FORKS["b1"].digest: 0})
    assert best == [FORKS["b1"].digest, FORKS["b2"].digest]


def test_fork_choice_breaks_length_ties_by_earliest_slot_then_lowest_hash() -> None:
    early_late = _chain_of([(1, 0, b"", b"x"), (1, 1, b"", b"y")])
    assert _best(list(early_late.values())) == [early_late["x"].digest]
    # one producer, one slot, two blocks (an equivocation): the lower hash wins
    twins = [block_msg(KEYS[0], 1, 0, make_block(1, ZERO_HASH, tag)) for tag in (b"p", b"q")]
    assert _best(twins) == [min(m.digest for m in twins)]


def test_block_linkage_rejects_slots_that_do_not_increase() -> None:
    tree = BlockTree(ZERO_HASH, 0)
    parent = block_msg(KEYS[1], 1, 5, make_block(1, ZERO_HASH, b"p"))
    child = block_msg(KEYS[0], 2, 4, make_block(2, parent.digest, b"c"))  # slot 4 < 5
    tree.offer(parent)
    tree.offer(child)
    attached, rejected = tree.settle(validate)
    assert [n.hash for n in attached] == [parent.digest] and rejected == 1


def test_equivocating_producer_is_resolved_and_final_blocks_never_revert() -> None:
    net = Net(4)
    net.down.add(0)  # delegate 0 owns slot 0; instead of its block, two twins go out
    net.queue.clear()
    block_a = make_block(1, ZERO_HASH, b"A")
    block_b = make_block(1, ZERO_HASH, b"B")
    net.inject(2, 1, block_msg(KEYS[0], 1, 0, block_a))
    for dst in (2, 3):
        net.inject(1, dst, block_msg(KEYS[0], 1, 0, block_b))
    net.run(120)
    honest = net.delegates[1:]
    net.assert_agreement()
    assert min(len(d.chain) for d in honest) >= 3
    first = {d.chain[0].block_hash for d in honest}
    assert first <= {block_hash(block_a), block_hash(block_b)} and len(first) == 1
    # the losing twin arriving again changes nothing: final blocks never revert
    loser = block_a if first == {block_hash(block_b)} else block_b
    before = [list(d.chain) for d in honest]
    for d in honest:
        d.engine.step(block_msg(KEYS[0], 1, 0, loser))
    net.drain()
    assert [d.chain[: len(b)] for d, b in zip(honest, before, strict=True)] == before
    confirmed = {m.digest for d in honest for m in d.sent if m.kind == Kind.CONFIRM and m.round % 2}
    assert block_hash(loser) not in confirmed  # nobody ever confirmed the losing twin
    assert any(e.validator == KEYS[0].address for d in honest for e in d.evidence)
