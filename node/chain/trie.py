"""Merkle-Patricia tries built and updated in one pass.

py-evm's ``HexaryTrie`` applies writes one key at a time: every insert decodes the path
from the root, re-encodes and re-hashes every node on it, and prunes the old ones. A
block that writes 1,300 storage slots of one contract thus encodes ~7,000 nodes to keep
~1,700. Here the same writes are applied together: each touched node is loaded once
and each new node encoded once — the approach of ``ethereum/execution-specs``
``patricialize``, extended from building a trie to updating a stored one.

Nodes follow the Yellow Paper (appendix D) exactly as the ``trie`` package stores them:
leaf ``[hp(path, leaf), value]``, extension ``[hp(path), child]``, branch
``[child x 16, value]``; a child is embedded when its RLP is shorter than 32 bytes and
referenced by keccak otherwise; the root is always stored under its hash. Tests pin
every result to ``HexaryTrie``.

Paths are ``bytes`` of nibbles (one nibble, 0-15, per byte).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import rlp
from eth_hash.auto import keccak

from node.chain.types import EMPTY_ROOT, Hash32

__all__ = ["NodeReader", "trie_root", "update_trie"]

#: Reads a stored node's RLP by its hash; raises KeyError when absent.
NodeReader = Callable[[bytes], bytes]

_LEAF: Final = 0
_EXT: Final = 1
_BRANCH: Final = 2

# In-memory nodes: (_LEAF, path, value) | (_EXT, path, child) | (_BRANCH, children, value).
# A child is a *reference* as stored in the parent (b"" for none, a 32-byte hash, or an
# embedded node as a decoded RLP list) or an in-memory node (a tuple) built here.
_Node = tuple[int, Any, Any]
_Ref = Any


def trie_root(items: Sequence[bytes]) -> Hash32:
    """Root of the Ethereum list trie ``{rlp(index): item}`` (transactions, receipts)."""
    if not items:
        return EMPTY_ROOT
    keyed = {nibbles(rlp.encode(i)): item for i, item in enumerate(items)}
    nodes: dict[bytes, bytes] = {}
    return _store_root(_build(keyed), nodes)


def update_trie(
    root: bytes, updates: Mapping[bytes, bytes], read: NodeReader
) -> tuple[Hash32, dict[bytes, bytes]]:
    """Apply ``updates`` (key -> value; an empty value deletes) to the trie at ``root``.

    Returns the new root and the nodes to store for it (the new nodes only; unchanged
    subtrees are referenced, not copied). ``read`` loads existing nodes.
    """
    changes = {nibbles(key): value for key, value in updates.items()}
    node = _load(root, read) if root != EMPTY_ROOT else None
    new_nodes: dict[bytes, bytes] = {}
    new_root = _update(node, changes, read)
    if new_root is None:
        return EMPTY_ROOT, new_nodes
    return _store_root(new_root, new_nodes), new_nodes


def nibbles(key: bytes) -> bytes:
    """``key`` as nibbles, high nibble first."""
    return bytes(n for byte in key for n in (byte >> 4, byte & 0x0F))


# ---------------------------------------------------------------- building


def _build(kv: dict[bytes, bytes]) -> _Node | None:
    """A (sub)trie holding exactly ``kv`` (paths relative to this node)."""
    if not kv:
        return None
    first = next(iter(kv))
    if len(kv) == 1:
        return (_LEAF, first, kv[first])
    prefix = len(first)
    for key in kv:
        limit = min(prefix, len(key))
        common = 0
        while common < limit and key[common] == first[common]:
            common += 1
        prefix = common
        if prefix == 0:
            break
    if prefix > 0:
        child = _build({key[prefix:]: value for key, value in kv.items()})
        return (_EXT, first[:prefix], child)
    groups: list[dict[bytes, bytes]] = [{} for _ in range(16)]
    value = b""
    for key, item in kv.items():
        if key:
            groups[key[0]][key[1:]] = item
        else:
            value = item
    return (_BRANCH, [_build(g) or b"" for g in groups], value)


# ---------------------------------------------------------------- updating


def _update(node: _Node | None, changes: dict[bytes, bytes], read: NodeReader) -> _Node | None:
    if not changes:
        return node
    if node is None:
        return _build({k: v for k, v in changes.items() if v})
    kind, path, payload = node
    if kind == _LEAF:
        kv = {path: payload}
        for key, value in changes.items():
            if value:
                kv[key] = value
            else:
                kv.pop(key, None)
        return _build(kv)
    if kind == _EXT:
        size = len(path)
        if all(len(key) >= size and key[:size] == path for key in changes):
            child = _update(_load(payload, read), {k[size:]: v for k, v in changes.items()}, read)
            return _prefixed(path, child, read)
        # Some key leaves the shared segment: the extension becomes a branch first.
        children: list[_Ref] = [b""] * 16
        children[path[0]] = payload if size == 1 else (_EXT, path[1:], payload)
        return _update((_BRANCH, children, b""), changes, read)
    children = list(path)
    value = payload
    groups: dict[int, dict[bytes, bytes]] = {}
    for key, item in changes.items():
        if key:
            groups.setdefault(key[0], {})[key[1:]] = item
        else:
            value = item
    for index, group in groups.items():
        children[index] = _update(_load(children[index], read), group, read) or b""
    return _branch(children, value, read)


def _branch(children: list[_Ref], value: bytes, read: NodeReader) -> _Node | None:
    """A branch, or the smaller node it collapses to when one entry is left."""
    live = [i for i, child in enumerate(children) if child != b""]
    if not live:
        return (_LEAF, b"", value) if value else None
    if len(live) == 1 and not value:
        index = live[0]
        return _prefixed(bytes([index]), _load(children[index], read), read)
    return (_BRANCH, children, value)


def _prefixed(path: bytes, node: _Node | None, read: NodeReader) -> _Node | None:
    """``node`` moved down under ``path`` (merging paths: no extension above a leaf or
    another extension)."""
    if node is None:
        return None
    kind, rest, payload = node
    if kind == _LEAF:
        return (_LEAF, path + rest, payload)
    if kind == _EXT:
        return (_EXT, path + rest, payload)
    return (_EXT, path, node)


def _load(ref: _Ref, read: NodeReader) -> _Node | None:
    """The in-memory node a reference points to."""
    if isinstance(ref, tuple):
        return ref
    if isinstance(ref, list):
        return _from_rlp(ref)
    if ref == b"":
        return None
    return _from_rlp(rlp.decode(read(ref)))


def _from_rlp(item: list[Any]) -> _Node:
    if len(item) == 17:
        return (_BRANCH, item[:16], item[16])
    encoded_path, payload = item
    flag = encoded_path[0] >> 4
    path = nibbles(encoded_path)[2 - (flag & 1) :]
    return (_LEAF if flag & 2 else _EXT, path, payload)


# ---------------------------------------------------------------- encoding


def _store_root(node: _Node | None, out: dict[bytes, bytes]) -> Hash32:
    if node is None:
        return EMPTY_ROOT
    encoded = rlp.encode(_raw(node, out))
    root = keccak(encoded)
    out[root] = encoded  # the root is stored even when short (as HexaryTrie does)
    return Hash32(root)


def _ref(node: _Ref, out: dict[bytes, bytes]) -> _Ref:
    """How a parent refers to ``node``: unchanged references pass through; new nodes
    are embedded when short, else stored in ``out`` and referenced by hash."""
    if not isinstance(node, tuple):
        return node
    raw = _raw(node, out)
    encoded = rlp.encode(raw)
    if len(encoded) < 32:
        return raw
    digest = keccak(encoded)
    out[digest] = encoded
    return digest


def _raw(node: _Node, out: dict[bytes, bytes]) -> list[Any]:
    kind, first, second = node
    if kind == _LEAF:
        return [_hex_prefix(first, True), second]
    if kind == _EXT:
        return [_hex_prefix(first, False), _ref(second, out)]
    return [*(_ref(child, out) for child in first), second]


def _hex_prefix(path: bytes, leaf: bool) -> bytes:
    """Hex-prefix encoding of a nibble path (Yellow Paper appendix C)."""
    flag = 2 if leaf else 0
    if len(path) % 2:
        head = bytes([16 * (flag + 1) + path[0]])
        path = path[1:]
    else:
        head = bytes([16 * flag])
    return head + bytes(16 * path[i] + path[i + 1] for i in range(0, len(path), 2))
