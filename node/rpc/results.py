"""Encoding chain objects as Ethereum JSON-RPC results (the shapes web3.py expects).

Blocks carry every field of the execution-apis block schema. Fields that mean nothing on
a BFT chain get their post-merge constant values: ``difficulty`` 0, ``nonce``
``0x0000000000000000``, ``mixHash`` zero (the EVM's PREVRANDAO is zero here),
``sha3Uncles`` the empty-list hash, ``uncles`` empty, ``baseFeePerGas`` 0. ``miner`` is
the block's proposer. Two TwinChain header fields ride along as extra members:
``epoch`` and ``validatorSetHash``; the header RLP itself (needed to recompute the block
hash, which is over TwinChain's header, not Ethereum's) comes with
``twin_getCommitCertificate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import rlp
from eth_hash.auto import keccak

from node.chain.block import Block, Header
from node.chain.receipt import BlockLog, Receipt
from node.chain.store import ReceiptRecord
from node.chain.tx import decode_transaction
from node.chain.types import Hash32, Role
from node.consensus.certificate import CommitCertificate
from node.consensus.engine import EngineStatus
from node.consensus.evidence import EquivocationEvidence
from node.consensus.messages import SignedMessage
from node.consensus.types import ValidatorSet

__all__ = [
    "EMPTY_UNCLES_HASH",
    "block_json",
    "certificate_json",
    "evidence_json",
    "hexb",
    "hexq",
    "log_json",
    "receipt_json",
    "roles_json",
    "status_json",
    "transaction_json",
    "validator_set_json",
]

#: keccak(rlp([])): the ommers hash of a block without uncles.
EMPTY_UNCLES_HASH: Final = keccak(rlp.encode([]))
_ZERO_NONCE: Final = "0x0000000000000000"
_ZERO_HASH_HEX: Final = "0x" + "00" * 32


def hexq(value: int) -> str:
    """A QUANTITY."""
    return hex(value)


def hexb(value: bytes) -> str:
    """A DATA string."""
    return "0x" + bytes(value).hex()


def _address(value: bytes | None) -> str | None:
    return None if value is None else hexb(value)


def header_json(header: Header) -> dict[str, Any]:
    """Header fields of a block object (no size, transactions or uncles)."""
    return {
        "number": hexq(header.height),
        "hash": hexb(header.hash()),
        "parentHash": hexb(header.parent_hash),
        "nonce": _ZERO_NONCE,
        "mixHash": _ZERO_HASH_HEX,
        "sha3Uncles": hexb(EMPTY_UNCLES_HASH),
        "logsBloom": hexb(header.logs_bloom),
        "transactionsRoot": hexb(header.transactions_root),
        "stateRoot": hexb(header.state_root),
        "receiptsRoot": hexb(header.receipts_root),
        "miner": hexb(header.proposer),
        "difficulty": "0x0",
        "totalDifficulty": "0x0",
        "extraData": "0x",
        "gasLimit": hexq(header.gas_limit),
        "gasUsed": hexq(header.gas_used),
        "timestamp": hexq(header.timestamp),
        "baseFeePerGas": "0x0",
        "epoch": hexq(header.epoch),
        "validatorSetHash": hexb(header.validator_set_hash),
    }


def block_json(block: Block, *, full: bool, chain_id: int) -> dict[str, Any]:
    """A block object; ``full`` gives transaction objects instead of hashes."""
    result = header_json(block.header)
    result["size"] = hexq(len(block.encode()))
    result["uncles"] = []
    if full:
        result["transactions"] = [
            transaction_json(raw, chain_id, block.header, index)
            for index, raw in enumerate(block.transactions)
        ]
    else:
        result["transactions"] = [hexb(h) for h in block.tx_hashes]
    return result


def transaction_json(
    raw: bytes, chain_id: int, header: Header | None = None, index: int | None = None
) -> dict[str, Any]:
    """A transaction object; with ``header``/``index`` for a committed transaction."""
    signed = decode_transaction(raw, chain_id)
    tx = signed.evm
    type_id = tx.type_id or 0
    result: dict[str, Any] = {
        "blockHash": None if header is None else hexb(header.hash()),
        "blockNumber": None if header is None else hexq(header.height),
        "transactionIndex": None if index is None else hexq(index),
        "hash": hexb(signed.hash),
        "type": hexq(type_id),
        "from": hexb(signed.sender),
        "to": _address(signed.to),
        "nonce": hexq(tx.nonce),
        "gas": hexq(tx.gas),
        "value": hexq(tx.value),
        "input": hexb(tx.data),
        "chainId": hexq(chain_id),
        "r": hexq(tx.r),
        "s": hexq(tx.s),
    }
    if type_id == 0:
        result["gasPrice"] = hexq(tx.gas_price)
        result["v"] = hexq(tx.v)  # type: ignore[attr-defined]  # legacy transactions only
        return result
    result["yParity"] = hexq(tx.y_parity)
    result["v"] = hexq(tx.y_parity)
    result["accessList"] = [
        {"address": hexb(entry[0]), "storageKeys": [hexb(k.to_bytes(32, "big")) for k in entry[1]]}
        for entry in tx.access_list
    ]
    if type_id == 1:
        result["gasPrice"] = hexq(tx.gas_price)
    else:  # EIP-1559 with base fee 0: the effective price is the tip, capped by the max fee
        result["maxFeePerGas"] = hexq(tx.max_fee_per_gas)
        result["maxPriorityFeePerGas"] = hexq(tx.max_priority_fee_per_gas)
        result["gasPrice"] = hexq(min(tx.max_fee_per_gas, tx.max_priority_fee_per_gas))
    return result


def log_json(entry: BlockLog) -> dict[str, Any]:
    """A log object as ``eth_getLogs`` and receipts report it."""
    return {
        "address": hexb(entry.log.address),
        "topics": [hexb(t) for t in entry.log.topics],
        "data": hexb(entry.log.data),
        "blockNumber": hexq(entry.block_height),
        "blockHash": hexb(entry.block_hash),
        "transactionHash": hexb(entry.tx_hash),
        "transactionIndex": hexq(entry.tx_index),
        "logIndex": hexq(entry.log_index),
        "removed": False,
    }


def receipt_json(record: ReceiptRecord) -> dict[str, Any]:
    """A receipt object."""
    r: Receipt = record.receipt
    return {
        "transactionHash": hexb(r.tx_hash),
        "transactionIndex": hexq(r.tx_index),
        "blockHash": hexb(record.block_hash),
        "blockNumber": hexq(record.block_height),
        "from": hexb(r.sender),
        "to": _address(r.to),
        "contractAddress": _address(r.contract_address),
        "cumulativeGasUsed": hexq(r.cumulative_gas_used),
        "gasUsed": hexq(r.gas_used),
        "effectiveGasPrice": hexq(r.effective_gas_price),
        "logs": [log_json(entry) for entry in record.block_logs()],
        "logsBloom": hexb(r.bloom()),
        "type": hexq(r.tx_type),
        "status": hexq(r.status),
    }


def fee_rewards(
    receipts: Sequence[Receipt], gas_used: int, percentiles: Sequence[float]
) -> list[str]:
    """Priority fee paid at each gas-weighted percentile of a block (as geth computes
    ``eth_feeHistory`` rewards); with base fee 0 the whole effective price is the tip."""
    if not receipts or gas_used == 0:
        return ["0x0"] * len(percentiles)
    ordered = sorted(receipts, key=lambda r: r.effective_gas_price)
    rewards = []
    index, cumulative = 0, ordered[0].gas_used
    for p in percentiles:
        threshold = gas_used * p / 100
        while cumulative < threshold and index < len(ordered) - 1:
            index += 1
            cumulative += ordered[index].gas_used
        rewards.append(hexq(ordered[index].effective_gas_price))
    return rewards


def certificate_json(block: Block) -> dict[str, Any]:
    """The block's seal, decoded when it is a CommitCertificate, plus the header RLP
    (so a verifier recomputes the block hash the certificate signs)."""
    header = block.header
    result: dict[str, Any] = {
        "blockNumber": hexq(header.height),
        "blockHash": hexb(header.hash()),
        "epoch": hexq(header.epoch),
        "validatorSetHash": hexb(header.validator_set_hash),
        "header": hexb(header.encode()),
        "seal": hexb(block.seal),
        "certificate": None,
    }
    if header.height == 0 or not block.seal:
        return result  # genesis is trusted by configuration, not by a certificate
    try:
        cert = CommitCertificate.decode(block.seal)
    except ValueError:
        return result  # an opaque seal (e.g. a test chain's); reported raw above
    result["certificate"] = {
        "engine": hexq(cert.engine),
        "kind": hexq(cert.kind),
        "height": hexq(cert.height),
        "round": hexq(cert.round),
        "blockHash": hexb(cert.block_hash),
        "signatures": [{"signer": hexb(s), "signature": hexb(sig)} for s, sig in cert.signatures],
    }
    return result


def validator_set_json(validators: ValidatorSet) -> dict[str, Any]:
    """A validator set with its commitment and quorum arithmetic."""
    return {
        "epoch": hexq(validators.epoch),
        "members": [hexb(m) for m in validators.members],
        "hash": hexb(validators.hash()),
        "quorum": hexq(validators.quorum),
        "faultTolerance": hexq(validators.f),
    }


def _message_json(msg: SignedMessage) -> dict[str, Any]:
    return {
        "engine": hexq(msg.engine),
        "kind": hexq(msg.kind),
        "height": hexq(msg.height),
        "round": hexq(msg.round),
        "digest": hexb(msg.digest),
        "payloadHash": hexb(msg.payload_hash),
        "signer": hexb(msg.signer),
        "signature": hexb(msg.signature),
    }


def evidence_json(evidence: EquivocationEvidence) -> dict[str, Any]:
    """One equivocation record: both messages and the canonical encoding."""
    return {
        "validator": hexb(evidence.validator),
        "first": _message_json(evidence.first),
        "second": _message_json(evidence.second),
        "encoded": hexb(evidence.encode()),
    }


def status_json(status: EngineStatus) -> dict[str, Any]:
    """The consensus status snapshot."""
    return {
        "engine": status.engine,
        "height": hexq(status.height),
        "round": hexq(status.round),
        "epoch": hexq(status.epoch),
        "proposer": _address(status.proposer),
        "committedHeight": hexq(status.committed_height),
        "finalityLag": hexq(status.finality_lag),
        "roundChanges": hexq(status.round_changes),
        "dropped": {reason: hexq(count) for reason, count in sorted(status.dropped.items())},
        "evidence": hexq(status.evidence),
    }


def roles_json(address: bytes, roles: int) -> dict[str, Any]:
    """Role bits with their names."""
    return {
        "address": hexb(address),
        "roles": hexq(roles),
        "names": [role.name for role in Role if role & roles and role.name is not None],
    }


def tx_hash_json(tx_hash: Hash32) -> str:
    """A transaction hash result."""
    return hexb(tx_hash)
