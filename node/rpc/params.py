"""Parsing untrusted JSON-RPC parameters into domain values.

Every parser takes a JSON value and a name for messages, and either returns a typed
value or raises :class:`~node.rpc.errors.RpcError` -32602 naming the parameter. They
follow the Ethereum JSON-RPC encoding (QUANTITY: ``0x``-prefixed hex without leading
zeros, though leading zeros and plain JSON integers are tolerated as geth tolerates them
on input; DATA: ``0x``-prefixed even-length hex), and bound every number so nothing
downstream (SQLite's 64-bit integers, the EVM's 256-bit words) overflows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from node.chain.types import Address, Hash32
from node.rpc.errors import RpcError, invalid_params

__all__ = [
    "BLOCK_TAGS",
    "MAX_HEIGHT",
    "BlockRef",
    "CallRequest",
    "LogFilter",
    "block_ref",
    "boolean",
    "call_request",
    "data",
    "hash32",
    "log_filter",
    "param",
    "quantity",
]

U256_MAX: Final = 2**256 - 1
#: Heights are SQLite integers: anything above this cannot name a block.
MAX_HEIGHT: Final = 2**63 - 1
BLOCK_TAGS: Final = frozenset({"latest", "earliest", "pending", "safe", "finalized"})
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
_CALL_KEYS: Final = frozenset(
    {
        "from",
        "to",
        "gas",
        "gasPrice",
        "maxFeePerGas",
        "maxPriorityFeePerGas",
        "value",
        "data",
        "input",
        "nonce",
        "type",
        "accessList",
        "chainId",
    }
)
_FILTER_KEYS: Final = frozenset({"fromBlock", "toBlock", "blockHash", "address", "topics"})


def param(params: Sequence[Any], index: int, name: str, *, required: bool = True) -> Any:
    """Positional parameter ``index`` (None when absent and optional)."""
    if index < len(params):
        return params[index]
    if required:
        raise invalid_params(f"missing value for required argument {index} ({name})")
    return None


def check_arity(params: Sequence[Any], maximum: int) -> None:
    """Refuse surplus positional parameters (geth does too)."""
    if len(params) > maximum:
        raise invalid_params(f"too many arguments, want at most {maximum}")


def _hex_digits(value: object, name: str) -> str:
    if not isinstance(value, str) or value[:2] not in ("0x", "0X"):
        raise invalid_params(f"{name}: expected a 0x-prefixed hex string")
    digits = value[2:]
    if not set(digits) <= _HEX_DIGITS:
        raise invalid_params(f"{name}: invalid hex string")
    return digits


def quantity(value: object, name: str, *, maximum: int = U256_MAX) -> int:
    """A QUANTITY (hex string, or a non-negative JSON integer) up to ``maximum``."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        digits = _hex_digits(value, name)
        if not digits:
            raise invalid_params(f"{name}: hex string without digits")
        if len(digits) > 64:
            raise invalid_params(f"{name}: number too large")
        number = int(digits, 16)
    if not 0 <= number <= maximum:
        raise invalid_params(f"{name}: {number} is outside 0..{maximum}")
    return number


def data(value: object, name: str) -> bytes:
    """A DATA string (``0x`` + even number of hex digits)."""
    digits = _hex_digits(value, name)
    if len(digits) % 2:
        raise invalid_params(f"{name}: hex string has odd length")
    return bytes.fromhex(digits)


def fixed_data(value: object, name: str, size: int) -> bytes:
    """DATA of exactly ``size`` bytes."""
    raw = data(value, name)
    if len(raw) != size:
        raise invalid_params(f"{name}: expected {size} bytes, got {len(raw)}")
    return raw


def address(value: object, name: str) -> Address:
    """A 20-byte address (checksum not enforced: mixed case is accepted as is)."""
    return Address(fixed_data(value, name, 20))


def hash32(value: object, name: str) -> Hash32:
    """A 32-byte hash."""
    return Hash32(fixed_data(value, name, 32))


def boolean(value: object, name: str) -> bool:
    """A JSON boolean."""
    if not isinstance(value, bool):
        raise invalid_params(f"{name}: expected a boolean")
    return value


def storage_slot(value: object, name: str) -> int:
    """A storage key: a QUANTITY or 32-byte DATA (web3 sends either)."""
    if isinstance(value, str) and len(value) == 66:
        return int.from_bytes(hash32(value, name), "big")
    return quantity(value, name)


@dataclass(frozen=True)
class BlockRef:
    """A block named by tag, number or hash (EIP-1898)."""

    tag: str | None = None
    number: int | None = None
    hash: Hash32 | None = None


def block_ref(value: object, name: str = "block", *, default: str | None = None) -> BlockRef:
    """A block tag (``latest``...), a number, or an EIP-1898 object."""
    if value is None:
        if default is None:
            raise invalid_params(f"{name}: required")
        return BlockRef(tag=default)
    if isinstance(value, str) and value in BLOCK_TAGS:
        return BlockRef(tag=value)
    if isinstance(value, dict):
        keys = set(value)
        if keys <= {"blockNumber"} and "blockNumber" in value:
            return block_ref(value["blockNumber"], name)
        if "blockHash" in keys and keys <= {"blockHash", "requireCanonical"}:
            if "requireCanonical" in value:
                boolean(value["requireCanonical"], f"{name}.requireCanonical")
            return BlockRef(hash=hash32(value["blockHash"], f"{name}.blockHash"))
        raise invalid_params(f"{name}: expected blockNumber or blockHash")
    if isinstance(value, str) and len(value) == 66:
        return BlockRef(hash=hash32(value, name))
    try:
        return BlockRef(number=quantity(value, name, maximum=MAX_HEIGHT))
    except RpcError:
        raise invalid_params(
            f"{name}: expected a block number, a hash or one of {', '.join(sorted(BLOCK_TAGS))}"
        ) from None


@dataclass(frozen=True)
class CallRequest:
    """The transaction object of ``eth_call`` / ``eth_estimateGas``."""

    sender: Address | None
    to: Address | None
    gas: int | None
    value: int
    data: bytes


def call_request(value: object, name: str = "transaction") -> CallRequest:
    """Parse a call object; fee fields are validated and ignored (base fee 0)."""
    if not isinstance(value, dict):
        raise invalid_params(f"{name}: expected an object")
    unknown = sorted(set(value) - _CALL_KEYS)
    if unknown:
        raise invalid_params(f"{name}: unknown field {unknown[0]!r}")
    for key in ("gasPrice", "maxFeePerGas", "maxPriorityFeePerGas", "nonce", "type", "chainId"):
        if value.get(key) is not None:
            quantity(value[key], f"{name}.{key}")
    if value.get("accessList") is not None and not isinstance(value["accessList"], list):
        raise invalid_params(f"{name}.accessList: expected a list")
    payload = b""
    if value.get("input") is not None:
        payload = data(value["input"], f"{name}.input")
    if value.get("data") is not None:
        other = data(value["data"], f"{name}.data")
        if value.get("input") is not None and other != payload:
            raise invalid_params(f"{name}: both input and data given, and they differ")
        payload = other
    sender = value.get("from")
    to = value.get("to")
    gas = value.get("gas")
    return CallRequest(
        sender=None if sender is None else address(sender, f"{name}.from"),
        to=None if to is None else address(to, f"{name}.to"),
        gas=None if gas is None else quantity(gas, f"{name}.gas", maximum=MAX_HEIGHT),
        value=0 if value.get("value") is None else quantity(value["value"], f"{name}.value"),
        data=payload,
    )


@dataclass(frozen=True)
class LogFilter:
    """An ``eth_getLogs`` filter after parsing."""

    from_block: BlockRef
    to_block: BlockRef
    block_hash: Hash32 | None
    addresses: tuple[Address, ...] | None
    topics: tuple[tuple[Hash32, ...] | None, ...]


def log_filter(value: object, name: str = "filter") -> LogFilter:
    """Parse a filter object: ``fromBlock``/``toBlock`` or ``blockHash``; ``address``
    one or an OR-list; ``topics`` positional, each null, a topic or an OR-list."""
    if not isinstance(value, dict):
        raise invalid_params(f"{name}: expected an object")
    unknown = sorted(set(value) - _FILTER_KEYS)
    if unknown:
        raise invalid_params(f"{name}: unknown field {unknown[0]!r}")
    block_hash = None
    if value.get("blockHash") is not None:
        if value.get("fromBlock") is not None or value.get("toBlock") is not None:
            raise invalid_params(f"{name}: blockHash excludes fromBlock and toBlock")
        block_hash = hash32(value["blockHash"], f"{name}.blockHash")
    return LogFilter(
        from_block=block_ref(value.get("fromBlock"), f"{name}.fromBlock", default="latest"),
        to_block=block_ref(value.get("toBlock"), f"{name}.toBlock", default="latest"),
        block_hash=block_hash,
        addresses=_addresses(value.get("address"), f"{name}.address"),
        topics=_topics(value.get("topics"), f"{name}.topics"),
    )


def _addresses(value: object, name: str) -> tuple[Address, ...] | None:
    if value is None:
        return None
    if isinstance(value, list):
        if len(value) > 1_000:
            raise invalid_params(f"{name}: at most 1000 addresses")
        return tuple(address(v, f"{name}[{i}]") for i, v in enumerate(value)) or None
    return (address(value, name),)


def _topics(value: object, name: str) -> tuple[tuple[Hash32, ...] | None, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid_params(f"{name}: expected a list")
    if len(value) > 4:
        raise invalid_params(f"{name}: at most 4 topic positions")
    positions: list[tuple[Hash32, ...] | None] = []
    for i, wanted in enumerate(value):
        where = f"{name}[{i}]"
        if wanted is None:
            positions.append(None)
        elif isinstance(wanted, list):
            if len(wanted) > 1_000:
                raise invalid_params(f"{where}: at most 1000 alternatives")
            # A null alternative matches anything, so the whole position does (geth).
            if any(t is None for t in wanted) or not wanted:
                positions.append(None)
            else:
                positions.append(tuple(hash32(t, f"{where}[{j}]") for j, t in enumerate(wanted)))
        else:
            positions.append((hash32(wanted, where),))
    return tuple(positions)
