"""Genesis: the network's founding document and the block-0 state built from it.

``genesis.json`` (every key is checked; unknown keys are errors, because a typo in a
founding document must not pass silently)::

    {
      "chain_id": 7311,                       # EIP-155 chain id, 1 .. 2**63-1
      "timestamp": 1767225600,                # seconds, default 0
      "gas_limit": 30000000,                  # fixed block gas limit, default 30M
      "consensus": {
        "engine": "pbft",                     # "pbft" | "dpos"
        "epoch_length": 100,                  # blocks per epoch (validator-set period)
        "checkpoint_interval": 10,            # PBFT checkpoint period, in blocks
        "committee_size": 4,                  # DPoS delegates (Election), default n
        "max_votes": 4,                       # Election: candidates one voter may back
        "unstake_delay": 100,                 # Election: blocks before stake is free
        "timeouts": {"request": 20, "view_change": 40}   # name -> ticks, open set
      },
      "validators": ["0x…", …],               # ordered; get MINER; 1..64
      "admins": ["0x…", …],                   # get ADMIN; 1..32
      "admin_threshold": 2,                   # k of the k-of-n admin approvals
      "roles": {"0x…": ["PUBLISHER", "TWIN"]},# extra roles (TWIN, PUBLISHER, AUDITOR)
      "balances": {"0x…": "1000000000000000000"}   # wei: int, decimal or 0x string
    }

The genesis state holds the balances, the runtime code of the three predeployed
contracts at their fixed addresses, and the effect of their ``initialize`` calls, run as
system messages (:func:`node.chain.evm.system_call`). Everything is deterministic, so
every process computes the same genesis hash.

The genesis header's ``parent_hash`` is ``keccak`` of the canonical JSON of the whole
document (:meth:`Genesis.config_hash`): two networks that differ only in a consensus
timeout have different genesis hashes, and nodes of one refuse the other's blocks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from eth_abi.abi import encode as abi_encode
from eth_hash.auto import keccak

from node.chain.block import EMPTY_BLOOM, Block, Header
from node.chain.evm import ExecutionDB, open_state, system_call
from node.chain.types import (
    ELECTION_ADDRESS,
    EMPTY_ROOT,
    MEMBERSHIP_ADDRESS,
    PREDEPLOYS,
    REGISTRY_ADDRESS,
    ZERO_ADDRESS,
    Address,
    Hash32,
    Role,
    parse_address,
    validator_set_hash,
)
from node.errors import InvalidInput

__all__ = [
    "ConsensusParams",
    "Genesis",
    "GenesisState",
    "Predeploy",
    "build_genesis",
    "default_predeploys",
    "load_genesis",
    "parse_genesis",
]

ENGINES: Final = ("pbft", "dpos")
MAX_VALIDATORS: Final = 64  # Membership.MAX_MINERS
MAX_ADMINS: Final = 32  # Membership.MAX_ADMINS
MAX_MEMBERS: Final = 256  # Membership.MAX_MEMBERS
_U256_MAX: Final = 2**256 - 1
_I64_MAX: Final = 2**63 - 1
_TOP_KEYS: Final = frozenset(
    {
        "chain_id",
        "timestamp",
        "gas_limit",
        "consensus",
        "validators",
        "admins",
        "admin_threshold",
        "roles",
        "balances",
    }
)
_CONSENSUS_KEYS: Final = frozenset(
    {
        "engine",
        "epoch_length",
        "checkpoint_interval",
        "committee_size",
        "max_votes",
        "unstake_delay",
        "timeouts",
    }
)
# Roles a genesis may grant through "roles"; ADMIN and MINER come from "admins" and
# "validators" so that the admin list and the ordered validator set stay explicit.
_GRANTABLE: Final = Role.TWIN | Role.PUBLISHER | Role.AUDITOR


@dataclass(frozen=True)
class ConsensusParams:
    """Consensus parameters fixed at genesis."""

    engine: str
    epoch_length: int
    checkpoint_interval: int
    committee_size: int
    max_votes: int
    unstake_delay: int
    timeouts: tuple[tuple[str, int], ...]  # sorted (name, ticks)

    def timeout(self, name: str, default: int) -> int:
        """Timeout ``name`` in ticks, or ``default`` when genesis does not set it."""
        return dict(self.timeouts).get(name, default)


@dataclass(frozen=True)
class Genesis:
    """A validated genesis document (see the module docstring for the JSON form)."""

    chain_id: int
    timestamp: int
    gas_limit: int
    consensus: ConsensusParams
    validators: tuple[Address, ...]
    admins: tuple[Address, ...]
    admin_threshold: int
    roles: tuple[tuple[Address, int], ...]  # sorted; bits from "roles" only
    balances: tuple[tuple[Address, int], ...]  # sorted

    @property
    def validator_set_hash(self) -> Hash32:
        """Hash of the genesis validator set (epoch 0)."""
        return validator_set_hash(self.validators)

    def member_roles(self) -> list[tuple[Address, int]]:
        """The ``(member, role bits)`` list passed to ``Membership.initialize``.

        Validators first, in genesis order, because Membership lists miners in insertion
        order and that list is the PBFT validator set; then the other role holders,
        sorted. ADMIN bits travel separately (the ``admins`` argument).
        """
        extra = dict(self.roles)
        members = [(v, int(Role.MINER) | extra.pop(v, 0)) for v in self.validators]
        members += sorted(extra.items())
        return members

    def to_json(self) -> dict[str, Any]:
        """Canonical JSON form (parses back to an equal :class:`Genesis`)."""
        c = self.consensus
        return {
            "chain_id": self.chain_id,
            "timestamp": self.timestamp,
            "gas_limit": self.gas_limit,
            "consensus": {
                "engine": c.engine,
                "epoch_length": c.epoch_length,
                "checkpoint_interval": c.checkpoint_interval,
                "committee_size": c.committee_size,
                "max_votes": c.max_votes,
                "unstake_delay": c.unstake_delay,
                "timeouts": dict(c.timeouts),
            },
            "validators": [_hex(v) for v in self.validators],
            "admins": [_hex(a) for a in self.admins],
            "admin_threshold": self.admin_threshold,
            "roles": {_hex(a): _role_names(bits) for a, bits in self.roles},
            "balances": {_hex(a): str(wei) for a, wei in self.balances},
        }

    def config_hash(self) -> Hash32:
        """keccak of the canonical JSON (the genesis header's parent hash)."""
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return Hash32(keccak(text.encode()))


@dataclass(frozen=True)
class Predeploy:
    """A contract whose runtime code is written into genesis state, then initialized."""

    name: str
    address: Address
    runtime_code: bytes
    init_calldata: bytes | None


@dataclass(frozen=True)
class GenesisState:
    """Block 0 and the state nodes it needs (committed with it by the store)."""

    config: Genesis
    block: Block
    state_writes: Mapping[bytes, bytes]

    @property
    def header(self) -> Header:
        """The genesis header."""
        return self.block.header


# ---------------------------------------------------------------- loading


def load_genesis(path: str | Path) -> Genesis:
    """Read and validate ``genesis.json``; raises InvalidInput naming the bad field."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read genesis file {path}: {exc.strerror}") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"genesis file {path} is not JSON: {exc}") from exc
    return parse_genesis(document)


def parse_genesis(document: object) -> Genesis:
    """Validate a parsed genesis document; raises InvalidInput naming the bad field."""
    doc = _object(document, "genesis", _TOP_KEYS)
    for key in ("chain_id", "validators", "admins"):
        if key not in doc:
            raise InvalidInput(f"genesis.{key}: required")
    validators = _address_list(doc["validators"], "genesis.validators", MAX_VALIDATORS)
    admins = _address_list(doc["admins"], "genesis.admins", MAX_ADMINS)
    threshold = _int(doc.get("admin_threshold", 1), "genesis.admin_threshold", 1, len(admins))
    roles = _roles(doc.get("roles", {}), set(validators), set(admins))
    genesis = Genesis(
        chain_id=_int(doc["chain_id"], "genesis.chain_id", 1, _I64_MAX),
        timestamp=_int(doc.get("timestamp", 0), "genesis.timestamp", 0, _I64_MAX),
        gas_limit=_int(doc.get("gas_limit", 30_000_000), "genesis.gas_limit", 21_000, _I64_MAX),
        consensus=_consensus(doc.get("consensus", {}), len(validators)),
        validators=validators,
        admins=admins,
        admin_threshold=threshold,
        roles=roles,
        balances=_balances(doc.get("balances", {})),
    )
    member_count = len(genesis.member_roles())
    if member_count > MAX_MEMBERS:
        raise InvalidInput(f"genesis: {member_count} members, at most {MAX_MEMBERS}")
    return genesis


def _object(value: object, path: str, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(f"{path}: expected an object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InvalidInput(f"{path}: unknown key {unknown[0]!r}")
    return value


def _int(value: object, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{path}: expected an integer, got {value!r}")
    if not low <= value <= high:
        raise InvalidInput(f"{path}: {value} is outside {low}..{high}")
    return value


def _address_list(value: object, path: str, limit: int) -> tuple[Address, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidInput(f"{path}: expected a non-empty list of addresses")
    if len(value) > limit:
        raise InvalidInput(f"{path}: {len(value)} entries, at most {limit}")
    addresses = tuple(parse_address(v, f"{path}[{i}]") for i, v in enumerate(value))
    if ZERO_ADDRESS in addresses:
        raise InvalidInput(f"{path}: the zero address cannot hold a role")
    if len(set(addresses)) != len(addresses):
        raise InvalidInput(f"{path}: duplicate address")
    return addresses


def _roles(
    value: object, validators: set[Address], admins: set[Address]
) -> tuple[tuple[Address, int], ...]:
    if not isinstance(value, dict):
        raise InvalidInput("genesis.roles: expected an object {address: [role names]}")
    roles: dict[Address, int] = {}
    for key, names in value.items():
        path = f"genesis.roles[{key!r}]"
        address = parse_address(key, path)
        if address == ZERO_ADDRESS:
            raise InvalidInput(f"{path}: the zero address cannot hold a role")
        if address in roles:
            raise InvalidInput(f"{path}: address listed twice")
        if not isinstance(names, list) or not names:
            raise InvalidInput(f"{path}: expected a non-empty list of role names")
        bits = 0
        for name in names:
            role = Role.__members__.get(str(name).upper())
            if role is None:
                raise InvalidInput(f"{path}: unknown role {name!r}")
            if role == Role.MINER and address not in validators:
                raise InvalidInput(f"{path}: MINER is granted by listing in 'validators'")
            if role == Role.ADMIN and address not in admins:
                raise InvalidInput(f"{path}: ADMIN is granted by listing in 'admins'")
            bits |= int(role & _GRANTABLE)  # redundant MINER/ADMIN add nothing here
        if bits:
            roles[address] = bits
    return tuple(sorted(roles.items()))


def _balances(value: object) -> tuple[tuple[Address, int], ...]:
    if not isinstance(value, dict):
        raise InvalidInput("genesis.balances: expected an object {address: wei}")
    balances: dict[Address, int] = {}
    for key, wei in value.items():
        path = f"genesis.balances[{key!r}]"
        address = parse_address(key, path)
        if address in balances:
            raise InvalidInput(f"{path}: address listed twice")
        amount = _wei(wei, path)
        if amount:
            balances[address] = amount
    return tuple(sorted(balances.items()))


def _wei(value: object, path: str) -> int:
    if isinstance(value, str):
        try:
            amount = int(value, 16) if value[:2] in ("0x", "0X") else int(value, 10)
        except ValueError:
            raise InvalidInput(f"{path}: not an integer: {value!r}") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        amount = value
    else:
        raise InvalidInput(f"{path}: expected an integer or a decimal/0x string")
    return _int(amount, path, 0, _U256_MAX)


def _consensus(value: object, n_validators: int) -> ConsensusParams:
    doc = _object(value, "genesis.consensus", _CONSENSUS_KEYS)
    engine = doc.get("engine", "pbft")
    if engine not in ENGINES:
        raise InvalidInput(f"genesis.consensus.engine: expected one of {ENGINES}, got {engine!r}")
    epoch_length = _int(doc.get("epoch_length", 100), "genesis.consensus.epoch_length", 1, _I64_MAX)
    committee = _int(
        doc.get("committee_size", n_validators),
        "genesis.consensus.committee_size",
        1,
        MAX_VALIDATORS,
    )
    timeouts = doc.get("timeouts", {})
    if not isinstance(timeouts, dict):
        raise InvalidInput("genesis.consensus.timeouts: expected an object {name: ticks}")
    return ConsensusParams(
        engine=engine,
        epoch_length=epoch_length,
        checkpoint_interval=_int(
            doc.get("checkpoint_interval", 10),
            "genesis.consensus.checkpoint_interval",
            1,
            _I64_MAX,
        ),
        committee_size=committee,
        max_votes=_int(
            doc.get("max_votes", committee), "genesis.consensus.max_votes", 1, MAX_VALIDATORS
        ),
        unstake_delay=_int(
            doc.get("unstake_delay", epoch_length),
            "genesis.consensus.unstake_delay",
            0,
            _I64_MAX,
        ),
        timeouts=tuple(
            sorted(
                (str(name), _int(ticks, f"genesis.consensus.timeouts.{name}", 1, _I64_MAX))
                for name, ticks in timeouts.items()
            )
        ),
    )


def _hex(address: Address) -> str:
    return "0x" + address.hex()


def _role_names(bits: int) -> list[str]:
    return [role.name for role in Role if role & bits and role.name is not None]


# ---------------------------------------------------------------- building


def default_predeploys(genesis: Genesis) -> list[Predeploy]:
    """Membership, ModelRegistry and Election from ``contracts/build``, with the
    calldata of their ``initialize`` calls for this genesis."""
    from contracts import load_artifact  # deferred: only genesis building needs them

    code = {name: load_artifact(name).runtime_code for name in PREDEPLOYS}
    members = genesis.member_roles()
    c = genesis.consensus
    return [
        Predeploy(
            "Membership",
            MEMBERSHIP_ADDRESS,
            code["Membership"],
            _calldata(
                "initialize(address[],uint256,address[],uint256[])",
                ["address[]", "uint256", "address[]", "uint256[]"],
                [
                    list(genesis.admins),
                    genesis.admin_threshold,
                    [m for m, _ in members],
                    [bits for _, bits in members],
                ],
            ),
        ),
        Predeploy(
            "ModelRegistry",
            REGISTRY_ADDRESS,
            code["ModelRegistry"],
            _calldata("initialize(address)", ["address"], [MEMBERSHIP_ADDRESS]),
        ),
        Predeploy(
            "Election",
            ELECTION_ADDRESS,
            code["Election"],
            _calldata(
                "initialize(address,uint256,uint256,uint256)",
                ["address", "uint256", "uint256", "uint256"],
                [MEMBERSHIP_ADDRESS, c.committee_size, c.max_votes, c.unstake_delay],
            ),
        ),
    ]


def _calldata(signature: str, types: list[str], args: list[Any]) -> bytes:
    return bytes(keccak(signature.encode())[:4]) + abi_encode(types, args)


def build_genesis(genesis: Genesis, predeploys: Sequence[Predeploy] | None = None) -> GenesisState:
    """Execute genesis: balances, predeployed code, ``initialize`` system calls.

    ``predeploys`` defaults to :func:`default_predeploys`; tests pass their own (or
    none). Raises InvalidInput if an initializer reverts (e.g. a role the contract
    refuses), naming the contract.
    """
    if predeploys is None:
        predeploys = default_predeploys(genesis)
    db = ExecutionDB(lambda key: None)
    state = open_state(
        db,
        EMPTY_ROOT,
        chain_id=genesis.chain_id,
        height=0,
        timestamp=genesis.timestamp,
        proposer=ZERO_ADDRESS,
        gas_limit=genesis.gas_limit,
    )
    for address, wei in genesis.balances:
        state.set_balance(address, wei)
    for contract in predeploys:
        state.set_code(contract.address, contract.runtime_code)
        state.set_nonce(contract.address, 1)  # EIP-161: contracts start at nonce 1
    for contract in predeploys:
        if contract.init_calldata is None:
            continue
        computation = system_call(state, contract.address, contract.init_calldata)
        if computation.is_error:
            raise InvalidInput(f"genesis: {contract.name}.initialize failed: {computation.error!r}")
    state.persist()
    header = Header(
        chain_id=genesis.chain_id,
        parent_hash=genesis.config_hash(),
        height=0,
        timestamp=genesis.timestamp,
        proposer=ZERO_ADDRESS,
        epoch=0,
        validator_set_hash=genesis.validator_set_hash,
        state_root=Hash32(state.state_root),
        transactions_root=EMPTY_ROOT,
        receipts_root=EMPTY_ROOT,
        logs_bloom=EMPTY_BLOOM,
        gas_used=0,
        gas_limit=genesis.gas_limit,
    )
    return GenesisState(genesis, Block(header, ()), dict(db.writes))
