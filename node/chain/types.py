"""Domain types and fixed addresses of the chain.

``Address`` and ``Hash32`` are the ``eth_typing`` NewTypes over ``bytes`` (the same ones
py-evm uses), so values flow into the EVM without conversions; the helpers here turn
untrusted input into them and raise :class:`~node.errors.InvalidInput` otherwise.
"""

from __future__ import annotations

from enum import IntFlag
from typing import Final

import rlp
from eth_hash.auto import keccak
from eth_typing import Address, Hash32

from node.errors import InvalidInput

__all__ = [
    "ELECTION_ADDRESS",
    "EMPTY_ROOT",
    "MEMBERSHIP_ADDRESS",
    "PREDEPLOYS",
    "REGISTRY_ADDRESS",
    "SYSTEM_ADDRESS",
    "ZERO_ADDRESS",
    "ZERO_HASH",
    "Address",
    "Hash32",
    "Role",
    "parse_address",
    "parse_hash32",
    "validator_set_hash",
]

ZERO_HASH: Final = Hash32(b"\x00" * 32)
ZERO_ADDRESS: Final = Address(b"\x00" * 20)

#: Root of an empty Merkle-Patricia trie (keccak(rlp(b""))).
EMPTY_ROOT: Final = Hash32(keccak(rlp.encode(b"")))

#: Sender of genesis system messages (no transaction, no nonce), as in EIP-4788.
SYSTEM_ADDRESS: Final = Address(bytes.fromhex("ff" * 19 + "fe"))

MEMBERSHIP_ADDRESS: Final = Address(bytes.fromhex("00" * 18 + "7c01"))
REGISTRY_ADDRESS: Final = Address(bytes.fromhex("00" * 18 + "7c02"))
ELECTION_ADDRESS: Final = Address(bytes.fromhex("00" * 18 + "7c03"))

#: Contract name (artifact name under ``contracts/build``) -> predeploy address.
PREDEPLOYS: Final[dict[str, Address]] = {
    "Membership": MEMBERSHIP_ADDRESS,
    "ModelRegistry": REGISTRY_ADDRESS,
    "Election": ELECTION_ADDRESS,
}


class Role(IntFlag):
    """Role bits held by an account in the Membership contract."""

    ADMIN = 1
    MINER = 2
    TWIN = 4
    PUBLISHER = 8
    AUDITOR = 16


def parse_address(value: object, what: str = "address") -> Address:
    """Parse a ``0x``-prefixed 40-hex-digit string (or 20 raw bytes) into an Address."""
    if isinstance(value, bytes):
        if len(value) != 20:
            raise InvalidInput(f"{what}: expected 20 bytes, got {len(value)}")
        return Address(value)
    if not isinstance(value, str):
        raise InvalidInput(f"{what}: expected a hex string, got {type(value).__name__}")
    raw = value[2:] if value[:2] in ("0x", "0X") else None
    if raw is None or len(raw) != 40:
        raise InvalidInput(f"{what}: expected 0x followed by 40 hex digits, got {value!r}")
    try:
        return Address(bytes.fromhex(raw))
    except ValueError:
        raise InvalidInput(f"{what}: not hexadecimal: {value!r}") from None


def parse_hash32(value: object, what: str = "hash") -> Hash32:
    """Parse a ``0x``-prefixed 64-hex-digit string (or 32 raw bytes) into a Hash32."""
    if isinstance(value, bytes):
        if len(value) != 32:
            raise InvalidInput(f"{what}: expected 32 bytes, got {len(value)}")
        return Hash32(value)
    if not isinstance(value, str) or value[:2] not in ("0x", "0X") or len(value) != 66:
        raise InvalidInput(f"{what}: expected 0x followed by 64 hex digits, got {value!r}")
    try:
        return Hash32(bytes.fromhex(value[2:]))
    except ValueError:
        raise InvalidInput(f"{what}: not hexadecimal: {value!r}") from None


def validator_set_hash(members: tuple[Address, ...] | list[Address]) -> Hash32:
    """Commitment to an ordered validator list, as stored in block headers.

    Same formula as ``node.consensus.types.ValidatorSet.hash`` (a test pins the two
    together); duplicated so the chain package does not depend on the consensus one.
    """
    return Hash32(keccak(rlp.encode([list(members)])))
