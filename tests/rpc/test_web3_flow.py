"""web3.py 8, unchanged, against a miner's JSON-RPC: the flow a twin or publisher runs."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from eth_account import Account
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from contracts import MEMBERSHIP_ADDRESS as MEMBERSHIP_HEX
from contracts import MODEL_REGISTRY_ADDRESS as REGISTRY_HEX
from contracts import Role, load_artifact
from node.rpc.local import LocalNodeView
from tests.rpc.conftest import ADMIN, AUDITOR, CHAIN_ID, NODE_NAME, OUTSIDER, PUBLISHER, Key

MEMBERSHIP_ADDRESS = Web3.to_checksum_address(MEMBERSHIP_HEX)
MODEL_REGISTRY_ADDRESS = Web3.to_checksum_address(REGISTRY_HEX)


def registry(w3: Web3) -> Any:
    """The ModelRegistry contract object."""
    abi = list(load_artifact("ModelRegistry").abi)
    return w3.eth.contract(address=MODEL_REGISTRY_ADDRESS, abi=abi)


def membership(w3: Web3) -> Any:
    """The Membership contract object."""
    abi = list(load_artifact("Membership").abi)
    return w3.eth.contract(address=MEMBERSHIP_ADDRESS, abi=abi)


def send(w3: Web3, node: LocalNodeView, account: Key, call: Any, *, produce: bool = True) -> Any:
    """Build, sign locally, submit; optionally commit a block and return the receipt."""
    tx = call.build_transaction(
        {
            "from": account.address,
            "nonce": w3.eth.get_transaction_count(account.address, "pending"),
            "chainId": CHAIN_ID,
            "gas": 1_000_000,
            "maxFeePerGas": 0,
            "maxPriorityFeePerGas": 0,
        }
    )
    signed = Account.sign_transaction(tx, account.private)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    if not produce:
        return tx_hash
    node.produce_block()
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10, poll_latency=0.05)


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def test_identity_methods_answer_what_web3_expects(w3: Web3) -> None:
    assert w3.eth.chain_id == CHAIN_ID
    assert w3.net.version == str(CHAIN_ID)
    assert NODE_NAME in w3.client_version
    assert w3.eth.gas_price == 0
    assert w3.eth.max_priority_fee == 0
    assert w3.eth.syncing is False
    assert w3.net.peer_count == 0


def test_signed_transaction_is_committed_and_its_event_found_by_filters(
    w3: Web3, node: LocalNodeView
) -> None:
    contract = registry(w3)
    dataset = digest("flow dataset")
    receipt = send(
        w3,
        node,
        PUBLISHER,
        contract.functions.registerDataset(
            "radio-map", dataset, 4096, "application/x-safetensors", digest("meta")
        ),
    )
    assert receipt["status"] == 1
    assert receipt["from"] == PUBLISHER.address
    assert receipt["to"] == MODEL_REGISTRY_ADDRESS
    (event,) = contract.events.DatasetRegistered().process_receipt(receipt)
    assert event.args.digest == dataset
    assert event.args.registrant == PUBLISHER.address
    height = receipt["blockNumber"]

    # Logs by range + address + topic (indexed digest), by blockHash, and with OR-lists.
    by_range = contract.events.DatasetRegistered().get_logs(
        from_block=height, to_block=height, argument_filters={"digest": dataset}
    )
    assert [log["transactionHash"] for log in by_range] == [receipt["transactionHash"]]
    topic0 = receipt["logs"][0].topics[0]
    by_hash = w3.eth.get_logs({"blockHash": receipt["blockHash"], "topics": [topic0]})
    assert [log["logIndex"] for log in by_hash] == [receipt["logs"][0].logIndex]
    either = w3.eth.get_logs(
        {
            "fromBlock": 0,
            "toBlock": "latest",
            "address": [MODEL_REGISTRY_ADDRESS, MEMBERSHIP_ADDRESS],
            "topics": [
                [topic0, HexBytes(b"\x11" * 32)],
                None,
                None,
                "0x" + "00" * 12 + PUBLISHER.address[2:],
            ],
        }
    )
    assert receipt["transactionHash"] in [log["transactionHash"] for log in either]
    none = w3.eth.get_logs(
        {"fromBlock": height, "toBlock": height, "topics": [HexBytes(b"\x22" * 32)]}
    )
    assert none == []

    # The committed transaction as web3 sees it.
    tx = w3.eth.get_transaction(receipt["transactionHash"])
    assert tx["blockNumber"] == height and tx["from"] == PUBLISHER.address
    assert tx["type"] == 2 and tx["gasPrice"] == 0 and tx["chainId"] == CHAIN_ID

    # eth_call of a view, at the head and at the block before the registration.
    assert contract.functions.datasetIdByDigest(dataset).call() == event.args.dataset_id
    assert contract.functions.datasetIdByDigest(dataset).call(block_identifier=height - 1) == 0


def test_blocks_by_number_and_hash_agree_and_link(w3: Web3, node: LocalNodeView) -> None:
    node.produce_block()
    head = w3.eth.get_block("latest", full_transactions=True)
    by_number = w3.eth.get_block(head["number"])
    by_hash = w3.eth.get_block(head["hash"])
    assert by_number == by_hash
    assert by_number["hash"] == head["hash"]
    parent = w3.eth.get_block(head["number"] - 1)
    assert head["parentHash"] == parent["hash"]
    assert head["baseFeePerGas"] == 0 and head["difficulty"] == 0 and head["uncles"] == []
    assert head["miner"] == Web3.to_checksum_address(node.signer.address)
    assert w3.eth.get_block("earliest")["number"] == 0
    for tag in ("safe", "finalized", "pending"):
        assert w3.eth.get_block(tag)["number"] == head["number"]
    assert w3.eth.block_number == head["number"]


def test_state_reads_follow_blocks(w3: Web3, node: LocalNodeView) -> None:
    before = w3.eth.block_number
    balance = w3.eth.get_balance(OUTSIDER.address)
    nonce = w3.eth.get_transaction_count(AUDITOR.address, "pending")
    transfer = {
        "to": OUTSIDER.address,
        "value": 12345,
        "gas": 21_000,
        "maxFeePerGas": 0,
        "maxPriorityFeePerGas": 0,
        "nonce": nonce,
        "chainId": CHAIN_ID,
        "type": 2,
    }
    signed = Account.sign_transaction(transfer, AUDITOR.private)
    w3.eth.send_raw_transaction(signed.raw_transaction)
    assert w3.eth.get_transaction_count(AUDITOR.address, "pending") == nonce + 1
    assert w3.eth.get_transaction_count(AUDITOR.address) == nonce
    node.produce_block()
    assert w3.eth.get_balance(OUTSIDER.address) == balance + 12345
    assert w3.eth.get_balance(OUTSIDER.address, block_identifier=before) == balance
    assert w3.eth.get_code(MEMBERSHIP_ADDRESS) == load_artifact("Membership").runtime_code
    assert w3.eth.get_code(OUTSIDER.address) == b""
    slot = w3.eth.get_storage_at(MEMBERSHIP_ADDRESS, 0)
    assert len(slot) == 32
    roles = membership(w3).functions.rolesOf(PUBLISHER.address).call()
    assert roles == Role.PUBLISHER | Role.TWIN


def test_estimate_gas_is_enough_and_revert_reason_reaches_web3(w3: Web3) -> None:
    contract = registry(w3)
    call = contract.functions.registerDataset(
        "estimate", digest("estimate"), 1, "text/plain", digest("m")
    )
    gas = call.estimate_gas({"from": PUBLISHER.address})
    assert 21_000 < gas < 1_000_000
    with pytest.raises(ContractLogicError, match="empty name"):
        contract.functions.registerDataset("", digest("x"), 1, "t", digest("m")).call(
            {"from": PUBLISHER.address}
        )
    with pytest.raises(ContractLogicError, match="not a PUBLISHER or TWIN"):
        contract.functions.registerDataset("n", digest("y"), 1, "t", digest("m")).estimate_gas(
            {"from": OUTSIDER.address}
        )


def test_rejected_transactions_report_the_mempool_reason(w3: Web3) -> None:
    tx = {
        "to": ADMIN.address,
        "value": 1,
        "gas": 21_000,
        "gasPrice": 0,
        "nonce": 0,
        "chainId": CHAIN_ID,
    }
    outsider = Account.sign_transaction(tx, OUTSIDER.private).raw_transaction
    with pytest.raises(Web3RPCError, match="holds no role"):
        w3.eth.send_raw_transaction(outsider)
    wrong_chain = Account.sign_transaction({**tx, "chainId": 1}, PUBLISHER.private)
    with pytest.raises(Web3RPCError, match="wrong chain id"):
        w3.eth.send_raw_transaction(wrong_chain.raw_transaction)


def test_absent_objects_are_null_not_errors(w3: Web3) -> None:
    from web3.exceptions import BlockNotFound, TransactionNotFound

    with pytest.raises(BlockNotFound):
        w3.eth.get_block(10**9)
    with pytest.raises(TransactionNotFound):
        w3.eth.get_transaction_receipt(HexBytes(b"\x01" * 32))
    with pytest.raises(TransactionNotFound):
        w3.eth.get_transaction(HexBytes(b"\x01" * 32))


def test_fee_history_has_zero_base_fee_and_used_ratios(w3: Web3, node: LocalNodeView) -> None:
    node.produce_block()
    history = w3.eth.fee_history(3, "latest", [25.0, 75.0])
    assert history["baseFeePerGas"] == [0, 0, 0, 0]
    assert len(history["gasUsedRatio"]) == 3
    assert all(0 <= ratio <= 1 for ratio in history["gasUsedRatio"])
    assert history["reward"] == [[0, 0]] * 3
    assert history["oldestBlock"] == w3.eth.block_number - 2
