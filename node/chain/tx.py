"""Decoding and stateless validation of raw signed transactions.

One function, :func:`decode_transaction`, turns untrusted bytes into a
:class:`SignedTx` or raises :class:`~node.errors.InvalidTransaction` naming the
reason. The mempool admits with it and the executor checks every transaction of a
received block with it, so both apply exactly the same rules:

- legacy (EIP-155 replay-protected only), EIP-2930 and EIP-1559 envelopes; blob (type 3)
  and set-code (type 4) transactions are refused: a permissioned registry needs neither,
  and EIP-7702 delegation would let an account's code change under its roles;
- canonical encoding only (re-encoding gives back the same bytes), so a transaction has
  exactly one hash;
- the network's chain id; a valid, low-s signature (EIP-2, for every type);
- gas at least the intrinsic cost and the EIP-7623 calldata floor.

Stateful checks (nonce, balance, roles, block gas) belong to the mempool and executor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import coincurve
import rlp
from eth.abc import SignedTransactionAPI
from eth.exceptions import PyEVMError
from eth.vm.forks.prague import PragueVM
from eth_hash.auto import keccak
from eth_keys.exceptions import BadSignature
from eth_utils.exceptions import ValidationError  # eth-keys raises this one too

from node.chain.types import Address, Hash32
from node.errors import InvalidTransaction

__all__ = ["ALLOWED_TX_TYPES", "MAX_TX_BYTES", "SignedTx", "decode_transaction"]

#: Legacy, EIP-2930 access list, EIP-1559 dynamic fee.
ALLOWED_TX_TYPES: Final = frozenset({0, 1, 2})

#: Default upper bound on an encoded transaction (geth uses 128 KiB too).
MAX_TX_BYTES: Final = 128 * 1024

_SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_TX_BUILDER = PragueVM.get_transaction_builder()

# EIP-7623 calldata floor: 21000 + 10 per token, a zero byte is 1 token, others 4.
_FLOOR_BASE: Final = 21_000
_FLOOR_PER_TOKEN: Final = 10

# What py-evm, pyrlp and eth-keys raise on malformed input. Anything else escaping
# decode_transaction is a bug on our side, and the fuzz tests are there to find it.
_DECODE_ERRORS = (
    rlp.exceptions.RLPException,
    PyEVMError,
    ValidationError,
    BadSignature,
    ValueError,
    TypeError,
    IndexError,
)


@dataclass(frozen=True)
class SignedTx:
    """A decoded, statelessly valid transaction with its sender already recovered."""

    raw: bytes
    hash: Hash32
    sender: Address
    tx_type: int
    nonce: int
    gas: int
    to: Address | None  # None for contract creation
    evm: SignedTransactionAPI  # the py-evm object, its sender cached (see _pin_sender)

    def __len__(self) -> int:
        return len(self.raw)


def decode_transaction(raw: bytes, chain_id: int, *, max_bytes: int = MAX_TX_BYTES) -> SignedTx:
    """Decode and statelessly validate one raw signed transaction.

    Raises InvalidTransaction (with the reason) for anything not admissible.
    """
    if not isinstance(raw, bytes | bytearray):
        raise InvalidTransaction(f"transaction must be bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if not raw:
        raise InvalidTransaction("empty transaction")
    if len(raw) > max_bytes:
        raise InvalidTransaction(f"transaction is {len(raw)} bytes, limit is {max_bytes}")
    if raw[0] >= 0xC0:  # an RLP list: a legacy transaction
        tx_type = 0
    elif raw[0] <= 0x7F:  # an EIP-2718 envelope: type byte, then the payload
        tx_type = raw[0]
        if tx_type not in ALLOWED_TX_TYPES or tx_type == 0:
            raise InvalidTransaction(f"unsupported transaction type {tx_type}")
    else:
        raise InvalidTransaction("malformed transaction: neither an RLP list nor a typed envelope")
    try:
        tx = _TX_BUILDER.decode(raw)
        canonical = _fresh_encoding(tx, tx_type)
    except _DECODE_ERRORS as exc:
        raise InvalidTransaction(f"malformed transaction: {exc}") from exc
    if canonical != raw:
        raise InvalidTransaction("non-canonical transaction encoding")
    _check_fields(tx, chain_id)
    sender = _recover_sender(tx)
    return SignedTx(
        raw=raw,
        hash=Hash32(keccak(raw)),
        sender=sender,
        tx_type=tx_type,
        nonce=tx.nonce,
        gas=tx.gas,
        to=Address(tx.to) if tx.to else None,
        evm=_pin_sender(tx, sender),
    )


def _fresh_encoding(tx: SignedTransactionAPI, tx_type: int) -> bytes:
    """Encode ``tx`` again from its field values.

    Not ``tx.encode()``: pyrlp caches the bytes an object was decoded from and hands
    them back. And the check matters: pyrlp's integer sedes reads an empty *list* as 0,
    so a signed transaction can be re-wrapped under another hash (nonce 0 written as
    ``0xc0`` instead of ``0x80``) and py-evm would still accept it.
    """
    if tx_type == 0:
        return bytes(rlp.encode(tx.copy()))
    inner = tx._inner  # type: ignore[attr-defined]  # TypedTransaction's payload
    return bytes([tx_type]) + bytes(rlp.encode(inner.copy()))


def _check_fields(tx: SignedTransactionAPI, chain_id: int) -> None:
    if tx.chain_id is None:
        raise InvalidTransaction("transaction is not replay-protected (no EIP-155 chain id)")
    if tx.chain_id != chain_id:
        raise InvalidTransaction(f"wrong chain id {tx.chain_id}, this network is {chain_id}")
    try:
        tx.validate()
    except _DECODE_ERRORS as exc:
        raise InvalidTransaction(f"invalid transaction field: {exc}") from exc
    if not (0 < tx.r < _SECP256K1_N and 0 < tx.s <= _SECP256K1_N // 2):
        raise InvalidTransaction("invalid signature: r or s out of range (EIP-2 low s)")
    if tx.type_id is not None and tx.max_priority_fee_per_gas > tx.max_fee_per_gas:
        raise InvalidTransaction("max priority fee per gas exceeds max fee per gas")
    try:
        intrinsic = tx.intrinsic_gas
    except _DECODE_ERRORS as exc:
        raise InvalidTransaction(f"invalid transaction field: {exc}") from exc
    zeros = tx.data.count(0)
    floor = _FLOOR_BASE + _FLOOR_PER_TOKEN * (zeros + 4 * (len(tx.data) - zeros))
    if tx.gas < max(intrinsic, floor):
        raise InvalidTransaction(f"gas {tx.gas} below the intrinsic cost {max(intrinsic, floor)}")


def _recover_sender(tx: SignedTransactionAPI) -> Address:
    """Recover the signer with one ECDSA recovery.

    A successful recovery is itself the signature check (the recovered key verifies
    the signature by construction), so py-evm's recover-then-verify is not repeated.
    """
    if tx.y_parity not in (0, 1):
        raise InvalidTransaction(f"invalid signature: y parity {tx.y_parity}")
    signature = tx.r.to_bytes(32, "big") + tx.s.to_bytes(32, "big") + bytes([tx.y_parity])
    message_hash = keccak(tx.get_message_for_signing())
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(
            signature, message_hash, hasher=None
        )
    except ValueError as exc:
        raise InvalidTransaction(f"invalid signature: {exc}") from exc
    return Address(keccak(public_key.format(compressed=False)[1:])[12:])


def _pin_sender(tx: SignedTransactionAPI, sender: Address) -> SignedTransactionAPI:
    """Make ``tx.sender`` return the already-recovered address.

    py-evm recovers the sender with an ECDSA public-key recovery on *every* access of
    ``tx.sender`` (several per executed transaction); the signature was checked once
    above, so later accesses can reuse the result.
    """
    target = getattr(tx, "_inner", tx)  # typed envelopes delegate to their payload
    object.__setattr__(target, "get_sender", lambda: sender)
    return tx
