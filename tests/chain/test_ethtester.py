"""Our executor against eth-tester (py-evm's reference chain driven through web3): the
same signed registry transactions give the same receipts, the same decoded events and
the same view results.

Block numbers are aligned (contracts log ``block.number``): eth-tester initializes the
predeploys with three transactions (blocks 1-3), our genesis does it with system calls,
so our chain gets three empty blocks first. Then every transaction is alone in its
block on both sides.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eth.vm.forks.prague import PragueVM
from eth_account import Account
from eth_hash.auto import keccak
from eth_tester import EthereumTester, PyEVMBackend
from eth_utils import to_checksum_address
from web3 import Web3
from web3._utils.events import get_event_data
from web3.providers.eth_tester import EthereumTesterProvider

from contracts import load_artifact
from node.chain.executor import Executor
from node.chain.genesis import build_genesis, default_predeploys, parse_genesis
from node.chain.receipt import Receipt
from node.chain.store import ChainStore
from node.chain.types import MEMBERSHIP_ADDRESS, REGISTRY_ADDRESS, Address
from tests.chain.helpers import (
    ADMINS,
    OUTSIDER,
    PUBLISHER,
    VALIDATORS,
    digest,
    genesis_document,
    membership_call,
    registry_call,
    sign,
)

ETH_TESTER_CHAIN_ID = 131277322940537  # fixed by eth-tester's PyEVM backend
INITIALIZER = keccak(b"eth-tester initializer")
FEE = 10 * 10**9  # eth-tester has a base fee; on our chain the tip goes to the proposer


def scenario() -> list[tuple[Any, int, Address, bytes]]:
    """``(sender, nonce, to, calldata)`` of a registry story with a revert in it."""
    p, admin0, admin1, outsider = PUBLISHER, ADMINS[0], ADMINS[1], OUTSIDER
    dataset = registry_call(
        "registerDataset", "imagenet", digest("imagenet"), 10**9, "parquet", digest("meta")
    )

    def model(label: str, parents: list[int]) -> bytes:
        return registry_call(
            "registerModel",
            "resnet",
            digest(label),
            4_000_000,
            "safetensors",
            parents,
            [1],
            digest(label + "/card"),
        )

    return [
        (p, 0, REGISTRY_ADDRESS, dataset),
        (p, 1, REGISTRY_ADDRESS, model("resnet-v1", [])),
        (p, 2, REGISTRY_ADDRESS, model("resnet-v2", [1])),
        (p, 3, REGISTRY_ADDRESS, registry_call("setAlias", "resnet", "production", 2)),
        (outsider, 0, REGISTRY_ADDRESS, model("forged", [])),  # reverts: not a PUBLISHER
        (p, 4, REGISTRY_ADDRESS, registry_call("deprecateVersion", 1, "superseded")),
        (admin0, 0, MEMBERSHIP_ADDRESS, membership_call("propose", 1, outsider.address, 4)),
        (admin1, 0, MEMBERSHIP_ADDRESS, membership_call("approve", 1)),  # executes (k=2)
        (p, 5, REGISTRY_ADDRESS, registry_call("revokeVersion", 2, "poisoned")),
        (p, 6, REGISTRY_ADDRESS, model("resnet-v2", [1])),  # reverts: digest taken
    ]


VIEWS: list[tuple[str, Address, str, tuple[Any, ...]]] = [
    ("ModelRegistry", REGISTRY_ADDRESS, "latest", ("resnet",)),
    ("ModelRegistry", REGISTRY_ADDRESS, "getVersion", (1,)),
    ("ModelRegistry", REGISTRY_ADDRESS, "getVersion", (2,)),
    ("ModelRegistry", REGISTRY_ADDRESS, "getDataset", (1,)),
    ("ModelRegistry", REGISTRY_ADDRESS, "aliasOf", ("resnet", "production")),
    ("ModelRegistry", REGISTRY_ADDRESS, "modelVersions", ("resnet",)),
    ("ModelRegistry", REGISTRY_ADDRESS, "versionIdByDigest", (digest("resnet-v1"),)),
    ("Membership", MEMBERSHIP_ADDRESS, "rolesOf", (OUTSIDER.address,)),
    ("Membership", MEMBERSHIP_ADDRESS, "getProposal", (1,)),
    ("Membership", MEMBERSHIP_ADDRESS, "minersList", ()),
]


def reference_chain(predeploys: list[Any], balances: dict[Address, int]) -> Web3:
    state: dict[bytes, dict[str, Any]] = {
        address: {"balance": wei, "nonce": 0, "code": b"", "storage": {}}
        for address, wei in balances.items()
    }
    initializer = bytes.fromhex(Account.from_key(INITIALIZER).address[2:])
    state[initializer] = {"balance": 10**24, "nonce": 0, "code": b"", "storage": {}}
    for contract in predeploys:
        state[contract.address] = {
            "balance": 0,
            "nonce": 1,
            "code": contract.runtime_code,
            "storage": {},
        }
    backend = PyEVMBackend(genesis_state=state, vm_configuration=((0, PragueVM),))
    w3 = Web3(EthereumTesterProvider(EthereumTester(backend)))
    for nonce, contract in enumerate(predeploys):
        tx = {
            "type": 2,
            "chainId": ETH_TESTER_CHAIN_ID,
            "nonce": nonce,
            "gas": 29_000_000,
            "maxFeePerGas": FEE,
            "maxPriorityFeePerGas": 10**9,
            "value": 0,
            "to": to_checksum_address(contract.address),
            "data": contract.init_calldata,
        }
        raw = Account.sign_transaction(tx, INITIALIZER).raw_transaction
        receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(raw))
        assert receipt["status"] == 1, contract.name
    assert w3.eth.block_number == 3
    return w3


def events_of(name: str) -> dict[bytes, Any]:
    return {
        keccak(f"{e['name']}({','.join(i['type'] for i in e['inputs'])})".encode()): e
        for e in load_artifact(name).abi
        if e["type"] == "event"
    }


EVENTS = {**events_of("ModelRegistry"), **events_of("Membership")}


def decode_log(w3: Web3, address: bytes, topics: list[bytes], data: bytes) -> tuple[str, Any]:
    event = EVENTS[topics[0]]
    entry = {
        "address": to_checksum_address(address),
        "topics": topics,
        "data": data,
        "logIndex": 0,
        "transactionIndex": 0,
        "transactionHash": b"\x00" * 32,
        "blockHash": b"\x00" * 32,
        "blockNumber": 0,
    }
    return event["name"], dict(get_event_data(w3.codec, event, entry)["args"])  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def both_sides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    doc = genesis_document(chain_id=ETH_TESTER_CHAIN_ID)
    config = parse_genesis(doc)
    predeploys = default_predeploys(config)
    w3 = reference_chain(predeploys, dict(config.balances))
    store = ChainStore.open(
        Path(tmp_path_factory.mktemp("ours")) / "chain.db", build_genesis(config, predeploys)
    )
    executor = Executor(store)
    for _ in range(3):
        head = store.head()
        executor.commit(
            executor.build_block(
                head,
                [],
                timestamp=head.timestamp + 1,
                proposer=VALIDATORS[0].address,
                epoch=0,
                validator_set_hash=config.validator_set_hash,
            ),
            b"",
        )
    ours: list[Receipt] = []
    theirs: list[Any] = []
    for sender, nonce, to, data in scenario():
        raw = sign(sender, nonce, to, data, gas=3_000_000, chain_id=ETH_TESTER_CHAIN_ID, price=FEE)
        head = store.head()
        result = executor.build_block(
            head,
            [raw],
            timestamp=head.timestamp + 1,
            proposer=VALIDATORS[0].address,
            epoch=0,
            validator_set_hash=config.validator_set_hash,
        )
        assert result.rejected == ()
        executor.commit(result, b"")
        ours.append(result.receipts[0])
        tx_hash = w3.eth.send_raw_transaction(raw)
        theirs.append(w3.eth.wait_for_transaction_receipt(tx_hash))
        assert theirs[-1]["blockNumber"] == result.header.height
    yield {"w3": w3, "executor": executor, "ours": ours, "theirs": theirs}
    store.close()


def test_receipts_match_eth_tester(both_sides: dict[str, Any]) -> None:
    ours, theirs = both_sides["ours"], both_sides["theirs"]
    assert [r.status for r in ours] == [t["status"] for t in theirs]
    assert [r.status for r in ours].count(0) == 2
    assert [r.gas_used for r in ours] == [t["gasUsed"] for t in theirs]
    assert [r.tx_hash for r in ours] == [bytes(t["transactionHash"]) for t in theirs]


def test_logs_and_decoded_events_match_eth_tester(both_sides: dict[str, Any]) -> None:
    w3 = both_sides["w3"]
    names = []
    for mine, reference in zip(both_sides["ours"], both_sides["theirs"], strict=True):
        their_logs = [
            (
                bytes.fromhex(log["address"][2:]),
                [bytes(t) for t in log["topics"]],
                bytes(log["data"]),
            )
            for log in reference["logs"]
        ]
        my_logs = [(log.address, list(log.topics), log.data) for log in mine.logs]
        assert my_logs == their_logs
        for address, topics, data in my_logs:
            names.append(decode_log(w3, address, topics, data)[0])
    assert {
        "DatasetRegistered",
        "ModelVersionRegistered",
        "AliasMoved",
        "VersionDeprecated",
        "ProposalCreated",
        "RoleGranted",
        "VersionRevoked",
    } <= set(names)


@pytest.mark.parametrize(
    ("contract", "address", "function", "args"), VIEWS, ids=[f"{v[2]}{v[3]}" for v in VIEWS]
)
def test_view_results_match_eth_tester(
    both_sides: dict[str, Any],
    contract: str,
    address: Address,
    function: str,
    args: tuple[Any, ...],
) -> None:
    w3, executor = both_sides["w3"], both_sides["executor"]
    handle = w3.eth.contract(
        address=to_checksum_address(address), abi=list(load_artifact(contract).abi)
    )
    web3_args = [
        to_checksum_address(a) if isinstance(a, bytes) and len(a) == 20 else a for a in args
    ]
    fn = getattr(handle.functions, function)(*web3_args)
    expected = fn.call({"from": PUBLISHER.checksum})
    calldata = bytes.fromhex(fn._encode_transaction_data()[2:])
    output = executor.call(address, calldata)
    abi = fn.abi
    decoded = w3.codec.decode([_type(o) for o in abi["outputs"]], output)
    ours = decoded[0] if len(decoded) == 1 else list(decoded)
    assert _plain(ours) == _plain(expected)


def _type(output: dict[str, Any]) -> str:
    if output["type"] == "tuple":
        return "(" + ",".join(_type(c) for c in output["components"]) + ")"
    return str(output["type"])


def _plain(value: Any) -> Any:
    """Normalize web3's and eth_abi's decodings (checksum vs lower-case addresses,
    tuples vs lists) so equal values compare equal."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return value.lower()
    return value
