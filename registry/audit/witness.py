"""State witnesses: prove a validator set from a state root, offline.

The validator set of epoch ``k >= 2`` is what ``Membership.minersList()`` (PBFT) or
``Election.committee()`` (DPoS) returns when called against the state of block
``(k-1)*E`` (an empty answer keeps the previous set). To let someone check that answer
without a node, we record every state trie node and contract code blob py-evm reads while
executing the call (:func:`record_members`); an offline verifier re-executes the same
call with py-evm against *only* those blobs (:func:`replay_members`), each accepted only
under its own keccak — *stateless execution*. A missing blob fails the replay; a forged
one cannot be looked up under the hash its parent references.

The call is the node's own: a zero-price message from the zero address with the
genesis gas limit, in the execution context of block ``height + 1`` with the boundary
block's timestamp and a zero coinbase (``Executor.call(at=header)``). The view
functions read neither, but the context is fixed so a third party reproduces it exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from eth.vm.spoof import SpoofTransaction
from eth_abi.abi import decode as abi_decode
from eth_abi.exceptions import DecodingError
from eth_hash.auto import keccak

from node.chain.block import Header
from node.chain.evm import ExecutionDB, TwinChainVM, open_state
from node.chain.types import ELECTION_ADDRESS, MEMBERSHIP_ADDRESS, ZERO_ADDRESS, Address

__all__ = [
    "MembersCall",
    "WitnessError",
    "checked_lookup",
    "members_call",
    "record_members",
    "replay_members",
    "run_members_call",
]

#: Reads a state trie node or code blob by its keccak; None when absent.
Lookup = Callable[[bytes], bytes | None]


class WitnessError(ValueError):
    """A witness (or the stored state) does not prove the validator set it should."""


@dataclass(frozen=True)
class MembersCall:
    """Which contract function yields the validator set for an engine."""

    engine: str
    address: Address
    signature: str

    @property
    def calldata(self) -> bytes:
        """The 4-byte selector (the functions take no arguments)."""
        return keccak(self.signature.encode())[:4]


def members_call(engine: str) -> MembersCall:
    """``minersList()`` on Membership for PBFT, ``committee()`` on Election for DPoS."""
    if engine == "pbft":
        return MembersCall(engine, MEMBERSHIP_ADDRESS, "minersList()")
    if engine == "dpos":
        return MembersCall(engine, ELECTION_ADDRESS, "committee()")
    raise WitnessError(f"unknown consensus engine {engine!r}")


def checked_lookup(read: Lookup) -> Lookup:
    """Wrap ``read`` so that every blob returned is checked against its key (keccak).

    A stored node whose bytes were altered raises :class:`WitnessError` naming it.
    """

    def lookup(key: bytes) -> bytes | None:
        value = read(key)
        if value is not None and keccak(value) != key:
            raise WitnessError(
                f"state node 0x{bytes(key).hex()} is corrupt (keccak of its bytes is "
                f"0x{keccak(value).hex()})"
            )
        return value

    return lookup


def run_members_call(
    lookup: Lookup, boundary: Header, engine: str, gas_limit: int
) -> tuple[Address, ...]:
    """Execute the validator-set call against ``boundary.state_root`` through ``lookup``.

    Raises :class:`WitnessError` when a needed blob is missing or corrupt, the call
    reverts, or its output is not an ``address[]``.
    """
    call = members_call(engine)
    missing: list[bytes] = []

    def guarded(key: bytes) -> bytes | None:
        value = lookup(key)
        if value is None:
            missing.append(bytes(key))
        return value

    try:
        state = open_state(
            ExecutionDB(guarded),
            boundary.state_root,
            chain_id=boundary.chain_id,
            height=boundary.height + 1,
            timestamp=boundary.timestamp,
            proposer=ZERO_ADDRESS,
            gas_limit=gas_limit,
        )
        unsigned = TwinChainVM.create_unsigned_transaction(
            nonce=state.get_nonce(ZERO_ADDRESS),
            gas_price=0,
            gas=gas_limit,
            to=call.address,
            value=0,
            data=call.calldata,
        )
        computation = state.apply_transaction(SpoofTransaction(unsigned, from_=ZERO_ADDRESS))  # type: ignore[arg-type]
    except WitnessError:
        raise
    except Exception as exc:  # py-evm wraps a missing node in several exception types
        if missing:
            raise WitnessError(
                f"state node 0x{missing[0].hex()} needed by {call.signature} at block "
                f"{boundary.height} is missing"
            ) from exc
        raise WitnessError(f"{call.signature} at block {boundary.height} failed: {exc!r}") from exc
    if missing:
        raise WitnessError(
            f"state node 0x{missing[0].hex()} needed by {call.signature} at block "
            f"{boundary.height} is missing"
        )
    if computation.is_error:
        raise WitnessError(
            f"{call.signature} at block {boundary.height} reverted: {computation.error!r}"
        )
    try:
        (members,) = abi_decode(["address[]"], computation.output)
    except DecodingError as exc:
        raise WitnessError(f"{call.signature} returned no address list: {exc}") from exc
    return tuple(Address(bytes.fromhex(m[2:])) for m in members)


def record_members(
    read: Lookup, boundary: Header, engine: str, gas_limit: int
) -> tuple[tuple[Address, ...], dict[bytes, bytes]]:
    """Run the validator-set call over stored state and record what it read.

    Returns the members and the witness: every blob (trie node or code) py-evm looked up,
    keyed by keccak. Each stored blob is checked against its key as it is read.
    """
    checked = checked_lookup(read)
    touched: dict[bytes, bytes] = {}

    def recording(key: bytes) -> bytes | None:
        value = checked(key)
        if value is not None:
            touched[bytes(key)] = value
        return value

    members = run_members_call(recording, boundary, engine, gas_limit)
    return members, touched


def replay_members(
    witness: Mapping[bytes, bytes], boundary: Header, engine: str, gas_limit: int
) -> tuple[Address, ...]:
    """Stateless re-execution of the validator-set call against ``witness`` only."""
    for key, value in witness.items():
        if keccak(value) != key:
            raise WitnessError(
                f"witness node 0x{key.hex()} does not hash to its key "
                f"(keccak is 0x{keccak(value).hex()})"
            )
    return run_members_call(witness.get, boundary, engine, gas_limit)
