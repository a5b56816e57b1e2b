"""Gas used by every state-changing function of the registry contracts.

Deploys the three contracts on eth-tester (py-evm PragueVM) exactly as genesis does
(runtime code at the predeploy addresses, then ``initialize``), drives one scenario that
calls every state-changing function, and prints a Markdown table of the gas each
transaction used, followed by the machine it ran on. A few views the node calls often
are listed too (gas of an ``eth_call``, which is free but bounded by the call gas cap).

    python bench/gas.py

Gas is deterministic for a given compiler and fork; the figures are copied into
``bench/README.md`` under "Gas per contract function".
"""

from __future__ import annotations

import datetime
import hashlib
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import coincurve
import vyper
from eth.vm.forks import PragueVM
from eth_hash.auto import keccak
from eth_tester import EthereumTester, PyEVMBackend
from eth_utils import to_canonical_address, to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.providers.eth_tester import EthereumTesterProvider

from contracts import PREDEPLOYS, ProposalAction, Role, load_artifact

N_ACCOUNTS = 48
N_TWINS = 34
NO_META = b"\x00" * 32
ZERO = "0x0000000000000000000000000000000000000000"


@dataclass(frozen=True)
class GasRow:
    """One measured call."""

    contract: str
    function: str
    scenario: str
    gas: int


class GasBench:
    """A fresh chain with the predeployed contracts and named accounts."""

    def __init__(self) -> None:
        state = PyEVMBackend.generate_genesis_state(num_accounts=N_ACCOUNTS)
        for name, address in PREDEPLOYS.items():
            state[to_canonical_address(address)] = {
                "balance": 0,
                "nonce": 1,
                "code": load_artifact(name).runtime_code,
                "storage": {},
            }
        backend = PyEVMBackend(genesis_state=state, vm_configuration=((0, PragueVM),))
        self.w3 = Web3(EthereumTesterProvider(EthereumTester(backend)))
        keys = list(backend.account_keys)[:N_ACCOUNTS]
        names = ["admin0", "admin1", "admin2", "miner0", "miner1", "miner2", "miner3"]
        names += ["publisher", "outsider", *(f"twin{i}" for i in range(N_TWINS))]
        names += [f"spare{i}" for i in range(N_ACCOUNTS - len(names))]
        self.keys = {n: k.to_bytes() for n, k in zip(names, keys, strict=True)}
        self.accounts = {
            n: to_checksum_address(k.public_key.to_canonical_address())
            for n, k in zip(names, keys, strict=True)
        }
        self.w3.eth.default_account = self.accounts["outsider"]
        self.c: dict[str, Contract] = {
            name: self.w3.eth.contract(address=address, abi=list(load_artifact(name).abi))
            for name, address in PREDEPLOYS.items()
        }
        self.rows: list[GasRow] = []

    def tx(
        self,
        contract: str,
        fn: ContractFunction,
        sender: str,
        scenario: str | None,
        value: int = 0,
    ) -> Any:
        """Send ``fn`` and return what it returned; record its gas unless scenario is None."""
        params = {"from": self.accounts[sender], "value": value, "gas": 29_000_000}
        result = fn.call(params)
        receipt = self.w3.eth.wait_for_transaction_receipt(fn.transact(params))
        assert receipt["status"] == 1, f"{fn.fn_name} failed"
        if scenario is not None:
            self.rows.append(GasRow(contract, fn.fn_name, scenario, int(receipt["gasUsed"])))
        return result

    def view(self, contract: str, fn: ContractFunction, scenario: str) -> None:
        """Record the gas an ``eth_call`` of ``fn`` costs (21,000 intrinsic included)."""
        gas = int(
            self.w3.eth.estimate_gas({"to": fn.address, "data": fn._encode_transaction_data()})
        )
        self.rows.append(GasRow(contract, f"{fn.fn_name} (view)", scenario, gas))

    def a(self, name: str) -> str:
        return self.accounts[name]


def digest(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def membership(b: GasBench) -> None:
    m = b.c["Membership"].functions
    twins = [f"twin{i}" for i in range(N_TWINS)]
    members = ["miner0", "miner1", "miner2", "miner3", "publisher", *twins]
    roles = [2, 2, 2, 2, int(Role.PUBLISHER), *([int(Role.TWIN)] * N_TWINS)]
    b.tx(
        "Membership",
        m.initialize(
            [b.a("admin0"), b.a("admin1"), b.a("admin2")], 2, [b.a(x) for x in members], roles
        ),
        "outsider",
        f"3 admins, {len(members)} members",
    )
    grant, revoke = int(ProposalAction.GRANT_ROLE), int(ProposalAction.REVOKE_ROLE)
    pid = b.tx("Membership", m.propose(grant, b.a("spare0"), 4), "admin0", "GRANT_ROLE, 1 of 2")
    b.tx("Membership", m.approve(pid), "admin1", "2 of 2: executes GRANT_ROLE (new member)")
    pid = b.tx("Membership", m.propose(grant, b.a("spare1"), 2), "admin0", "GRANT_ROLE MINER")
    b.tx("Membership", m.approve(pid), "admin1", "executes GRANT_ROLE MINER")
    pid = b.tx("Membership", m.propose(revoke, b.a("miner1"), 2), "admin0", "REVOKE_ROLE MINER")
    b.tx("Membership", m.approve(pid), "admin1", "executes REVOKE_ROLE (unlists member)")
    pid = b.tx("Membership", m.propose(3, ZERO, 3), "admin0", "SET_THRESHOLD")
    b.tx("Membership", m.approve(pid), "admin1", "executes SET_THRESHOLD")
    pid = b.tx("Membership", m.propose(4, b.a("spare2"), 0), "admin0", "ADD_ADMIN, 1 of 3")
    b.tx("Membership", m.approve(pid), "admin1", "2 of 3: pending")
    b.tx("Membership", m.approve(pid), "admin2", "3 of 3: executes ADD_ADMIN")
    pid = b.tx("Membership", m.propose(3, ZERO, 2), "admin0", "SET_THRESHOLD")
    b.tx("Membership", m.approve(pid), "admin1", "2 of 3: pending")
    b.tx("Membership", m.approve(pid), "admin2", "3 of 3: executes SET_THRESHOLD")
    pid = b.tx("Membership", m.propose(5, b.a("spare2"), 0), "admin0", "REMOVE_ADMIN")
    b.tx("Membership", m.approve(pid), "admin1", "executes REMOVE_ADMIN")
    b.view("Membership", m.minersList(), "4 miners")
    b.view("Membership", m.hasRole(b.a("twin0"), 4), "")


def registry(b: GasBench) -> None:
    r = b.c["ModelRegistry"].functions
    b.tx("ModelRegistry", r.initialize(b.c["Membership"].address), "outsider", "")
    d1 = b.tx(
        "ModelRegistry",
        r.registerDataset("cifar10", digest("d1"), 10**8, "application/x-tar", digest("card")),
        "publisher",
        "first version of a name",
    )
    d2 = b.tx(
        "ModelRegistry",
        r.registerDataset("cifar10", digest("d2"), 10**8, "application/x-tar", digest("card")),
        "twin0",
        "next version, by a TWIN",
    )
    v1 = b.tx(
        "ModelRegistry",
        r.registerModel("resnet18", digest("m1"), 44 * 10**6, "safetensors", [], [], NO_META),
        "publisher",
        "new model, no lineage",
    )
    v2 = b.tx(
        "ModelRegistry",
        r.registerModel(
            "resnet18", digest("m2"), 44 * 10**6, "safetensors", [v1], [d1, d2], digest("card")
        ),
        "publisher",
        "1 parent, 2 datasets",
    )
    v3 = b.tx(
        "ModelRegistry",
        r.registerModel(
            "resnet18", digest("m3"), 44 * 10**6, "safetensors", [v1, v2], [d1], NO_META
        ),
        "publisher",
        "2 parents, 1 dataset",
    )
    b.tx("ModelRegistry", r.setAlias("resnet18", "production", v2), "publisher", "new alias")
    b.tx("ModelRegistry", r.setAlias("resnet18", "production", v3), "publisher", "move alias")
    b.tx("ModelRegistry", r.setAlias("resnet18", "staging", v2), "publisher", "second alias")
    b.tx("ModelRegistry", r.clearAlias("resnet18", "staging"), "publisher", "")
    b.tx("ModelRegistry", r.deprecateVersion(v1, "superseded by v2"), "publisher", "")
    b.tx("ModelRegistry", r.revokeVersion(v3, "backdoor found"), "publisher", "clears 1 alias")
    height = int(b.w3.eth.block_number)
    round_id = b.tx("ModelRegistry", r.openRound("resnet18", v2, 2, height + 200), "publisher", "")
    update_ids = [
        b.tx(
            "ModelRegistry",
            r.pushUpdate(round_id, digest(f"u{i}"), 10**6, 500, i % 2, digest(f"metrics{i}")),
            f"twin{i}",
            "first of the round" if i == 0 else None,
        )
        for i in range(2)
    ]
    b.tx(
        "ModelRegistry",
        r.closeRound(round_id, "fedavg", update_ids, digest("agg1"), 44 * 10**6),
        "miner0",
        "2 updates included",
    )
    big_round = b.tx("ModelRegistry", r.openRound("resnet18", v2, 1, height + 400), "miner0", None)
    many = [
        b.tx(
            "ModelRegistry",
            r.pushUpdate(big_round, digest(f"w{i}"), 10**6, 500, 1, NO_META),
            f"twin{i}",
            "32nd of the round" if i == 31 else None,
        )
        for i in range(32)
    ]
    b.tx(
        "ModelRegistry",
        r.closeRound(big_round, "trimmed-mean", many, digest("agg2"), 44 * 10**6),
        "miner0",
        "32 updates included",
    )
    dead = b.tx("ModelRegistry", r.openRound("resnet18", v2, 3, height + 400), "publisher", None)
    b.tx("ModelRegistry", r.cancelRound(dead, "base under review"), "publisher", "")
    b.view("ModelRegistry", r.latest("resnet18"), "newest of 5 is live")
    b.view("ModelRegistry", r.getVersion(v2), "1 parent, 2 datasets")


def sighash(chain_id: int, kind: int, height: int, rnd: int, dig: bytes, payload: bytes) -> bytes:
    domain = keccak(b"TwinChain consensus message v1")
    words = b"".join(x.to_bytes(32, "big") for x in (chain_id, 1, kind, height, rnd))
    return keccak(domain + words + dig + payload)


def election(b: GasBench) -> None:
    e = b.c["Election"].functions
    b.tx(
        "Election",
        e.initialize(b.c["Membership"].address, 3, 3, 10),
        "outsider",
        "size 3, delay 10",
    )
    for i, miner in enumerate(["miner0", "miner2", "miner3", "spare1"]):
        b.tx("Election", e.registerCandidate(), miner, "" if i == 0 else None)
    cands = [b.a(x) for x in ("miner0", "miner2", "miner3")]
    b.tx("Election", e.stake(), "twin0", "first stake, no votes", value=10**18)
    b.tx("Election", e.vote(cands), "twin0", "3 candidates, first vote")
    b.tx("Election", e.vote(list(reversed(cands))), "twin0", "re-vote replacing 3")
    b.tx("Election", e.stake(), "twin0", "top-up with 3 votes", value=10**17)
    b.tx("Election", e.requestUnstake(10**17), "twin0", "with 3 votes")
    b.w3.testing.mine(10)
    b.tx("Election", e.withdraw(), "twin0", "")
    chain_id = int(b.w3.eth.chain_id)
    key = coincurve.PrivateKey(b.keys["miner3"])
    da, db, pa, pb = (keccak(x) for x in (b"a", b"b", b"pa", b"pb"))
    sig_a = key.sign_recoverable(sighash(chain_id, 2, 9, 0, da, pa), hasher=None)
    sig_b = key.sign_recoverable(sighash(chain_id, 2, 9, 0, db, pb), hasher=None)
    b.tx(
        "Election",
        e.jail(b.a("miner3"), 1, 2, 9, 0, da, pa, sig_a, db, pb, sig_b),
        "twin1",
        "2 ecrecovers",
    )
    b.view("Election", e.committee(), "4 candidates, 1 jailed")


def render(rows: list[GasRow]) -> str:
    """The Markdown table."""
    lines = ["| contract | function | scenario | gas |", "|---|---|---|---:|"]
    lines += [f"| {r.contract} | `{r.function}` | {r.scenario} | {r.gas:,} |" for r in rows]
    return "\n".join(lines)


def machine_line() -> str:
    """Date, architecture and the versions that determine the figures."""
    import eth

    today = datetime.date.today().isoformat()
    return (
        f"{today}, {platform.machine()}, Python {platform.python_version()}, "
        f"vyper {vyper.__version__} (evm_version prague), py-evm {eth.__version__} (PragueVM)"
    )


def main() -> int:
    """Run the scenario and print the table and the machine line."""
    bench = GasBench()
    membership(bench)
    registry(bench)
    election(bench)
    print(render(bench.rows))
    print()
    print(machine_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
