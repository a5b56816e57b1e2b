"""The executor: determinism across nodes, block validation with precise errors,
building on pending and historical parents, reads (call, estimate_gas)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import rlp
import vyper
from eth.chains.base import MiningChain
from eth.db.atomic import AtomicDB
from eth.vm.forks.prague import PragueVM
from eth.vm.forks.prague.state import PragueState
from eth_abi.abi import decode as abi_decode
from eth_hash.auto import keccak

from node.chain.block import Block, transactions_root
from node.chain.executor import ExecutionReverted, Executor
from node.chain.genesis import Predeploy, build_genesis, default_predeploys
from node.chain.store import ChainStore
from node.chain.tx import decode_transaction
from node.chain.types import REGISTRY_ADDRESS, Address, Hash32
from node.errors import InvalidBlock, InvalidInput, NotFound
from tests.chain.helpers import (
    BUILD_ARGS,
    CHAIN_ID,
    GAS_LIMIT,
    OUTSIDER,
    PUBLISHER,
    SENDERS,
    VALIDATORS,
    genesis_config,
    genesis_state,
    produce,
    register_model,
    registry_call,
    sign,
    transfer,
)


def zero_nonce_as_empty_list(raw: bytes) -> bytes:
    """Same signature, another hash: nonce 0 re-encoded as an empty RLP list."""
    fields = rlp.decode(raw[1:])
    fields[1] = []
    return raw[:1] + rlp.encode(fields)


COUNTER_SOURCE = """#pragma version ~=0.4.3
event Bumped:
    who: indexed(address)
    value: uint256

counter: public(uint256)
slots: public(HashMap[uint256, uint256])

@external
def bump(by: uint256) -> uint256:
    assert by != 13, "unlucky"
    self.counter += by
    self.slots[by] = by
    log Bumped(who=msg.sender, value=self.counter)
    return self.counter

@external
def clear(key: uint256):
    self.slots[key] = 0

@external
@view
def ancestor(depth: uint256) -> bytes32:
    return blockhash(block.number - depth)
"""
_COMPILED: dict[str, Any] = {}


def counter_initcode() -> bytes:
    """Deployment code of a tiny Vyper contract (storage, refunds, logs, reverts)."""
    if not _COMPILED:
        _COMPILED.update(vyper.compile_code(COUNTER_SOURCE, output_formats=["bytecode"]))
    return bytes.fromhex(_COMPILED["bytecode"][2:])


def call_data(signature: str, *words: int) -> bytes:
    return bytes(keccak(signature.encode())[:4]) + b"".join(w.to_bytes(32, "big") for w in words)


def created_address(sender: Address, nonce: int) -> Address:
    return Address(keccak(rlp.encode([sender, nonce]))[12:])


def mixed_block(nonce: int = 0) -> list[bytes]:
    """Registry calls from two publishers, transfers of every tx type, a revert."""
    a, b = SENDERS[0], SENDERS[1]
    return [
        register_model(a, nonce, "resnet", f"resnet-{nonce}"),
        register_model(b, nonce, "bert", f"bert-{nonce}"),
        transfer(a, nonce + 1, OUTSIDER, 5, tx_type=0),
        transfer(b, nonce + 1, OUTSIDER, 7, tx_type=1),
        # reverts: the same digest cannot be registered twice
        register_model(a, nonce + 2, "resnet", f"resnet-{nonce}"),
        transfer(b, nonce + 2, OUTSIDER, 1),
    ]


def test_two_executors_fed_the_same_blocks_reach_identical_state_roots(
    executor: Executor, replica: Executor
) -> None:
    for round_ in range(3):
        built = produce(executor, mixed_block(3 * round_))
        validated = replica.validate_block(built.block)
        replica.commit(validated, b"seal")
        assert validated.header == built.header
        assert validated.receipts == built.receipts
    assert replica.store.head() == executor.store.head()
    assert [r.status for r in built.receipts] == [1, 1, 1, 1, 0, 1]
    assert executor.store.check_integrity() == replica.store.check_integrity() == 4


def tamper(block: Block, *, fix_root: bool = False, **changes: Any) -> Block:
    txs = changes.pop("transactions", block.transactions)
    header = block.header.replace(**changes)
    if fix_root:
        header = header.replace(transactions_root=transactions_root(txs))
    return Block(header, tuple(txs))


def test_block_with_a_bad_state_root_is_rejected(executor: Executor, replica: Executor) -> None:
    built = produce(executor, mixed_block(), commit=False)
    bad = tamper(built.block, state_root=Hash32(b"\x11" * 32))
    with pytest.raises(InvalidBlock, match=r"block 1: state_root mismatch: header 0x1111"):
        replica.validate_block(bad)


def test_tampered_transaction_is_rejected(executor: Executor, replica: Executor) -> None:
    built = produce(executor, mixed_block(), commit=False)
    raw = bytearray(built.block.transactions[2])
    raw[-40] ^= 0x01  # a byte of the signature's r
    txs = (*built.block.transactions[:2], bytes(raw), *built.block.transactions[3:])
    with pytest.raises(InvalidBlock, match=r"block 1: transactions_root mismatch"):
        replica.validate_block(tamper(built.block, transactions=txs))
    # Even with a matching transactions root the forged signature does not pass:
    # it recovers another sender, with neither that nonce nor that balance.
    with pytest.raises(InvalidBlock, match=r"block 1: transaction 2 \(0x[0-9a-f]{64}\) is invalid"):
        replica.validate_block(tamper(built.block, transactions=txs, fix_root=True))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"receipts_root": Hash32(b"\x22" * 32)}, "receipts_root mismatch"),
        ({"gas_used": 21_000}, "gas_used mismatch: header 21000"),
        ({"logs_bloom": b"\xff" * 256}, "logs_bloom mismatch"),
        ({"chain_id": 1}, "chain_id 1, expected 7311"),
        ({"height": 2}, "height is not parent height 0 \\+ 1"),
        ({"parent_hash": Hash32(b"\x33" * 32)}, "unknown parent_hash 0x3333"),
        ({"gas_limit": GAS_LIMIT + 1}, "gas_limit 30000001, genesis fixes 30000000"),
        ({"timestamp": 0}, "timestamp 0 is before the parent's"),
    ],
)
def test_header_field_errors_are_named(
    executor: Executor, replica: Executor, changes: dict[str, Any], message: str
) -> None:
    built = produce(executor, mixed_block(), commit=False)
    with pytest.raises(InvalidBlock, match=message):
        replica.validate_block(tamper(built.block, **changes))


@pytest.mark.parametrize(
    ("bad_tx", "message"),
    [
        (lambda: transfer(SENDERS[0], 5, OUTSIDER), "Invalid transaction nonce: Expected 0"),
        (lambda: transfer(SENDERS[0], 0, OUTSIDER, chain_id=1), "wrong chain id 1"),
        (lambda: transfer(OUTSIDER, 0, SENDERS[0], 10**30), "insufficient|balance"),
        (lambda: transfer(SENDERS[0], 0, OUTSIDER, gas=GAS_LIMIT + 1), "exceeds the block"),
        (lambda: b"\x02\xc0", "malformed transaction"),
        (lambda: zero_nonce_as_empty_list(transfer(SENDERS[0], 0, OUTSIDER)), "non-canonical"),
        (lambda: b"\x03" + transfer(SENDERS[0], 0, OUTSIDER)[1:], "unsupported transaction type 3"),
    ],
)
def test_invalid_transaction_inside_a_block_makes_the_block_invalid(
    executor: Executor, bad_tx: Any, message: str
) -> None:
    parent = executor.store.head()
    good = produce(executor, [transfer(SENDERS[1], 0, OUTSIDER)], commit=False)
    txs = (*good.block.transactions, bad_tx())
    block = tamper(good.block, transactions=txs, fix_root=True)
    with pytest.raises(
        InvalidBlock, match=rf"block 1: transaction 1 \(0x[0-9a-f]+\) is invalid: .*({message})"
    ):
        executor.validate_block(block)
    assert executor.store.head() == parent  # nothing committed


def test_reverted_transaction_is_included_with_status_zero(executor: Executor) -> None:
    tx = sign(OUTSIDER, 0, REGISTRY_ADDRESS, registry_call("setAlias", "m", "prod", 1))
    result = produce(executor, [tx])
    (receipt,) = result.receipts
    assert receipt.status == 0 and receipt.logs == () and receipt.gas_used > 21_000
    assert executor.nonce_of(OUTSIDER.address) == 1  # the nonce is spent all the same


def test_building_skips_unincludable_transactions_and_says_why(executor: Executor) -> None:
    good = transfer(SENDERS[0], 0, OUTSIDER)
    txs = [good, transfer(SENDERS[0], 0, OUTSIDER, 2), b"junk", transfer(SENDERS[1], 9, OUTSIDER)]
    result = executor.build_block(
        executor.store.head(), txs, timestamp=executor.store.head().timestamp, **BUILD_ARGS
    )
    assert result.block.transactions == (good,)
    reasons = [reason for _, reason in result.rejected]
    assert len(reasons) == 3
    assert any("unsupported transaction type 106" in r for r in reasons)
    assert sum("nonce" in r for r in reasons) == 2


def test_blocks_build_and_validate_on_a_pending_parent(
    executor: Executor, replica: Executor
) -> None:
    # DPoS: block 2 extends block 1 before block 1 is final (committed).
    first = produce(executor, [register_model(PUBLISHER, 0, "m", "v1")], commit=False)
    second = produce(
        executor,
        [register_model(PUBLISHER, 1, "m", "v2", parents=[1])],
        parent=first.header,
        commit=False,
    )
    assert second.receipts[0].status == 1
    assert replica.validate_block(first.block).header == first.header
    assert replica.validate_block(second.block).header == second.header
    for node, results in ((executor, (first, second)), (replica, (first, second))):
        for result in results:
            node.commit(node.pending(result.block.hash()) or result, b"seal")
        assert node.store.head() == second.header
        assert node.pending(second.block.hash()) is None  # committed results are dropped


def test_a_block_executes_on_a_historical_parent_but_only_the_head_extends(
    executor: Executor,
) -> None:
    genesis = executor.store.head()
    produce(executor, [transfer(SENDERS[0], 0, OUTSIDER)])
    produce(executor, [transfer(SENDERS[0], 1, OUTSIDER)])
    fork = produce(executor, [transfer(SENDERS[0], 0, OUTSIDER, 3)], parent=genesis, commit=False)
    assert fork.receipts[0].status == 1 and fork.header.height == 1
    assert executor.balance_of(OUTSIDER.address, at=fork.header) == 10**24 + 3
    with pytest.raises(InvalidBlock, match="does not extend the head 2"):
        executor.commit(fork, b"seal")


def test_unknown_parent_state_is_not_found(executor: Executor) -> None:
    orphan = executor.store.head().replace(state_root=Hash32(b"\x44" * 32))
    with pytest.raises(NotFound, match="state root 0x4444"):
        executor.build_block(orphan, [], timestamp=orphan.timestamp, **BUILD_ARGS)


class ReferenceState(PragueState):
    """Stock py-evm Prague state (stock AccountDB), minus the beacon system contracts
    this chain does not have."""

    def set_system_contracts(self) -> None:
        pass


ReferenceVM = PragueVM.configure(__name__="ReferenceVM", _state_class=ReferenceState)


def reference_chain(config: Any, predeploys: list[Predeploy]) -> Any:
    """Stock py-evm MiningChain on the same genesis accounts (and predeployed code)."""
    accounts = {
        address: {"balance": wei, "nonce": 0, "code": b"", "storage": {}}
        for address, wei in config.balances
    }
    for contract in predeploys:
        accounts[contract.address] = {
            "balance": 0,
            "nonce": 1,
            "code": contract.runtime_code,
            "storage": {},
        }
    chain_class = MiningChain.configure(vm_configuration=((0, ReferenceVM),), chain_id=CHAIN_ID)
    params = {
        "difficulty": 0,
        "gas_limit": GAS_LIMIT,
        "base_fee_per_gas": 0,
        "timestamp": config.timestamp,
    }
    return chain_class.from_genesis(AtomicDB(), params, accounts)


def mine_on_both(executor: Executor, reference: Any, txs: list[bytes]) -> tuple[Any, Any]:
    """The same transactions as one block on our chain and on the reference chain."""
    head = executor.store.head()
    ours = executor.build_block(
        head,
        txs,
        timestamp=head.timestamp + 1,
        proposer=VALIDATORS[0].address,
        epoch=0,
        validator_set_hash=head.validator_set_hash,
    )
    assert ours.rejected == ()
    executor.commit(ours, b"")
    builder = reference.get_vm().get_transaction_builder()
    imported = reference.mine_all(
        [builder.decode(tx) for tx in txs],
        coinbase=VALIDATORS[0].address,
        timestamp=head.timestamp + 1,
    )[0].imported_block
    return ours, imported


def test_batch_execution_matches_py_evm_block_import(tmp_path: Any) -> None:
    """Our one-pass application (state root computed once per block, storage tries
    updated in one batch) gives the same state root as stock py-evm's MiningChain,
    which recomputes it after every transaction and writes storage key by key."""
    config = genesis_config()
    genesis = build_genesis(config, predeploys=())
    reference = reference_chain(config, [])
    assert reference.get_canonical_head().state_root == genesis.header.state_root

    a, b = SENDERS[0], SENDERS[1]
    counter = created_address(a.address, 0)
    txs = [
        sign(a, 0, None, counter_initcode(), gas=500_000),
        sign(a, 1, counter, call_data("bump(uint256)", 5)),
        sign(b, 0, counter, call_data("bump(uint256)", 7), tx_type=0, price=3),
        sign(b, 1, counter, call_data("bump(uint256)", 13), tx_type=1, price=2),  # reverts
        sign(a, 2, counter, call_data("clear(uint256)", 5)),  # refund
        transfer(a, 3, OUTSIDER, 10**18, price=1),
    ]
    with ChainStore.open(tmp_path / "ref.db", genesis) as store:
        ours, imported = mine_on_both(Executor(store), reference, txs)
    assert [r.status for r in ours.receipts] == [1, 1, 1, 0, 1, 1]
    assert ours.header.state_root == imported.header.state_root
    assert ours.header.receipts_root == imported.header.receipt_root
    assert ours.header.transactions_root == imported.header.transaction_root
    assert ours.header.gas_used == imported.header.gas_used
    assert int.from_bytes(ours.header.logs_bloom, "big") == imported.header.bloom
    evm_receipts = reference.get_canonical_block_by_number(1).get_receipts(reference.chaindb)
    assert [r.encode() for r in ours.receipts] == [r.encode() for r in evm_receipts]


def test_registry_blocks_match_stock_py_evm_state_roots(tmp_path: Any) -> None:
    """Storage-heavy blocks (registrations, aliases, revocations that delete slots),
    block after block: the batched storage tries stay identical to py-evm's."""
    config = genesis_config()
    predeploys = [
        Predeploy(p.name, p.address, p.runtime_code, None) for p in default_predeploys(config)
    ]
    calls = {p.name: p.init_calldata for p in default_predeploys(config)}
    reference = reference_chain(config, predeploys)
    with ChainStore.open(tmp_path / "ours.db", build_genesis(config, predeploys)) as store:
        executor = Executor(store)
        assert reference.get_canonical_head().state_root == store.head().state_root
        publishers = SENDERS[:6]
        blocks = [
            [
                sign(OUTSIDER, i, p.address, calls[p.name] or b"", gas=20_000_000)
                for i, p in enumerate(predeploys)
            ],
            [
                register_model(s, n, f"model{i}", f"{i}/{n}")
                for i, s in enumerate(publishers)
                for n in range(2)
            ],
            [
                register_model(s, 2, f"model{i}", f"{i}/2", parents=[2 * i + 1])
                for i, s in enumerate(publishers)
            ]
            + [
                sign(
                    s,
                    3,
                    REGISTRY_ADDRESS,
                    registry_call("setAlias", f"model{i}", "prod", 2 * i + 2),
                )
                for i, s in enumerate(publishers)
            ],
            [
                sign(s, 4, REGISTRY_ADDRESS, registry_call("revokeVersion", 2 * i + 2, "bad"))
                for i, s in enumerate(publishers)
            ]
            + [
                sign(s, 5, REGISTRY_ADDRESS, registry_call("deprecateVersion", 2 * i + 1, "old"))
                for i, s in enumerate(publishers)
            ],
        ]
        for txs in blocks:
            ours, imported = mine_on_both(executor, reference, txs)
            assert all(r.status == 1 for r in ours.receipts), [r.status for r in ours.receipts]
            assert ours.header.state_root == imported.header.state_root
            assert ours.header.receipts_root == imported.header.receipt_root


def test_blockhash_sees_pending_and_committed_ancestors(executor: Executor) -> None:
    a = SENDERS[0]
    counter = created_address(a.address, 0)
    first = produce(executor, [sign(a, 0, None, counter_initcode(), gas=500_000)])
    second = produce(executor, [], commit=False)
    third = produce(executor, [], parent=second.header, commit=False)
    call = call_data("ancestor(uint256)", 1)
    # At "third", the state's next block is 4: ancestor(1) is block 3, ancestor(2) block 2...
    assert executor.call(counter, call, at=third.header) == third.header.hash()
    assert executor.call(counter, call_data("ancestor(uint256)", 2), at=third.header) == (
        second.header.hash()
    )
    assert executor.call(counter, call_data("ancestor(uint256)", 3), at=third.header) == (
        first.header.hash()
    )


def test_call_reads_views_and_estimate_gas_suffices(executor: Executor) -> None:
    produce(executor, [register_model(PUBLISHER, 0, "resnet", "r1")])
    latest = executor.call(REGISTRY_ADDRESS, registry_call("latest", "resnet"))
    assert abi_decode(["uint256"], latest) == (1,)
    data = registry_call("registerModel", "resnet", keccak(b"r2"), 1, "onnx", [1], [], bytes(32))
    estimate = executor.estimate_gas(REGISTRY_ADDRESS, data, PUBLISHER.address)
    ok = sign(PUBLISHER, 1, REGISTRY_ADDRESS, data, gas=estimate)
    short = sign(PUBLISHER, 1, REGISTRY_ADDRESS, data, gas=estimate - 1)
    assert produce(executor, [short], commit=False).receipts[0].status == 0
    assert produce(executor, [ok]).receipts[0].status == 1


def test_reverted_call_raises_with_the_reason_and_changes_nothing(executor: Executor) -> None:
    data = registry_call("registerModel", "m", keccak(b"x"), 1, "onnx", [], [], bytes(32))
    head = executor.store.head()
    with pytest.raises(ExecutionReverted, match="execution reverted: not a PUBLISHER") as info:
        executor.call(REGISTRY_ADDRESS, data, OUTSIDER.address)
    assert info.value.output[:4] == bytes.fromhex("08c379a0")
    with pytest.raises(ExecutionReverted, match="not a PUBLISHER"):
        executor.estimate_gas(REGISTRY_ADDRESS, data, OUTSIDER.address)
    with pytest.raises(InvalidInput, match="call is not executable"):
        executor.call(REGISTRY_ADDRESS, b"", OUTSIDER.address, value=10**30)
    assert executor.store.head() == head
    assert executor.nonce_of(OUTSIDER.address) == 0


def test_zero_fee_transactions_are_valid_and_paid_tips_go_to_the_proposer(
    executor: Executor,
) -> None:
    proposer = VALIDATORS[0].address
    before = executor.balance_of(proposer)
    produce(
        executor, [transfer(SENDERS[0], 0, OUTSIDER), transfer(SENDERS[1], 0, OUTSIDER, price=2)]
    )
    assert executor.balance_of(proposer) == before + 2 * 21_000
    assert executor.balance_of(SENDERS[0].address) == 10**24 - 1


def test_commit_runs_the_injected_seal_verifier(store: ChainStore) -> None:
    def verify(block: Block) -> None:
        if block.seal != b"good":
            raise InvalidBlock(f"block {block.height}: bad certificate")

    executor = Executor(store, verify_seal=verify)
    result = executor.build_block(store.head(), [], timestamp=store.head().timestamp, **BUILD_ARGS)
    with pytest.raises(InvalidBlock, match="bad certificate"):
        executor.commit(result, b"forged")
    assert store.head().height == 0
    assert executor.commit(result, b"good").seal == b"good"
    assert store.block_by_height(1) == result.block.with_seal(b"good")


def test_import_block_validates_checks_the_seal_and_commits(
    executor: Executor, replica: Executor
) -> None:
    built = produce(executor, mixed_block())
    sealed = executor.store.block_by_height(1)
    assert sealed is not None and sealed.seal == b"seal"
    replica.import_block(sealed)
    assert replica.store.head() == built.header
    assert replica.store.block_by_height(1) == sealed


def test_decoded_transaction_caches_its_sender(executor: Executor) -> None:
    tx = decode_transaction(transfer(SENDERS[2], 0, OUTSIDER), CHAIN_ID)
    assert tx.evm.sender == tx.sender == SENDERS[2].address
    assert PragueVM.get_transaction_builder().decode(tx.raw).sender == tx.sender


def build_mixed_chain(path: str) -> str:
    """Three blocks of :func:`mixed_block` on a fresh store; the head's hash (hex)."""
    with ChainStore.open(path, genesis_state()) as store:
        executor = Executor(store)
        for round_ in range(3):
            produce(executor, mixed_block(3 * round_))
        return store.head().hash().hex()


def test_block_hashes_are_identical_in_a_fresh_process(tmp_path: Any) -> None:
    script = (
        "import sys; from tests.chain.test_executor import build_mixed_chain;"
        "print(build_mixed_chain(sys.argv[1]))"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # another set/dict iteration order
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "child.db")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == build_mixed_chain(str(tmp_path / "parent.db"))
