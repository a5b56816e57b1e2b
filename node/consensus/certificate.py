"""Commit certificates: a quorum of validator signatures over one block.

A certificate for block ``B`` at ``height`` is a quorum of signatures of the
commit-vote sighash ``(chain_id, engine, kind, height, round, hash(B), keccak(b""))`` —
exactly the signatures carried by the PBFT COMMIT (or DPoS CONFIRM) messages, so a
certificate is assembled from received votes without re-signing. Given the validator set
of the block's epoch it verifies offline, with nothing but this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import rlp

from node.consensus.messages import EngineId, Kind, SignedMessage, recover_signer, sighash
from node.consensus.types import EMPTY_PAYLOAD_HASH, Address, Hash32, ValidatorSet


class CertificateError(ValueError):
    """A certificate does not prove what it claims (names the failing part)."""


@dataclass(frozen=True)
class CommitCertificate:
    """Proof that a quorum of validators committed ``block_hash`` at ``height``."""

    engine: int
    kind: int  # Kind.COMMIT (PBFT) or Kind.CONFIRM (DPoS)
    height: int
    round: int  # PBFT view / DPoS slot in which the votes were cast
    block_hash: Hash32
    signatures: tuple[tuple[Address, bytes], ...]  # (signer, 65-byte signature), sorted

    def vote_hash(self, chain_id: int) -> Hash32:
        """The hash each validator signed."""
        return sighash(
            chain_id,
            self.engine,
            self.kind,
            self.height,
            self.round,
            self.block_hash,
            EMPTY_PAYLOAD_HASH,
        )

    def verify(self, chain_id: int, validators: ValidatorSet) -> None:
        """Raise :class:`CertificateError` unless a quorum of ``validators`` signed.

        Checks every signature (a single bad one fails the certificate: a valid
        certificate never carries junk) and that signers are distinct members.
        """
        if self.kind not in (Kind.COMMIT, Kind.CONFIRM):
            raise CertificateError(f"certificate kind {self.kind} is not a commit vote")
        h = self.vote_hash(chain_id)
        seen: set[bytes] = set()
        for i, (signer, signature) in enumerate(self.signatures):
            if signer in seen:
                raise CertificateError(f"signature {i}: duplicate signer 0x{signer.hex()}")
            if signer not in validators:
                raise CertificateError(
                    f"signature {i}: 0x{signer.hex()} is not a validator of epoch "
                    f"{validators.epoch}"
                )
            if recover_signer(h, signature) != signer:
                raise CertificateError(f"signature {i}: invalid signature by 0x{signer.hex()}")
            seen.add(signer)
        if len(seen) < validators.quorum:
            raise CertificateError(f"only {len(seen)} signatures, quorum is {validators.quorum}")

    def is_valid(self, chain_id: int, validators: ValidatorSet) -> bool:
        """Boolean form of :meth:`verify`."""
        try:
            self.verify(chain_id, validators)
        except CertificateError:
            return False
        return True

    @classmethod
    def from_votes(cls, votes: list[SignedMessage]) -> CommitCertificate:
        """Assemble a certificate from commit votes for one (height, round, digest)."""
        if not votes:
            raise ValueError("no votes")
        first = votes[0]
        for v in votes:
            if (v.engine, v.kind, v.height, v.round, v.digest) != (
                first.engine,
                first.kind,
                first.height,
                first.round,
                first.digest,
            ) or v.payload:
                raise ValueError("votes disagree on what they certify")
        sigs = sorted({(v.signer, v.signature) for v in votes})
        return cls(first.engine, first.kind, first.height, first.round, first.digest, tuple(sigs))

    def encode(self) -> bytes:
        """Canonical RLP (this is the block's seal)."""
        return bytes(
            rlp.encode(
                [
                    self.engine,
                    self.kind,
                    self.height,
                    self.round,
                    self.block_hash,
                    [[s, sig] for s, sig in self.signatures],
                ]
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> CommitCertificate:
        """Inverse of :meth:`encode`; raises :class:`CertificateError` when malformed."""
        try:
            engine, kind, height, round_, block_hash, sigs = rlp.decode(data, strict=True)
            pairs = tuple((Address(s), bytes(sig)) for s, sig in sigs)
        except (rlp.exceptions.RLPException, ValueError, TypeError) as exc:
            raise CertificateError(f"malformed certificate: {exc}") from exc
        if len(block_hash) != 32 or any(len(s) != 20 or len(g) != 65 for s, g in pairs):
            raise CertificateError("malformed certificate: bad field length")
        return cls(
            int.from_bytes(engine, "big"),
            int.from_bytes(kind, "big"),
            int.from_bytes(height, "big"),
            int.from_bytes(round_, "big"),
            Hash32(block_hash),
            pairs,
        )


def commit_kind(engine: EngineId) -> Kind:
    """Which vote kind forms a certificate for ``engine``."""
    return Kind.COMMIT if engine == EngineId.PBFT else Kind.CONFIRM
