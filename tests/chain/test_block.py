"""Headers, blocks and list-trie roots: canonical encoding and hashing."""

from __future__ import annotations

import pytest
import rlp

from node.chain.block import EMPTY_BLOOM, EMPTY_TRIE_ROOT, Block, Header, trie_root
from node.chain.types import EMPTY_ROOT, Address, Hash32
from node.errors import InvalidBlock, InvalidInput


def make_header(**changes: object) -> Header:
    header = Header(
        chain_id=7311,
        parent_hash=Hash32(b"\x01" * 32),
        height=5,
        timestamp=1_700_000_000,
        proposer=Address(b"\x02" * 20),
        epoch=1,
        validator_set_hash=Hash32(b"\x03" * 32),
        state_root=Hash32(b"\x04" * 32),
        transactions_root=EMPTY_ROOT,
        receipts_root=EMPTY_ROOT,
        logs_bloom=EMPTY_BLOOM,
        gas_used=0,
        gas_limit=30_000_000,
    )
    return header.replace(**changes) if changes else header


def test_header_roundtrips_through_rlp() -> None:
    header = make_header()
    assert Header.decode(header.encode()) == header
    assert Header.decode(header.encode()).hash() == header.hash()


def test_every_header_field_changes_the_block_hash() -> None:
    base = make_header()
    changed = [
        base.replace(chain_id=1),
        base.replace(parent_hash=Hash32(b"\x09" * 32)),
        base.replace(height=6),
        base.replace(timestamp=1),
        base.replace(proposer=Address(b"\x09" * 20)),
        base.replace(epoch=2),
        base.replace(validator_set_hash=Hash32(b"\x09" * 32)),
        base.replace(state_root=Hash32(b"\x09" * 32)),
        base.replace(transactions_root=Hash32(b"\x09" * 32)),
        base.replace(receipts_root=Hash32(b"\x09" * 32)),
        base.replace(logs_bloom=b"\x01" + EMPTY_BLOOM[1:]),
        base.replace(gas_used=1),
        base.replace(gas_limit=1),
    ]
    hashes = {h.hash() for h in changed}
    assert len(hashes) == len(changed) and base.hash() not in hashes


def test_block_hash_excludes_the_seal() -> None:
    block = Block(make_header(), (b"\x02tx",))
    sealed = block.with_seal(b"certificate")
    assert sealed.hash() == block.hash()
    assert Block.decode(sealed.encode()) == sealed
    assert Block.decode(sealed.encode()).seal == b"certificate"


def test_malformed_header_and_block_bytes_raise_invalid_block() -> None:
    encoded = make_header().encode()
    for bad in (b"", b"\x80", encoded[:-1], encoded + b"\x00", rlp.encode([1, 2, 3])):
        with pytest.raises(InvalidBlock, match="malformed header"):
            Header.decode(bad)
    with pytest.raises(InvalidBlock, match="malformed block"):
        Block.decode(b"\xc3\x01\x02\x03")


def test_header_rejects_wrong_field_types() -> None:
    with pytest.raises(InvalidInput, match=r"header\.proposer"):
        make_header(proposer="0x" + "00" * 20)
    with pytest.raises(InvalidInput, match=r"header\.height"):
        make_header(height=-1)


def test_empty_list_trie_root_is_the_empty_trie() -> None:
    assert trie_root([]) == EMPTY_TRIE_ROOT == EMPTY_ROOT
