"""Equivocation evidence: two conflicting signed messages from one validator.

An honest validator signs at most one digest per ``(engine, kind, height, round)`` for
the kinds in :data:`EQUIVOCATION_KINDS`. Two valid signatures from one validator over
different digests for the same slot are irrefutable proof of misbehaviour: anyone
holding the validator set can check it, and the Election contract can check it on
chain with ``ecrecover`` (same sighash layout).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import rlp

from node.consensus.messages import EQUIVOCATION_KINDS, SignedMessage
from node.consensus.types import Address, ValidatorSet


class EvidenceError(ValueError):
    """Evidence does not prove equivocation (names why)."""


@dataclass(frozen=True)
class EquivocationEvidence:
    """Two signed messages by one validator for one slot, with different digests."""

    first: SignedMessage
    second: SignedMessage

    @property
    def validator(self) -> Address:
        """The equivocating validator."""
        return self.first.signer

    def verify(self, chain_id: int, validators: ValidatorSet) -> None:
        """Raise :class:`EvidenceError` unless this proves equivocation by a member."""
        a, b = self.first, self.second
        if a.signer != b.signer:
            raise EvidenceError("messages have different signers")
        if a.signer not in validators:
            raise EvidenceError(f"0x{a.signer.hex()} is not in the validator set")
        if a.slot() != b.slot():
            raise EvidenceError("messages are for different slots")
        if a.kind not in EQUIVOCATION_KINDS:
            raise EvidenceError(f"message kind {a.kind} cannot equivocate")
        if a.digest == b.digest:
            raise EvidenceError("messages agree on the digest")
        if not a.verify(chain_id):
            raise EvidenceError("first signature invalid")
        if not b.verify(chain_id):
            raise EvidenceError("second signature invalid")

    def is_valid(self, chain_id: int, validators: ValidatorSet) -> bool:
        """Boolean form of :meth:`verify`."""
        try:
            self.verify(chain_id, validators)
        except EvidenceError:
            return False
        return True

    def key(self) -> tuple[bytes, int, int, int, int]:
        """Identity of the offence (one record per validator and slot)."""
        return (self.first.signer, *self.first.slot())

    def encode(self) -> bytes:
        """Canonical RLP: ``[first, second]`` (each an encoded message), ordered."""
        x, y = sorted([self.first.encode(), self.second.encode()])
        return bytes(rlp.encode([x, y]))

    @classmethod
    def decode(cls, data: bytes) -> EquivocationEvidence:
        """Inverse of :meth:`encode`; raises :class:`EvidenceError` when malformed."""
        try:
            x, y = rlp.decode(data, strict=True)
            return cls(SignedMessage.decode(x), SignedMessage.decode(y))
        except (rlp.exceptions.RLPException, ValueError, TypeError) as exc:
            raise EvidenceError(f"malformed evidence: {exc}") from exc


class EquivocationDetector:
    """Remembers the first signed message per (signer, slot) in a bounded window.

    Feed it every *verified* message; it returns evidence the first time a signer is
    seen signing a second digest for a slot. Old heights are forgotten by
    :meth:`forget_below` (the engine's low watermark), so memory stays bounded.
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self._first: OrderedDict[tuple[bytes, int, int, int, int], SignedMessage] = OrderedDict()
        self._reported: set[tuple[bytes, int, int, int, int]] = set()
        self._max = max_entries

    def observe(self, msg: SignedMessage) -> EquivocationEvidence | None:
        """Record ``msg``; return new evidence if it conflicts with an earlier one."""
        if msg.kind not in EQUIVOCATION_KINDS:
            return None
        key = (msg.signer, *msg.slot())
        earlier = self._first.get(key)
        if earlier is None:
            self._first[key] = msg
            if len(self._first) > self._max:
                self._first.popitem(last=False)
            return None
        if earlier.digest == msg.digest or key in self._reported:
            return None
        self._reported.add(key)
        return EquivocationEvidence(earlier, msg)

    def forget_below(self, height: int) -> None:
        """Drop remembered messages for heights below ``height``."""
        for key in [k for k in self._first if k[3] < height]:
            del self._first[key]
        self._reported = {k for k in self._reported if k[3] >= height}
