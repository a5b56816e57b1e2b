"""Bad input end to end: a clear error naming the problem, no state change, nothing
half-written — in the mempool, the executor and the store alike."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from node.chain.block import Block, transactions_root
from node.chain.executor import ExecutionReverted, Executor
from node.chain.mempool import mempool_for
from node.chain.types import REGISTRY_ADDRESS
from node.errors import InvalidBlock, InvalidInput, InvalidTransaction
from tests.chain.helpers import (
    BUILD_ARGS,
    OUTSIDER,
    PUBLISHER,
    SENDERS,
    produce,
    register_model,
    registry_call,
    sign,
    transfer,
)


def fingerprint(executor: Executor) -> str:
    """Digest of every row of every table of the store, plus the pending results."""
    digest = hashlib.sha256()
    with sqlite3.connect(executor.store.path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in sorted(tables):
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1"):
                digest.update(repr(row).encode())
    digest.update(repr(sorted(executor._pending)).encode())
    return digest.hexdigest()


BAD_TRANSACTIONS: list[tuple[str, Callable[[], bytes], str]] = [
    ("malformed", lambda: b"\x02\xf8\x10junk", "malformed transaction"),
    ("wrong chain id", lambda: transfer(SENDERS[0], 0, OUTSIDER, chain_id=5), "wrong chain id 5"),
    ("unknown sender", lambda: transfer(OUTSIDER, 0, SENDERS[0]), "holds no role"),
    ("stale nonce", lambda: register_model(PUBLISHER, 0, "m", "again"), "nonce 0 too low"),
]


@pytest.mark.parametrize(
    ("case", "make", "reason"), BAD_TRANSACTIONS, ids=[c[0] for c in BAD_TRANSACTIONS]
)
def test_bad_transactions_are_refused_everywhere_without_side_effects(
    executor: Executor, case: str, make: Callable[[], bytes], reason: str
) -> None:
    produce(executor, [register_model(PUBLISHER, 0, "m", "v1")])
    pool = mempool_for(executor)
    before = fingerprint(executor)
    raw = make()

    with pytest.raises(InvalidTransaction, match=reason):
        pool.add(raw)
    assert len(pool) == 0

    # A proposer given it anyway leaves it out and says why (unless it is merely a tx
    # from an account without a role: roles are the contracts' business in blocks).
    head = executor.store.head()
    built = executor.build_block(head, [raw], timestamp=head.timestamp + 1, **BUILD_ARGS)
    if case != "unknown sender":
        assert built.block.transactions == () and len(built.rejected) == 1
    executor.forget(built.block.hash())

    # A received block carrying it is invalid; nothing of it is kept.
    if case != "unknown sender":
        forged = Block(
            head.replace(
                parent_hash=head.hash(),
                height=head.height + 1,
                transactions_root=transactions_root([raw]),
            ),
            (raw,),
        )
        with pytest.raises(InvalidBlock, match=r"block 2: transaction 0 \(0x[0-9a-f]{64}\)"):
            executor.validate_block(forged)
    assert fingerprint(executor) == before


def test_reverted_calls_raise_with_the_reason_and_change_nothing(executor: Executor) -> None:
    produce(executor, [register_model(PUBLISHER, 0, "m", "v1")])
    before = fingerprint(executor)
    duplicate = registry_call("registerModel", "m", b"\x01" * 32, 1, "onnx", [], [], b"\x00" * 32)
    with pytest.raises(ExecutionReverted, match="not a PUBLISHER"):
        executor.call(REGISTRY_ADDRESS, duplicate, OUTSIDER.address)
    with pytest.raises(ExecutionReverted, match="execution reverted: unknown version"):
        executor.call(REGISTRY_ADDRESS, registry_call("getVersion", 99), OUTSIDER.address)
    with pytest.raises(ExecutionReverted, match="not a PUBLISHER"):
        executor.estimate_gas(REGISTRY_ADDRESS, duplicate, OUTSIDER.address)
    with pytest.raises(InvalidInput, match="call is not executable"):
        executor.estimate_gas(REGISTRY_ADDRESS, b"", OUTSIDER.address, value=10**30)
    assert fingerprint(executor) == before
    assert executor.nonce_of(OUTSIDER.address) == 0


def test_a_reverting_transaction_commits_only_its_nonce_and_fee(executor: Executor) -> None:
    before_versions = executor.call(REGISTRY_ADDRESS, registry_call("versionCount"))
    tx = sign(
        OUTSIDER,
        0,
        REGISTRY_ADDRESS,
        registry_call("registerModel", "m", b"\x01" * 32, 1, "onnx", [], [], bytes(32)),
    )
    result = produce(executor, [tx])
    assert result.receipts[0].status == 0 and result.receipts[0].logs == ()
    assert executor.call(REGISTRY_ADDRESS, registry_call("versionCount")) == before_versions
    assert executor.nonce_of(OUTSIDER.address) == 1


def test_unknown_lookups_are_empty_not_errors(executor: Executor) -> None:
    store = executor.store
    missing: Any = b"\x42" * 32
    assert store.block_by_hash(missing) is None and store.header_by_hash(missing) is None
    assert store.receipt(missing) is None and store.raw_transaction(missing) is None
    assert store.tx_location(missing) is None and store.height_of(missing) is None
    assert store.block_by_height(10**6) is None and store.receipts(10**6) == []
    assert executor.pending(missing) is None
