"""TwinChain's registry contracts: predeploy addresses, role bits, compiled artifacts.

The three contracts are predeployed at genesis: their *runtime* code is written into
state at the fixed addresses below (no constructor runs), then each one's
``initialize(...)`` is called once. The compiled artifacts ship as package data in
``contracts/build/`` and are produced by ``python -m contracts.build``; this module only
reads them, so importing it never needs the Vyper compiler.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from functools import cache
from importlib import resources
from typing import Any, Final

__all__ = [
    "CONTRACT_NAMES",
    "ELECTION_ADDRESS",
    "MEMBERSHIP_ADDRESS",
    "MODEL_REGISTRY_ADDRESS",
    "PREDEPLOYS",
    "ContractArtifact",
    "ProposalAction",
    "Role",
    "RoundStatus",
    "UpdateKind",
    "VersionStatus",
    "load_artifact",
]

#: Predeploy addresses (EIP-55 checksummed; all-digit tails make them all lower case).
MEMBERSHIP_ADDRESS: Final = "0x0000000000000000000000000000000000007c01"
MODEL_REGISTRY_ADDRESS: Final = "0x0000000000000000000000000000000000007c02"
ELECTION_ADDRESS: Final = "0x0000000000000000000000000000000000007c03"

#: Contract name -> predeploy address, in initialisation order (Membership first).
PREDEPLOYS: Final[dict[str, str]] = {
    "Membership": MEMBERSHIP_ADDRESS,
    "ModelRegistry": MODEL_REGISTRY_ADDRESS,
    "Election": ELECTION_ADDRESS,
}

CONTRACT_NAMES: Final = tuple(PREDEPLOYS)


class Role(IntFlag):
    """Role bits held in Membership; an account may hold several."""

    ADMIN = 1
    MINER = 2
    TWIN = 4
    PUBLISHER = 8
    AUDITOR = 16


class ProposalAction(IntEnum):
    """``action`` argument of ``Membership.propose``."""

    GRANT_ROLE = 1
    REVOKE_ROLE = 2
    SET_THRESHOLD = 3
    ADD_ADMIN = 4
    REMOVE_ADMIN = 5


class VersionStatus(IntEnum):
    """``status`` of a model version in ModelRegistry."""

    ACTIVE = 0
    DEPRECATED = 1
    REVOKED = 2


class RoundStatus(IntEnum):
    """``status`` of a federated round in ModelRegistry."""

    OPEN = 0
    CLOSED = 1
    CANCELLED = 2


class UpdateKind(IntEnum):
    """``kind`` of a training update pushed to a round."""

    DENSE = 0
    SPARSE = 1


@dataclass(frozen=True)
class ContractArtifact:
    """One compiled contract as checked in under ``contracts/build/<name>.json``."""

    name: str
    abi: tuple[dict[str, Any], ...]
    bytecode: str
    """Deployment (init) code, 0x-hex: for deploying with a constructor."""
    runtime_bytecode: str
    """Runtime code, 0x-hex: what genesis writes at the predeploy address."""
    source_sha256: str
    vyper_version: str
    evm_version: str

    @property
    def init_code(self) -> bytes:
        """Deployment code as bytes."""
        return bytes.fromhex(self.bytecode.removeprefix("0x"))

    @property
    def runtime_code(self) -> bytes:
        """Runtime code as bytes (the account code of the predeployed contract)."""
        return bytes.fromhex(self.runtime_bytecode.removeprefix("0x"))

    @property
    def address(self) -> str:
        """The predeploy address of this contract."""
        return PREDEPLOYS[self.name]


@cache
def load_artifact(name: str) -> ContractArtifact:
    """Read the checked-in artifact of contract ``name`` (e.g. ``"Membership"``).

    Raises ``KeyError`` for a name that is not one of :data:`CONTRACT_NAMES`.
    """
    if name not in PREDEPLOYS:
        raise KeyError(f"unknown contract {name!r}; expected one of {', '.join(CONTRACT_NAMES)}")
    text = resources.files(__name__).joinpath("build", f"{name}.json").read_text(encoding="utf-8")
    data = json.loads(text)
    return ContractArtifact(
        name=data["name"],
        abi=tuple(data["abi"]),
        bytecode=data["bytecode"],
        runtime_bytecode=data["runtime_bytecode"],
        source_sha256=data["source_sha256"],
        vyper_version=data["vyper_version"],
        evm_version=data["evm_version"],
    )
