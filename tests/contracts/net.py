"""A throwaway chain for contract tests: eth-tester on py-evm's PragueVM, with the three
registry contracts predeployed exactly as genesis does it (runtime code written into the
genesis state at the fixed addresses, no constructor), then initialised by transactions.

eth-tester is an oracle for contract behaviour here, never a node backend.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth.vm.forks import PragueVM
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from eth_utils import to_canonical_address
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError
from web3.providers.eth_tester import EthereumTesterProvider
from web3.types import TxReceipt

from contracts import PREDEPLOYS, Role, load_artifact

#: Funded accounts in the test genesis (eth-tester keys 1..N). Most are spares for the
#: tests that fill a bounded list (128 updates in a round, 64 candidates).
N_ACCOUNTS = 150

#: Who holds which role in the shared fixture. Names are how tests refer to accounts.
ROLE_PLAN: dict[str, Role] = {
    "admin0": Role.ADMIN,
    "admin1": Role.ADMIN,
    "admin2": Role.ADMIN,
    "miner0": Role.MINER,
    "miner1": Role.MINER,
    "miner2": Role.MINER,
    "miner3": Role.MINER,
    "twin0": Role.TWIN,
    "twin1": Role.TWIN,
    "twin2": Role.TWIN,
    "publisher": Role.PUBLISHER,
    "publisher2": Role.PUBLISHER,
    "auditor": Role.AUDITOR,
    "outsider": Role(0),
}
ADMINS = ("admin0", "admin1", "admin2")
THRESHOLD = 2
COMMITTEE_SIZE = 3
MAX_VOTES = 3
UNSTAKE_DELAY = 5
#: Gas for every test transaction: skips web3's gas estimation (a binary search that
#: re-executes the call ~20 times) and stays under the block gas limit.
GAS = 8_000_000


@dataclass
class TestNet:
    """A web3 handle on the test chain plus named accounts and contract objects."""

    __test__ = False  # not a pytest test class

    w3: Web3
    backend: PyEVMBackend
    accounts: dict[str, str]
    keys: dict[str, bytes]
    contracts: dict[str, Contract] = field(default_factory=dict)

    @property
    def membership(self) -> Contract:
        return self.contracts["Membership"]

    @property
    def registry(self) -> Contract:
        return self.contracts["ModelRegistry"]

    @property
    def election(self) -> Contract:
        return self.contracts["Election"]

    @property
    def chain_id(self) -> int:
        return int(self.w3.eth.chain_id)

    @property
    def block_number(self) -> int:
        """Number of the block the next transaction will be included in."""
        return int(self.w3.eth.block_number) + 1

    def send(self, fn: ContractFunction, sender: str, value: int = 0, gas: int = GAS) -> TxReceipt:
        """Send ``fn`` from the named account and return the (successful) receipt."""
        tx_hash = fn.transact({"from": self.accounts[sender], "value": value, "gas": gas})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        assert receipt["status"] == 1
        return receipt

    def result_of(self, fn: ContractFunction, sender: str, value: int = 0) -> Any:
        """What ``fn`` returns when sent from ``sender`` now, then send it for real."""
        result = fn.call({"from": self.accounts[sender], "value": value})
        self.send(fn, sender, value)
        return result

    def record(self, contract: Contract, getter: str, *args: Any) -> dict[str, Any]:
        """Call a view returning a struct and name its fields after the ABI."""
        (output,) = next(
            item["outputs"]
            for item in contract.abi
            if item.get("type") == "function" and item["name"] == getter
        )
        values = getattr(contract.functions, getter)(*args).call()
        return dict(zip((c["name"] for c in output["components"]), values, strict=True))

    def spares(self, count: int) -> list[str]:
        """Names of ``count`` funded accounts that hold no role in the shared fixture."""
        names = [name for name in self.accounts if name.startswith("spare")]
        assert len(names) >= count
        return names[:count]

    def mine(self, blocks: int) -> None:
        self.w3.testing.mine(blocks)

    @contextmanager
    def isolated(self) -> Iterator[None]:
        """Run a block of code and roll the chain back afterwards."""
        snapshot = self.w3.testing.snapshot()
        try:
            yield
        finally:
            self.w3.testing.revert(snapshot)

    def events(self, receipt: TxReceipt, contract: Contract, name: str) -> list[dict[str, Any]]:
        """Decoded ``name`` events of ``contract`` in ``receipt`` (args only)."""
        event = getattr(contract.events, name)()
        topic = Web3.to_bytes(hexstr=event.topic)
        logs = [log for log in receipt["logs"] if log["address"] == contract.address]
        decoded = []
        for log in logs:
            if bytes(log["topics"][0]) == topic:
                decoded.append(dict(event.process_log(log)["args"]))
        return decoded

    def event(self, receipt: TxReceipt, contract: Contract, name: str) -> dict[str, Any]:
        """The single ``name`` event of ``contract`` in ``receipt``."""
        found = self.events(receipt, contract, name)
        assert len(found) == 1, f"expected one {name} event, got {len(found)}"
        return found[0]

    def deploy_fresh(self, name: str) -> Contract:
        """Deploy an uninitialised copy of contract ``name`` through its constructor."""
        artifact = load_artifact(name)
        factory = self.w3.eth.contract(abi=list(artifact.abi), bytecode=artifact.bytecode)
        tx_hash = factory.constructor().transact({"from": self.accounts["outsider"]})
        address = self.w3.eth.wait_for_transaction_receipt(tx_hash)["contractAddress"]
        return self.w3.eth.contract(address=address, abi=list(artifact.abi))


def assert_reverts(
    net: TestNet, fn: ContractFunction, sender: str, reason: str, value: int = 0
) -> None:
    """Sending ``fn`` from ``sender`` reverts with exactly ``reason``.

    web3 estimates gas before sending, so the revert surfaces there. With the
    eth-tester provider web3 8 raises eth-tester's ``TransactionFailed`` (not
    ``ContractLogicError``); accept both, and compare the whole reason string.
    """
    with pytest.raises((TransactionFailed, ContractLogicError)) as info:
        fn.transact({"from": net.accounts[sender], "value": value})
    error = info.value
    message = error.message if isinstance(error, ContractLogicError) else str(error)
    assert message == f"execution reverted: {reason}"


def build_testnet() -> TestNet:
    """Genesis with funded accounts and the predeployed contracts, then initialise them."""
    state = PyEVMBackend.generate_genesis_state(num_accounts=N_ACCOUNTS)
    for name, address in PREDEPLOYS.items():
        state[to_canonical_address(address)] = {
            "balance": 0,
            "nonce": 1,
            "code": load_artifact(name).runtime_code,
            "storage": {},
        }
    backend = PyEVMBackend(genesis_state=state, vm_configuration=((0, PragueVM),))
    w3 = Web3(EthereumTesterProvider(EthereumTester(backend)))
    keys = [key for key in backend.account_keys][:N_ACCOUNTS]
    names = [*ROLE_PLAN, *(f"spare{i}" for i in range(N_ACCOUNTS - len(ROLE_PLAN)))]
    accounts = {
        name: Web3.to_checksum_address(key.public_key.to_canonical_address())
        for name, key in zip(names, keys, strict=True)
    }
    net = TestNet(
        w3=w3,
        backend=backend,
        accounts=accounts,
        keys={name: key.to_bytes() for name, key in zip(names, keys, strict=True)},
    )
    # Without a default sender, every eth_call makes the eth-tester middleware list (and
    # checksum) all accounts to guess one: ~60 ms a call with this many accounts.
    w3.eth.default_account = accounts["outsider"]
    for name, address in PREDEPLOYS.items():
        net.contracts[name] = w3.eth.contract(address=address, abi=list(load_artifact(name).abi))
    initialize(net)
    return net


def initialize(net: TestNet) -> None:
    """What genesis does after writing the code: call each ``initialize`` once."""
    members = [net.accounts[n] for n, role in ROLE_PLAN.items() if role and n not in ADMINS]
    roles = [int(ROLE_PLAN[n]) for n, role in ROLE_PLAN.items() if role and n not in ADMINS]
    admins = [net.accounts[n] for n in ADMINS]
    net.send(net.membership.functions.initialize(admins, THRESHOLD, members, roles), "outsider")
    net.send(net.registry.functions.initialize(net.membership.address), "outsider")
    net.send(
        net.election.functions.initialize(
            net.membership.address, COMMITTEE_SIZE, MAX_VOTES, UNSTAKE_DELAY
        ),
        "outsider",
    )


def digest(label: str) -> bytes:
    """A deterministic stand-in for the SHA-256 of a blob called ``label``."""
    return hashlib.sha256(label.encode()).digest()
