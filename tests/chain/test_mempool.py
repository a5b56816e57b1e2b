"""Mempool admission (every rejection reason, nothing changed on rejection), block
ordering, and eviction after a commit; fuzzed input is always InvalidTransaction."""

from __future__ import annotations

from typing import Any

import pytest
import rlp
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.chain.block import Block
from node.chain.executor import Executor
from node.chain.mempool import Mempool, MempoolLimits, mempool_for
from node.chain.types import Address, Role
from node.errors import InvalidTransaction
from tests.chain.helpers import (
    CHAIN_ID,
    GAS_LIMIT,
    OUTSIDER,
    PUBLISHER,
    SENDERS,
    TWIN,
    produce,
    register_model,
    sign,
    transfer,
)
from tests.chain.test_block import make_header

A, B, C = SENDERS[0], SENDERS[1], SENDERS[2]


class Accounts:
    """Stand-in account state: nonces, roles and balances set by each test."""

    def __init__(self) -> None:
        self.nonces: dict[Address, int] = {}
        self.roles: dict[Address, int] = {
            k.address: int(Role.PUBLISHER) for k in (*SENDERS, PUBLISHER)
        }
        self.balances: dict[Address, int] = {k.address: 5 for k in (*SENDERS, PUBLISHER)}

    def pool(self, **limits: Any) -> Mempool:
        return Mempool(
            chain_id=CHAIN_ID,
            block_gas_limit=GAS_LIMIT,
            nonce_of=lambda a: self.nonces.get(a, 0),
            roles_of=lambda a: self.roles.get(a, 0),
            balance_of=lambda a: self.balances.get(a, 0),
            limits=MempoolLimits(**limits),
        )


def snapshot(pool: Mempool) -> tuple[Any, ...]:
    return (len(pool), dict(pool._by_hash), {s: dict(n) for s, n in pool._by_sender.items()})


def test_a_valid_transaction_is_admitted_and_resubmitting_it_is_harmless() -> None:
    pool = Accounts().pool()
    raw = transfer(A, 0, OUTSIDER, 0)
    tx_hash = pool.add(raw)
    assert tx_hash in pool and len(pool) == 1
    assert pool.add(raw) == tx_hash and len(pool) == 1
    admitted = pool.get(tx_hash)
    assert admitted is not None and admitted.sender == A.address and admitted.raw == raw
    assert pool.pending_nonce(A.address) == 1


def high_s(raw: bytes) -> bytes:
    """The same transaction with the malleable (high) s: EIP-2 forbids it."""
    fields = rlp.decode(raw[1:])
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = int.from_bytes(fields[-1], "big")
    fields[-1] = (n - s).to_bytes(32, "big")
    fields[-3] = b"" if fields[-3] == b"\x01" else b"\x01"
    return raw[:1] + rlp.encode(fields)


def legacy_without_chain_id() -> bytes:
    """A pre-EIP-155 legacy transaction (v = 27/28: valid on every chain)."""
    tx = {"nonce": 0, "gas": 21_000, "gasPrice": 0, "to": OUTSIDER.checksum, "value": 0}
    return bytes(Account.sign_transaction(tx, A.private).raw_transaction)


def zero_nonce_as_empty_list(raw: bytes) -> bytes:
    """The same signed transaction with nonce 0 written as an empty RLP list: pyrlp
    reads it back as 0, so only a canonical-encoding check tells them apart."""
    fields = rlp.decode(raw[1:])
    assert fields[1] == b""
    fields[1] = []
    return raw[:1] + rlp.encode(fields)


REJECTIONS: list[tuple[str, Any, str]] = [
    ("empty", lambda: b"", "empty transaction"),
    ("garbage", lambda: b"\xf8\xff\x00", "malformed transaction"),
    ("trailing bytes", lambda: transfer(A, 0, OUTSIDER) + b"\x00", "malformed transaction"),
    ("blob type", lambda: b"\x03" + transfer(A, 0, OUTSIDER)[1:], "unsupported transaction type 3"),
    ("set-code type", lambda: b"\x04\xc0", "unsupported transaction type 4"),
    (
        "re-wrapped nonce",
        lambda: zero_nonce_as_empty_list(transfer(A, 0, OUTSIDER)),
        "non-canonical transaction encoding",
    ),
    ("wrong chain", lambda: transfer(A, 0, OUTSIDER, chain_id=1), "wrong chain id 1"),
    ("no chain id", legacy_without_chain_id, "not replay-protected"),
    ("high s", lambda: high_s(transfer(A, 0, OUTSIDER)), "EIP-2 low s"),
    ("below intrinsic", lambda: transfer(A, 0, OUTSIDER, gas=20_999), "below the intrinsic"),
    (
        "calldata floor",
        lambda: sign(A, 0, OUTSIDER.address, b"\x01" * 1000, gas=40_000),
        "below the intrinsic cost 61000",
    ),
    (
        "over block gas",
        lambda: transfer(A, 0, OUTSIDER, gas=GAS_LIMIT + 1),
        "exceeds the block gas limit",
    ),
    ("no role", lambda: transfer(OUTSIDER, 0, A), "holds no role"),
    ("nonce too low", lambda: transfer(C, 2, OUTSIDER), "nonce 2 too low: .* at nonce 3"),
    ("nonce too far", lambda: transfer(A, 65, OUTSIDER), "nonce 65 too far ahead"),
    ("nonce taken", lambda: transfer(B, 0, OUTSIDER, 2), "already has pending transaction"),
    ("unaffordable", lambda: transfer(A, 0, OUTSIDER, 10), "cannot pay 10 wei"),
    ("fees unaffordable", lambda: transfer(A, 0, OUTSIDER, 0, price=1), "cannot pay 21000 wei"),
    (
        "oversized",
        lambda: sign(A, 0, OUTSIDER.address, b"\x01" * 5000, gas=200_000),
        "transaction is 5.* bytes, limit is 4096",
    ),
]


@pytest.mark.parametrize(("case", "make", "reason"), REJECTIONS, ids=[r[0] for r in REJECTIONS])
def test_each_rejection_names_its_reason_and_changes_nothing(
    case: str, make: Any, reason: str
) -> None:
    accounts = Accounts()
    accounts.nonces[C.address] = 3
    pool = accounts.pool(max_tx_bytes=4096)
    pool.add(transfer(B, 0, OUTSIDER))
    before = snapshot(pool)
    with pytest.raises(InvalidTransaction, match=reason):
        pool.add(make())
    assert snapshot(pool) == before


def test_a_full_pool_refuses_more() -> None:
    pool = Accounts().pool(max_transactions=2)
    pool.add(transfer(A, 0, OUTSIDER))
    pool.add(transfer(A, 1, OUTSIDER))
    with pytest.raises(InvalidTransaction, match="mempool full"):
        pool.add(transfer(B, 0, OUTSIDER))
    assert len(pool) == 2


def test_non_bytes_input_is_an_invalid_transaction() -> None:
    with pytest.raises(InvalidTransaction, match="must be bytes"):
        Accounts().pool().add("0x02f8")  # type: ignore[arg-type]


def test_selection_is_nonce_ordered_per_sender_and_fifo_across_senders() -> None:
    pool = Accounts().pool()
    arrivals = [
        transfer(A, 1, OUTSIDER),  # arrives before A's nonce 0
        transfer(B, 0, OUTSIDER),
        transfer(A, 0, OUTSIDER),
        transfer(C, 0, OUTSIDER),
        transfer(B, 1, OUTSIDER),
        transfer(C, 2, OUTSIDER),  # gap: C's nonce 1 never arrives
    ]
    for raw in arrivals:
        pool.add(raw)
    order = [(tx.sender, tx.nonce) for tx in pool.select()]
    # A's nonce 1 arrived first but waits for nonce 0; once A's nonce 0 (third to
    # arrive) is taken, nonce 1 goes next, since it arrived before everything left.
    # C's nonce 2 waits for a nonce 1 that never came.
    assert order == [
        (B.address, 0),
        (A.address, 0),
        (A.address, 1),
        (C.address, 0),
        (B.address, 1),
    ]
    assert [(t.sender, t.nonce) for t in pool.select(max_count=2)] == order[:2]


def test_selection_respects_gas_and_the_parent_nonces() -> None:
    accounts = Accounts()
    pool = accounts.pool()
    for nonce in range(3):
        pool.add(transfer(A, nonce, OUTSIDER))
    pool.add(transfer(B, 0, OUTSIDER, gas=50_000))
    chosen = pool.select(max_gas=21_000 * 2)
    assert [(t.sender, t.nonce) for t in chosen] == [(A.address, 0), (A.address, 1)]
    # Building on a pending parent that already includes A's nonce 0:
    after = pool.select(nonce_of=lambda a: 1 if a == A.address else 0)
    assert [(t.sender, t.nonce) for t in after][:2] == [(A.address, 1), (A.address, 2)]


def test_a_commit_removes_included_and_stale_transactions() -> None:
    accounts = Accounts()
    pool = accounts.pool()
    included = transfer(A, 0, OUTSIDER)
    pool.add(included)
    pool.add(transfer(A, 1, OUTSIDER))
    stale = pool.add(transfer(B, 0, OUTSIDER))  # B's nonce 0 gets used by another tx
    revoked = pool.add(transfer(C, 0, OUTSIDER))
    block_header = make_header()
    accounts.nonces[A.address] = 1
    accounts.nonces[B.address] = 1
    accounts.roles[C.address] = 0
    evicted = dict(pool.on_commit(Block(block_header, (included,))))
    assert set(evicted) == {stale, revoked}
    assert "nonce 0 already used" in evicted[stale]
    assert "no longer holds a role" in evicted[revoked]
    assert [(t.sender, t.nonce) for t in pool.select()] == [(A.address, 1)]


def test_mempool_for_reads_roles_from_membership_and_follows_the_chain(
    executor: Executor,
) -> None:
    pool = mempool_for(executor)
    with pytest.raises(InvalidTransaction, match="holds no role"):
        pool.add(transfer(OUTSIDER, 0, TWIN))
    ours = [pool.add(register_model(PUBLISHER, n, "m", f"v{n}")) for n in range(3)]
    pool.add(transfer(TWIN, 0, OUTSIDER))
    chosen = pool.select()
    result = produce(executor, list(chosen[:2]))  # a block with PUBLISHER's nonces 0, 1
    assert pool.on_commit(result.block) == []
    assert ours[2] in pool and ours[0] not in pool
    with pytest.raises(InvalidTransaction, match="nonce 1 too low"):
        pool.add(register_model(PUBLISHER, 1, "m", "again"))
    validated = executor.validate_block(result.block, known=pool.get)
    assert validated.header == result.header


# ---------------------------------------------------------------- fuzzing

VALID = [
    transfer(A, 0, OUTSIDER, tx_type=0),
    transfer(A, 0, OUTSIDER, tx_type=1),
    sign(A, 0, PUBLISHER.address, b"\x00\x01" * 40),
]
FUZZ_ACCOUNTS = Accounts()


def assert_rejected_untouched(pool: Mempool, raw: bytes) -> None:
    before = snapshot(pool)
    try:
        pool.add(raw)
    except InvalidTransaction:
        assert snapshot(pool) == before
    else:  # only acceptable if the mutation is still a valid tx (never in practice)
        raise AssertionError(f"mutated transaction admitted: 0x{raw.hex()}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_rejected_as_invalid_transactions(raw: bytes) -> None:
    pool = FUZZ_ACCOUNTS.pool()
    pool.add(transfer(B, 0, OUTSIDER))
    assert_rejected_untouched(pool, raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(VALID),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "truncate"]),
            st.integers(0, 10_000),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_mutated_valid_transactions_are_rejected(raw: bytes, edits: list[Any]) -> None:
    data = bytearray(raw)
    for op, where, value in edits:
        at = where % (len(data) + 1)
        if op == "flip" and at < len(data):
            data[at] ^= value or 1
        elif op == "insert":
            data.insert(at, value)
        elif op == "delete" and at < len(data):
            del data[at]
        elif op == "truncate":
            del data[at:]
    if bytes(data) == raw:
        return
    pool = FUZZ_ACCOUNTS.pool()
    assert_rejected_untouched(pool, bytes(data))


def rlp_items() -> st.SearchStrategy[Any]:
    return st.recursive(
        st.binary(max_size=40),
        lambda children: st.lists(children, max_size=5),
        max_leaves=12,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(VALID),
    st.integers(0, 20),
    rlp_items(),
    st.sampled_from(["replace", "drop", "append", "wrap"]),
)
def test_structurally_mutated_rlp_is_rejected(raw: bytes, index: int, item: Any, op: str) -> None:
    typed = raw[0] < 0x80
    fields = rlp.decode(raw[1:] if typed else raw)
    at = index % len(fields)
    if op == "replace":
        fields[at] = item
    elif op == "drop":
        del fields[at]
    elif op == "append":
        fields.append(item)
    else:
        fields[at] = [fields[at]]
    mutated = (raw[:1] if typed else b"") + rlp.encode(fields)
    if mutated == raw:
        return
    assert_rejected_untouched(FUZZ_ACCOUNTS.pool(), mutated)
