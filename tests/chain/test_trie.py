"""One-pass trie building and updating give exactly HexaryTrie's roots and nodes."""

from __future__ import annotations

import rlp
from hypothesis import given, settings
from hypothesis import strategies as st
from trie.hexary import HexaryTrie

from node.chain.trie import trie_root, update_trie
from node.chain.types import EMPTY_ROOT

# Short keys make prefixes of each other (branch values, extensions, splits); 32-byte
# keys are what storage and state tries hold.
keys = st.one_of(st.binary(max_size=3), st.binary(min_size=32, max_size=32))
values = st.binary(min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=80), max_size=300))
def test_list_trie_root_equals_hexary_trie(items: list[bytes]) -> None:
    reference = HexaryTrie({})
    for index, item in enumerate(items):
        reference[rlp.encode(index)] = item
    assert trie_root(items) == reference.root_hash


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(keys, values, max_size=40),
    st.dictionaries(keys, st.one_of(st.just(b""), values), max_size=40),
    st.data(),
)
def test_batched_update_equals_key_by_key_hexary_trie(
    initial: dict[bytes, bytes], updates: dict[bytes, bytes], data: st.DataObject
) -> None:
    # Deleting keys that exist matters most: pick some from the initial trie.
    if initial:
        doomed = data.draw(st.lists(st.sampled_from(sorted(initial)), max_size=10))
        updates.update({key: b"" for key in doomed})
    db: dict[bytes, bytes] = {}
    reference = HexaryTrie(db, prune=False)
    for key, value in initial.items():
        reference[key] = value
    start = reference.root_hash
    stored = dict(db)

    new_root, new_nodes = update_trie(start, updates, stored.__getitem__)

    for key, value in updates.items():
        reference[key] = value
    assert new_root == reference.root_hash
    # The new nodes plus the old ones hold the whole new trie.
    merged = {**stored, **new_nodes}
    expected = {**initial, **updates}
    check = HexaryTrie(merged, new_root)
    for key, value in expected.items():
        assert check[key] == value
    # Nothing but nodes of the new trie is written.
    assert set(new_nodes) <= reachable(merged, new_root)


def reachable(db: dict[bytes, bytes], root: bytes) -> set[bytes]:
    """Hashes of every stored node of the trie at ``root``."""
    seen: set[bytes] = set()
    stack: list[object] = [root]
    while stack:
        ref = stack.pop()
        if isinstance(ref, bytes) and len(ref) == 32 and ref in db and ref not in seen:
            seen.add(ref)
            stack.append(rlp.decode(db[ref]))
        elif isinstance(ref, list):
            # a node: a branch's children, or a leaf/extension's [path, child]
            stack.extend(ref[:16] if len(ref) == 17 else ref[1:])
    return seen


def test_deleting_everything_gives_the_empty_root() -> None:
    db: dict[bytes, bytes] = {}
    reference = HexaryTrie(db)
    reference[b"\x01" * 32] = b"a"
    reference[b"\x02" * 32] = b"b"
    root, nodes = update_trie(
        reference.root_hash, {b"\x01" * 32: b"", b"\x02" * 32: b""}, db.__getitem__
    )
    assert root == EMPTY_ROOT and nodes == {}
    assert update_trie(EMPTY_ROOT, {}, db.__getitem__) == (EMPTY_ROOT, {})
