"""Shared helpers for the chain tests: deterministic keys, genesis, transaction signing."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from contracts import load_artifact
from node.chain.block import Header
from node.chain.executor import ExecutionResult, Executor
from node.chain.genesis import Genesis, GenesisState, build_genesis, parse_genesis
from node.chain.types import REGISTRY_ADDRESS, ZERO_HASH, Address, Hash32

CHAIN_ID = 7311
GAS_LIMIT = 30_000_000


@dataclass(frozen=True)
class Key:
    """A deterministic test account."""

    private: bytes

    @cached_property
    def address(self) -> Address:
        return Address(bytes.fromhex(Account.from_key(self.private).address[2:]))

    @property
    def hex(self) -> str:
        return "0x" + self.address.hex()

    @property
    def checksum(self) -> str:
        return to_checksum_address(self.address)


def key(label: str) -> Key:
    """The test key named ``label`` (same in every process)."""
    return Key(keccak(b"twinchain test key " + label.encode()))


VALIDATORS = [key(f"validator{i}") for i in range(4)]
ADMINS = [key(f"admin{i}") for i in range(3)]
PUBLISHER = key("publisher")
TWIN = key("twin")
AUDITOR = key("auditor")
OUTSIDER = key("outsider")  # funded, no role
SENDERS = [key(f"sender{i}") for i in range(8)]  # PUBLISHER + TWIN


def genesis_document(**overrides: Any) -> dict[str, Any]:
    """A valid genesis.json document; keyword arguments replace top-level keys."""
    funded = [*VALIDATORS, *ADMINS, PUBLISHER, TWIN, AUDITOR, OUTSIDER, *SENDERS]
    doc: dict[str, Any] = {
        "chain_id": CHAIN_ID,
        "timestamp": 1_767_225_600,
        "gas_limit": GAS_LIMIT,
        "consensus": {
            "engine": "pbft",
            "epoch_length": 100,
            "checkpoint_interval": 10,
            "committee_size": 4,
            "max_votes": 3,
            "unstake_delay": 50,
            "timeouts": {"request": 20, "view_change": 40},
        },
        "validators": [k.hex for k in VALIDATORS],
        "admins": [k.hex for k in ADMINS],
        "admin_threshold": 2,
        "roles": {
            PUBLISHER.hex: ["PUBLISHER"],
            TWIN.hex: ["TWIN"],
            AUDITOR.hex: ["AUDITOR"],
            **{k.hex: ["PUBLISHER", "TWIN"] for k in SENDERS},
        },
        "balances": {k.hex: str(10**24) for k in funded},
    }
    doc.update(overrides)
    return doc


def genesis_config(**overrides: Any) -> Genesis:
    return parse_genesis(genesis_document(**overrides))


_BUILT: dict[bool, GenesisState] = {}


def genesis_state(with_contracts: bool = True) -> GenesisState:
    """The built test genesis (cached per process: building it runs the EVM)."""
    if with_contracts not in _BUILT:
        config = genesis_config()
        _BUILT[with_contracts] = build_genesis(config, None if with_contracts else ())
    return _BUILT[with_contracts]


def sign(
    sender: Key,
    nonce: int,
    to: Address | None,
    data: bytes = b"",
    *,
    value: int = 0,
    gas: int = 1_000_000,
    chain_id: int = CHAIN_ID,
    tx_type: int = 2,
    price: int = 0,
) -> bytes:
    """A raw signed transaction (EIP-1559 by default, zero fees)."""
    tx: dict[str, Any] = {
        "nonce": nonce,
        "gas": gas,
        "value": value,
        "data": data,
        "chainId": chain_id,
    }
    if to is not None:
        tx["to"] = to_checksum_address(to)
    if tx_type == 2:
        tx.update(type=2, maxFeePerGas=price, maxPriorityFeePerGas=price)
    elif tx_type == 1:
        tx.update(type=1, gasPrice=price, accessList=[])
    else:
        tx["gasPrice"] = price
    return bytes(Account.sign_transaction(tx, sender.private).raw_transaction)


def transfer(sender: Key, nonce: int, to: Key, value: int = 1, **kwargs: Any) -> bytes:
    """A plain value transfer."""
    kwargs.setdefault("gas", 21_000)
    return sign(sender, nonce, to.address, value=value, **kwargs)


BUILD_ARGS: dict[str, Any] = {
    "proposer": VALIDATORS[0].address,
    "epoch": 0,
    "validator_set_hash": ZERO_HASH,
}


def vset_hash() -> Hash32:
    return genesis_state().config.validator_set_hash


def produce(
    executor: Executor,
    txs: list[bytes],
    *,
    parent: Header | None = None,
    commit: bool = True,
    seal: bytes = b"seal",
) -> ExecutionResult:
    """Build a block on ``parent`` (default: head) one second later; commit it unless
    told not to. Asserts nothing was rejected."""
    parent = parent or executor.store.head()
    result = executor.build_block(parent, txs, timestamp=parent.timestamp + 1, **BUILD_ARGS)
    assert result.rejected == ()
    if commit:
        executor.commit(result, seal)
    return result


def registry_call(function: str, *args: Any) -> bytes:
    """Calldata for a ModelRegistry function."""
    return _encode("ModelRegistry", function, args)


def membership_call(function: str, *args: Any) -> bytes:
    """Calldata for a Membership function."""
    return _encode("Membership", function, args)


def _encode(name: str, function: str, args: tuple[Any, ...]) -> bytes:
    (abi,) = [
        f for f in load_artifact(name).abi if f["type"] == "function" and f["name"] == function
    ]
    types = [i["type"] for i in abi["inputs"]]
    selector = keccak(f"{function}({','.join(types)})".encode())[:4]
    return bytes(selector) + abi_encode(types, list(args))


def digest(label: str) -> bytes:
    """Stand-in SHA-256 of a blob called ``label``."""
    return hashlib.sha256(label.encode()).digest()


def register_model(
    sender: Key, nonce: int, name: str, label: str, parents: list[int] | None = None, **kwargs: Any
) -> bytes:
    """A signed ModelRegistry.registerModel transaction."""
    data = registry_call(
        "registerModel",
        name,
        digest(label),
        1234,
        "safetensors",
        parents or [],
        [],
        digest(label + "/meta"),
    )
    return sign(sender, nonce, REGISTRY_ADDRESS, data, **kwargs)
