"""The chain store: lookups, eth_getLogs filter semantics, reopening, atomic commits."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from node.chain.block import Block
from node.chain.executor import Executor
from node.chain.genesis import build_genesis
from node.chain.receipt import BlockLog, Receipt
from node.chain.store import ChainStore, TopicFilter
from node.chain.types import MEMBERSHIP_ADDRESS, REGISTRY_ADDRESS, Address, Hash32
from node.errors import InvalidBlock, InvalidInput, StorageError
from tests.chain.helpers import (
    OUTSIDER,
    SENDERS,
    genesis_config,
    genesis_state,
    membership_call,
    produce,
    register_model,
    registry_call,
    sign,
    transfer,
)


def fill(executor: Executor, blocks: int = 4) -> None:
    """Blocks with registry and membership events from several senders."""
    for height in range(blocks):
        txs = []
        for i, sender in enumerate(SENDERS[:3]):
            nonce = 2 * height
            txs.append(register_model(sender, nonce, f"model{i}", f"{height}/{i}"))
            alias = registry_call("setAlias", f"model{i}", "prod", 3 * height + i + 1)
            txs.append(sign(sender, nonce + 1, REGISTRY_ADDRESS, alias))
        txs.append(transfer(OUTSIDER, height, SENDERS[0]))
        produce(executor, txs)


def test_lookups_agree_with_the_committed_blocks(executor: Executor) -> None:
    fill(executor, 2)
    store = executor.store
    block = store.block_by_height(2)
    assert block is not None and block.seal == b"seal"
    assert store.block_by_hash(block.hash()) == block
    assert store.height_of(block.hash()) == 2
    assert store.header_by_hash(block.hash()) == block.header
    receipts = store.receipts(2)
    for index, tx_hash in enumerate(block.tx_hashes):
        assert store.tx_location(tx_hash) == (2, index)
        assert store.raw_transaction(tx_hash) == block.transactions[index]
        record = store.receipt(tx_hash)
        assert record is not None and record.receipt == receipts[index]
        assert record.block_hash == block.hash() and record.block_height == 2
    last = store.receipt(block.tx_hashes[-1])
    assert last is not None and last.receipt.to == SENDERS[0].address
    first = store.receipt(block.tx_hashes[0])
    assert first is not None and [g.log_index for g in first.block_logs()] == [0]
    assert store.receipt(b"\x00" * 32) is None and store.tx_location(b"\x00" * 32) is None
    assert store.block_by_height(3) is None and store.block_by_hash(b"\x01" * 32) is None


def reference_filter(
    logs: list[BlockLog], address: list[bytes] | None, topics: list[TopicFilter]
) -> list[BlockLog]:
    """eth_getLogs semantics, written the obvious way."""
    out = []
    for entry in logs:
        log = entry.log
        if address and log.address not in address:
            continue
        ok = True
        for position, wanted in enumerate(topics):
            if wanted is None:
                continue
            options = [wanted] if isinstance(wanted, bytes) else list(wanted)
            if not options:
                continue
            if position >= len(log.topics) or log.topics[position] not in options:
                ok = False
                break
        if ok:
            out.append(entry)
    return out


def test_log_queries_follow_eth_getlogs_filter_semantics(executor: Executor) -> None:
    fill(executor, 4)
    store = executor.store
    everything = store.logs(0, 10)
    assert len(everything) == 4 * 6
    assert [(g.block_height, g.log_index) for g in everything] == sorted(
        (g.block_height, g.log_index) for g in everything
    )
    topics_seen = sorted({t for g in everything for t in g.log.topics})
    addresses = [REGISTRY_ADDRESS, MEMBERSHIP_ADDRESS, OUTSIDER.address]
    rng = random.Random(7)
    for _ in range(200):
        address = rng.choice([None, [], rng.sample(addresses, rng.randint(1, 2))])
        topics: list[TopicFilter] = []
        for _position in range(rng.randint(0, 4)):
            kind = rng.random()
            if kind < 0.4:
                topics.append(None)
            elif kind < 0.7:
                topics.append(rng.choice(topics_seen))
            else:
                topics.append(rng.sample(topics_seen, rng.randint(0, 3)))
        low = rng.randint(0, 4)
        high = rng.randint(low, 5)
        expected = reference_filter(
            [g for g in everything if low <= g.block_height <= high], address, topics
        )
        assert store.logs(low, high, address, topics) == expected


def test_a_single_address_or_topic_needs_no_list(executor: Executor) -> None:
    fill(executor, 1)
    store = executor.store
    registered = store.logs(1, 1, REGISTRY_ADDRESS)
    assert registered and all(g.log.address == REGISTRY_ADDRESS for g in registered)
    topic0 = registered[0].log.topics[0]
    assert store.logs(1, 1, topics=[topic0]) == [g for g in registered if g.log.topics[0] == topic0]


def test_log_queries_refuse_bad_ranges_and_oversized_results(executor: Executor) -> None:
    fill(executor, 2)
    with pytest.raises(InvalidInput, match="from block 3 is after 2"):
        executor.store.logs(3, 2)
    with pytest.raises(InvalidInput, match="more than 5 logs"):
        executor.store.logs(0, 2, limit=5)
    with pytest.raises(InvalidInput, match="at most 4 topic positions"):
        executor.store.logs(0, 2, topics=[None] * 5)


def test_reopening_restores_the_head_and_its_state(tmp_path: Path) -> None:
    path = tmp_path / "chain.db"
    with ChainStore.open(path, genesis_state()) as store:
        executor = Executor(store)
        fill(executor, 2)
        head = store.head()
        balance = executor.balance_of(SENDERS[0].address)
    with ChainStore.open(path, genesis_config()) as reopened:  # built from the config
        assert reopened.head() == head
        assert Executor(reopened).balance_of(SENDERS[0].address) == balance
        assert reopened.check_integrity() == 3


def test_a_store_refuses_another_networks_genesis(tmp_path: Path) -> None:
    path = tmp_path / "chain.db"
    ChainStore.open(path, genesis_state()).close()
    other = build_genesis(genesis_config(chain_id=99))
    with pytest.raises(StorageError, match="different genesis"):
        ChainStore.open(path, other)


def test_a_missing_head_state_root_is_detected_on_reopen(tmp_path: Path) -> None:
    path = tmp_path / "chain.db"
    with ChainStore.open(path, genesis_state()) as store:
        produce(Executor(store), [transfer(OUTSIDER, 0, SENDERS[0])])
        root = store.head().state_root
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM state WHERE key = ?", (root,))
    with pytest.raises(StorageError, match=r"head block 1 state root 0x[0-9a-f]+ is missing"):
        ChainStore.open(path, genesis_state())


def test_a_failed_commit_writes_nothing(executor: Executor) -> None:
    store = executor.store
    first = produce(executor, [transfer(OUTSIDER, 0, SENDERS[0])])
    # Block 2 repeats block 1's transaction: the executor would refuse it (nonce);
    # given straight to the store, the duplicate tx hash fails inside the SQLite
    # transaction, after the block row and before the state nodes were written.
    header = first.header.replace(parent_hash=first.header.hash(), height=2)
    block = Block(header, first.block.transactions)
    receipt = first.receipts[0]
    marker = {b"\x99" * 32: b"node written by the failed commit", header.state_root: b"x"}
    with pytest.raises(StorageError, match="cannot commit block 2"):
        store.commit(block, [receipt], marker)
    assert store.head() == first.header
    assert store.block_by_height(2) is None
    assert store.state_node(b"\x99" * 32) is None
    produce(executor, [transfer(OUTSIDER, 1, SENDERS[0])])  # and the store still works
    assert store.check_integrity() == 3


def test_commit_refuses_blocks_that_do_not_extend_the_head(executor: Executor) -> None:
    result = produce(executor, [], commit=False)
    skipping = result.block.header.replace(height=2)
    with pytest.raises(InvalidBlock, match="does not extend the head 0"):
        executor.store.commit(Block(skipping, ()), [], result.state_writes)
    foreign = Receipt(Hash32(b"\x01" * 32), 0, 2, Address(b"\x02" * 20), None, None, 1, 1, 1, 0, ())
    with pytest.raises(InvalidBlock, match="1 receipts for 0 transactions"):
        executor.store.commit(result.block, [foreign], result.state_writes)


def test_membership_events_are_indexed_too(executor: Executor) -> None:
    from tests.chain.helpers import ADMINS

    propose = membership_call("propose", 1, OUTSIDER.address, 4)  # GRANT_ROLE TWIN
    produce(executor, [sign(ADMINS[0], 0, MEMBERSHIP_ADDRESS, propose)])
    logs = executor.store.logs(1, 1, MEMBERSHIP_ADDRESS)
    assert logs and {g.log.address for g in logs} == {MEMBERSHIP_ADDRESS}
