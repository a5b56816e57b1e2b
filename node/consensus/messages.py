"""Signed consensus messages: kinds, canonical encoding, signing and verification.

Every consensus message is an RLP list
``[engine, kind, height, round, digest, payload, signer, signature]``.

The signature covers a fixed-layout hash (the *sighash*) rather than the RLP bytes, so the
Election contract can check equivocation evidence on chain with ``ecrecover``::

    sighash = keccak256(DOMAIN || u256(chain_id) || u256(engine) || u256(kind)
                        || u256(height) || u256(round) || digest32 || keccak256(payload))

with ``DOMAIN = keccak256("TwinChain consensus message v1")``. The chain id and engine
are part of the signed domain: a message signed for one network or engine never verifies
in another. Signatures are 65 bytes ``r || s || v`` with ``v`` in {0, 1} (secp256k1,
recoverable; coincurve).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

import coincurve
import rlp
from eth_hash.auto import keccak

from node.consensus.types import Address, Hash32

DOMAIN = keccak(b"TwinChain consensus message v1")

#: Largest encoded message accepted from the wire (a pre-prepare carries a whole block).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024


class EngineId(IntEnum):
    """Which consensus engine a message belongs to (part of the signed domain)."""

    PBFT = 1
    DPOS = 2


class Kind(IntEnum):
    """Message types. Values are part of the signed domain: never renumber."""

    # PBFT (Castro & Liskov)
    PRE_PREPARE = 1
    PREPARE = 2
    COMMIT = 3
    CHECKPOINT = 4
    VIEW_CHANGE = 5
    NEW_VIEW = 6
    # DPoS
    BLOCK = 16
    CONFIRM = 17


#: Kinds for which two signatures over different digests at one (height, round) are
#: equivocation: an honest validator signs at most one digest per slot and phase.
EQUIVOCATION_KINDS = frozenset(
    {Kind.PRE_PREPARE, Kind.PREPARE, Kind.COMMIT, Kind.BLOCK, Kind.CONFIRM}
)


def _u256(value: int) -> bytes:
    return value.to_bytes(32, "big")


def sighash(
    chain_id: int,
    engine: int,
    kind: int,
    height: int,
    round_: int,
    digest: bytes,
    payload_hash: bytes,
) -> Hash32:
    """The 32-byte hash a validator signs (see the module docstring for the layout)."""
    if len(digest) not in (0, 32) or len(payload_hash) != 32:
        raise ValueError("digest and payload hash are 32 bytes")
    return Hash32(
        keccak(
            DOMAIN
            + _u256(chain_id)
            + _u256(engine)
            + _u256(kind)
            + _u256(height)
            + _u256(round_)
            + (digest or b"\x00" * 32)
            + payload_hash
        )
    )


def address_of_public_key(public_key: coincurve.PublicKey) -> Address:
    """Ethereum address of a secp256k1 public key."""
    return Address(keccak(public_key.format(compressed=False)[1:])[-20:])


@lru_cache(maxsize=1 << 15)
def recover_signer(message_hash: bytes, signature: bytes) -> Address | None:
    """Address that produced ``signature`` over ``message_hash``, or None if invalid.

    Memoised: certificates and view-change proofs re-present the same votes, and a
    recovery is a pure function of its 97 input bytes.
    """
    if len(signature) != 65 or signature[64] > 1:
        return None
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(
            signature, message_hash, hasher=None
        )
    except (ValueError, Exception):  # coincurve raises bare Exception on bad input
        return None
    return address_of_public_key(public_key)


class Signer:
    """A validator's signing key (secp256k1)."""

    def __init__(self, private_key: bytes) -> None:
        if len(private_key) != 32:
            raise ValueError("private key must be 32 bytes")
        self._key = coincurve.PrivateKey(private_key)
        self.address = address_of_public_key(self._key.public_key)

    def sign_hash(self, message_hash: bytes) -> bytes:
        """65-byte recoverable signature ``r || s || v`` (v in {0, 1})."""
        return bytes(self._key.sign_recoverable(message_hash, hasher=None))

    def sign(
        self,
        chain_id: int,
        engine: EngineId,
        kind: Kind,
        height: int,
        round_: int,
        digest: bytes = b"",
        payload: bytes = b"",
    ) -> SignedMessage:
        """Build and sign a message."""
        h = sighash(chain_id, engine, kind, height, round_, digest, keccak(payload))
        return SignedMessage(
            engine=engine,
            kind=kind,
            height=height,
            round=round_,
            digest=Hash32(digest),
            payload=payload,
            signer=self.address,
            signature=self.sign_hash(h),
        )


@dataclass(frozen=True)
class SignedMessage:
    """One signed consensus message, as it travels on the wire."""

    engine: int
    kind: int
    height: int
    round: int
    digest: Hash32  # empty (b"") or 32 bytes: the block hash the message is about
    payload: bytes  # kind-specific RLP body (a block, a view-change proof, ...)
    signer: Address
    signature: bytes

    @property
    def payload_hash(self) -> Hash32:
        """Keccak of the payload (what the sighash commits to)."""
        return Hash32(keccak(self.payload))

    def sighash(self, chain_id: int) -> Hash32:
        """The hash the signer signed, in the domain of ``chain_id``."""
        return sighash(
            chain_id,
            self.engine,
            self.kind,
            self.height,
            self.round,
            self.digest,
            self.payload_hash,
        )

    def verify(self, chain_id: int) -> bool:
        """True iff the signature is by ``signer`` over this message in ``chain_id``.

        A broadcast vote reaches every replica (and a certificate re-presents the same
        votes), so small messages are verified once per process: the result is a pure
        function of the message and the chain id.
        """
        if len(self.payload) <= SMALL_PAYLOAD_BYTES:
            return _verify_cached(self, chain_id)
        return self._verify(chain_id)

    def _verify(self, chain_id: int) -> bool:
        try:
            h = self.sighash(chain_id)
        except ValueError:
            return False
        return recover_signer(h, self.signature) == self.signer

    def slot(self) -> tuple[int, int, int, int]:
        """``(engine, kind, height, round)``: an honest signer signs one digest per slot."""
        return (self.engine, self.kind, self.height, self.round)

    def encode(self) -> bytes:
        """Canonical RLP encoding."""
        return bytes(
            rlp.encode(
                [
                    self.engine,
                    self.kind,
                    self.height,
                    self.round,
                    self.digest,
                    self.payload,
                    self.signer,
                    self.signature,
                ]
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> SignedMessage:
        """Inverse of :meth:`encode`; raises ``ValueError`` on anything malformed.

        Small messages (votes) are decoded once per process; the result is immutable.
        """
        if cls is SignedMessage and len(data) <= SMALL_PAYLOAD_BYTES:
            return _decode_cached(bytes(data))
        return cls._decode(data)

    @classmethod
    def _decode(cls, data: bytes) -> SignedMessage:
        if len(data) > MAX_MESSAGE_BYTES:
            raise ValueError("message too large")
        try:
            items = rlp.decode(data, strict=True)
        except (rlp.DecodingError, rlp.exceptions.RLPException) as exc:
            raise ValueError(f"malformed message: {exc}") from exc
        if not isinstance(items, list) or len(items) != 8:
            raise ValueError("malformed message: expected an 8-item list")
        if not all(isinstance(x, bytes) for x in items):
            raise ValueError("malformed message: nested list where bytes expected")
        engine, kind, height, round_ = (_decode_uint(x) for x in items[:4])
        digest, payload, signer, signature = items[4:]
        if len(digest) not in (0, 32):
            raise ValueError("malformed message: digest must be 0 or 32 bytes")
        if len(signer) != 20:
            raise ValueError("malformed message: signer must be 20 bytes")
        if len(signature) != 65:
            raise ValueError("malformed message: signature must be 65 bytes")
        return cls(
            engine, kind, height, round_, Hash32(digest), payload, Address(signer), signature
        )


#: Messages whose payload (or encoding) is at most this size go through the caches below;
#: bigger ones (blocks, view-change proofs) are rare and would pin memory.
SMALL_PAYLOAD_BYTES = 2048


@lru_cache(maxsize=1 << 14)
def _verify_cached(message: SignedMessage, chain_id: int) -> bool:
    return message._verify(chain_id)


@lru_cache(maxsize=1 << 14)
def _decode_cached(data: bytes) -> SignedMessage:
    return SignedMessage._decode(data)


def _decode_uint(raw: bytes) -> int:
    if len(raw) > 32 or (raw and raw[0] == 0):
        raise ValueError("malformed message: non-canonical integer")
    return int.from_bytes(raw, "big")
