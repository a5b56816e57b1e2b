"""PBFT wire bodies and hard state: canonical RLP, decoding and proof verification.

Theory of operation
-------------------
The PBFT messages themselves are :class:`~node.consensus.messages.SignedMessage`; this
module defines what travels *inside* their payloads and what the engine persists:

- a :class:`PreparedCertificate` is a PRE-PREPARE (with its block) plus ``q - 1``
  PREPAREs from distinct backups for the same (height, view, digest): proof that a quorum
  agreed on the block in that view;
- a :class:`CheckpointProof` proves that the block at a checkpoint height is decided:
  ``q`` CHECKPOINT messages over the same block hash, or a commit certificate (what a
  replica holds after catching up by state transfer). Height 0 is the genesis anchor and
  needs no proof;
- a :class:`ViewChangeBody` (payload of VIEW-CHANGE) carries the sender's stable
  checkpoint proof and its prepared certificates for heights above it;
- a :class:`NewViewBody` (payload of NEW-VIEW) carries the quorum of VIEW-CHANGE messages
  and one re-proposal per height above the chosen checkpoint (null where nothing was
  prepared); the re-proposal's block is taken from the winning prepared certificate, so
  only the new primary's signature over the re-issued PRE-PREPARE travels;
- :class:`HardState` is the compact record in ``Ready.persist``.

Every ``decode`` raises :class:`ProofError` on malformed input and every ``verify``
raises it when a proof does not prove its claim; the message says what failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import rlp

from node.consensus.certificate import CertificateError, CommitCertificate
from node.consensus.messages import (
    SMALL_PAYLOAD_BYTES,
    EngineId,
    Kind,
    SignedMessage,
    recover_signer,
)
from node.consensus.types import ZERO_HASH, Hash32, ValidatorSet

HARD_STATE_VERSION = 1

ValidatorsAt = Callable[[int], ValidatorSet]
"""The validator set in force at a height."""


class ProofError(ValueError):
    """A peer's proof or body does not prove its claim (peer's fault)."""


class MalformedError(ProofError):
    """A body or hard state cannot be decoded at all."""


class SignatureCache:
    """Verifies message signatures, remembering successes (proofs repeat messages).

    Keyed by signature and checked against the recomputed sighash and signer, so a cached
    signature can never vouch for a different message.
    """

    def __init__(self, chain_id: int, max_entries: int = 50_000) -> None:
        self.chain_id = chain_id
        self._ok: dict[bytes, tuple[bytes, bytes]] = {}
        self._max = max_entries

    def verify(self, msg: SignedMessage) -> bool:
        """True iff ``msg`` is validly signed by ``msg.signer`` in this chain."""
        if len(msg.payload) <= SMALL_PAYLOAD_BYTES:
            return msg.verify(self.chain_id)  # votes: the process-wide cache
        try:
            h = msg.sighash(self.chain_id)
        except ValueError:
            return False
        if self._ok.get(msg.signature) == (h, msg.signer):
            return True
        if recover_signer(h, msg.signature) != msg.signer:
            return False
        if len(self._ok) >= self._max:
            self._ok.clear()  # simple bound; a miss only costs one recovery
        self._ok[msg.signature] = (h, msg.signer)
        return True


def _uint(raw: object) -> int:
    if not isinstance(raw, bytes) or len(raw) > 32 or (raw and raw[0] == 0):
        raise MalformedError("non-canonical integer")
    return int.from_bytes(raw, "big")


def _bytes(raw: object, sizes: tuple[int, ...]) -> bytes:
    if not isinstance(raw, bytes) or len(raw) not in sizes:
        raise MalformedError(f"expected bytes of length {sizes}")
    return raw


def _list(raw: object, length: int | None = None) -> list[Any]:
    if not isinstance(raw, list) or (length is not None and len(raw) != length):
        raise MalformedError("expected a list" + (f" of {length}" if length is not None else ""))
    return raw


def _message(raw: object) -> SignedMessage:
    if not isinstance(raw, bytes):
        raise MalformedError("expected an encoded message")
    try:
        return SignedMessage.decode(raw)
    except ValueError as exc:
        raise MalformedError(str(exc)) from exc


def _decode_rlp(data: bytes) -> Any:
    try:
        return rlp.decode(data, strict=True)
    except rlp.exceptions.RLPException as exc:
        raise MalformedError(f"malformed RLP: {exc}") from exc


@dataclass(frozen=True)
class PreparedCertificate:
    """A PRE-PREPARE and ``q - 1`` matching PREPAREs from distinct backups."""

    pre_prepare: SignedMessage
    prepares: tuple[SignedMessage, ...]  # sorted by signer

    @property
    def height(self) -> int:
        """Height the block was prepared at."""
        return self.pre_prepare.height

    @property
    def view(self) -> int:
        """View the block was prepared in."""
        return self.pre_prepare.round

    @property
    def digest(self) -> Hash32:
        """Hash of the prepared block."""
        return self.pre_prepare.digest

    def to_rlp(self) -> list[Any]:
        """RLP structure ``[pre_prepare, [prepare...]]``."""
        return [self.pre_prepare.encode(), [p.encode() for p in self.prepares]]

    @classmethod
    def from_rlp(cls, item: object) -> PreparedCertificate:
        """Inverse of :meth:`to_rlp`."""
        pp_raw, prepares_raw = _list(item, 2)
        return cls(_message(pp_raw), tuple(_message(p) for p in _list(prepares_raw)))

    def verify(self, sigs: SignatureCache, validators: ValidatorSet) -> None:
        """Raise :class:`ProofError` unless this proves a quorum prepared the block."""
        pp = self.pre_prepare
        if pp.engine != EngineId.PBFT or pp.kind != Kind.PRE_PREPARE or len(pp.digest) != 32:
            raise ProofError("prepared certificate: not a PBFT pre-prepare")
        primary = validators.member_at(pp.round)
        if pp.signer != primary:
            raise ProofError("prepared certificate: pre-prepare not by the view's primary")
        if not sigs.verify(pp):
            raise ProofError("prepared certificate: bad pre-prepare signature")
        signers: set[bytes] = set()
        for p in self.prepares:
            if (p.engine, p.kind, p.height, p.round, p.digest) != (
                EngineId.PBFT,
                Kind.PREPARE,
                pp.height,
                pp.round,
                pp.digest,
            ) or p.payload:
                raise ProofError("prepared certificate: prepare does not match")
            if p.signer == primary or p.signer not in validators or p.signer in signers:
                raise ProofError("prepared certificate: prepare from a wrong signer")
            if not sigs.verify(p):
                raise ProofError("prepared certificate: bad prepare signature")
            signers.add(p.signer)
        if len(signers) + 1 < validators.quorum:
            raise ProofError("prepared certificate: fewer than a quorum")


@dataclass(frozen=True)
class CheckpointProof:
    """Proof that the block ``digest`` at checkpoint ``height`` is decided."""

    height: int
    digest: Hash32
    checkpoints: tuple[SignedMessage, ...] = ()  # q CHECKPOINT messages, sorted by signer
    certificate: CommitCertificate | None = None  # or a commit certificate

    @classmethod
    def genesis(cls) -> CheckpointProof:
        """The anchor every replica starts from (height 0, needs no proof)."""
        return cls(0, ZERO_HASH)

    def to_rlp(self) -> list[Any]:
        """RLP structure ``[height, digest, [checkpoint...], certificate or b""]``."""
        cert = self.certificate.encode() if self.certificate is not None else b""
        return [self.height, self.digest, [c.encode() for c in self.checkpoints], cert]

    @classmethod
    def from_rlp(cls, item: object) -> CheckpointProof:
        """Inverse of :meth:`to_rlp`."""
        height_raw, digest_raw, cps_raw, cert_raw = _list(item, 4)
        return cls(
            _uint(height_raw),
            Hash32(_bytes(digest_raw, (32,))),
            tuple(_message(c) for c in _list(cps_raw)),
            _certificate(cert_raw),
        )

    def verify(self, sigs: SignatureCache, validators: ValidatorSet) -> None:
        """Raise :class:`ProofError` unless the proof holds (genesis always holds)."""
        if self.height == 0:
            if self.checkpoints or self.certificate is not None:
                raise ProofError("checkpoint proof: genesis carries no proof")
            return
        if self.certificate is not None:
            self._verify_certificate(sigs.chain_id, validators)
            return
        signers: set[bytes] = set()
        for c in self.checkpoints:
            if (c.engine, c.kind, c.height, c.round, c.digest) != (
                EngineId.PBFT,
                Kind.CHECKPOINT,
                self.height,
                0,
                self.digest,
            ) or c.payload:
                raise ProofError("checkpoint proof: message does not match")
            if c.signer not in validators or c.signer in signers or not sigs.verify(c):
                raise ProofError("checkpoint proof: bad or duplicate signer")
            signers.add(c.signer)
        if len(signers) < validators.quorum:
            raise ProofError("checkpoint proof: fewer than a quorum")

    def _verify_certificate(self, chain_id: int, validators: ValidatorSet) -> None:
        cert = self.certificate
        assert cert is not None
        if self.checkpoints:
            raise ProofError("checkpoint proof: both messages and a certificate")
        if (cert.height, cert.block_hash) != (self.height, self.digest):
            raise ProofError("checkpoint proof: certificate is for another block")
        verify_commit_certificate(cert, chain_id, validators)


def _certificate(raw: object) -> CommitCertificate | None:
    if raw == b"":
        return None
    if not isinstance(raw, bytes):
        raise MalformedError("certificate must be bytes")
    try:
        return CommitCertificate.decode(raw)
    except CertificateError as exc:
        raise MalformedError(str(exc)) from exc


def verify_commit_certificate(
    cert: CommitCertificate, chain_id: int, validators: ValidatorSet
) -> None:
    """Raise :class:`ProofError` unless ``cert`` is a valid PBFT commit certificate."""
    if (cert.engine, cert.kind) != (EngineId.PBFT, Kind.COMMIT):
        raise ProofError("certificate: not a PBFT commit certificate")
    try:
        cert.verify(chain_id, validators)
    except CertificateError as exc:
        raise ProofError(f"certificate: {exc}") from exc


@dataclass(frozen=True)
class ViewChangeBody:
    """Payload of VIEW-CHANGE: stable checkpoint proof and prepared certificates above it.

    ``attempt`` distinguishes retransmissions (a lost VIEW-CHANGE is re-sent re-signed, so
    the replay filter does not swallow it); ``amnesiac`` marks a VIEW-CHANGE signed by a
    replica that lost its votes (see the votes-lost rule in :mod:`node.consensus.pbft`);
    ``committed`` is the sender's latest commit certificate, if it holds one: it shows a
    lagging receiver (a new primary, typically) how far the chain got, so it catches up.
    """

    checkpoint: CheckpointProof
    prepared: tuple[PreparedCertificate, ...]  # sorted by height, one per height
    attempt: int = 0
    amnesiac: bool = False
    committed: CommitCertificate | None = None

    def encode(self) -> bytes:
        """Canonical RLP ``[attempt, amnesiac, checkpoint, [prepared...], committed]``."""
        return bytes(
            rlp.encode(
                [
                    self.attempt,
                    int(self.amnesiac),
                    self.checkpoint.to_rlp(),
                    [c.to_rlp() for c in self.prepared],
                    self.committed.encode() if self.committed is not None else b"",
                ]
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> ViewChangeBody:
        """Inverse of :meth:`encode`."""
        attempt, amnesiac, cp, prepared, committed = _list(_decode_rlp(data), 5)
        flag = _uint(amnesiac)
        if flag > 1:
            raise MalformedError("view change: amnesiac flag is 0 or 1")
        return cls(
            CheckpointProof.from_rlp(cp),
            tuple(PreparedCertificate.from_rlp(c) for c in _list(prepared)),
            _uint(attempt),
            bool(flag),
            _certificate(committed),
        )

    def verify(self, sigs: SignatureCache, validators_at: ValidatorsAt, new_view: int) -> None:
        """Raise :class:`ProofError` unless the checkpoint and every certificate hold."""
        if self.committed is not None:
            c = self.committed
            verify_commit_certificate(c, sigs.chain_id, validators_at(c.height))
        self.checkpoint.verify(sigs, validators_at(self.checkpoint.height))
        last = self.checkpoint.height
        for cert in self.prepared:
            if cert.height <= last:
                raise ProofError("view change: certificates not above checkpoint / unsorted")
            if cert.view >= new_view:
                raise ProofError("view change: certificate from a view not below the new one")
            cert.verify(sigs, validators_at(cert.height))
            last = cert.height


@dataclass(frozen=True)
class Reproposal:
    """One height of a NEW-VIEW: the re-issued PRE-PREPARE's digest and signature, or null."""

    height: int
    digest: bytes = b""  # b"" for null: nothing was prepared, the primary proposes afresh
    signature: bytes = b""

    @property
    def is_null(self) -> bool:
        """True when nothing prepared at this height had to be carried over."""
        return not self.digest


@dataclass(frozen=True)
class NewViewBody:
    """Payload of NEW-VIEW: the quorum of VIEW-CHANGEs and the re-proposals."""

    view_changes: tuple[SignedMessage, ...]  # sorted by signer
    reproposals: tuple[Reproposal, ...]  # consecutive heights above the chosen checkpoint

    def encode(self) -> bytes:
        """Canonical RLP ``[[view_change...], [[height, digest, signature]...]]``."""
        return bytes(
            rlp.encode(
                [
                    [v.encode() for v in self.view_changes],
                    [[r.height, r.digest, r.signature] for r in self.reproposals],
                ]
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> NewViewBody:
        """Inverse of :meth:`encode`."""
        vcs_raw, props_raw = _list(_decode_rlp(data), 2)
        props = []
        for item in _list(props_raw):
            h, d, s = _list(item, 3)
            props.append(Reproposal(_uint(h), _bytes(d, (0, 32)), _bytes(s, (0, 65))))
        return cls(tuple(_message(v) for v in _list(vcs_raw)), tuple(props))


Vote = tuple[int, int, int, Hash32]
"""An own vote: ``(kind, height, round, digest)``."""


@dataclass(frozen=True)
class HardState:
    """What a replica must remember across a crash (the bytes in ``Ready.persist``).

    ``floor`` is the height at or below which the replica never votes again (its
    committed height or stable checkpoint, whichever is higher, as of the last persist);
    ``votes`` are its own PRE-PREPARE/PREPARE/COMMIT digests above the floor;
    ``prepared`` its prepared certificates above the floor (its "locks"); ``view`` and
    ``active`` say which view it is in and whether that view was installed or is still
    being changed to; ``new_view_built`` is the last view it built a NEW-VIEW for;
    ``no_commit_view`` is a view it rejoined after asking to leave it, in which it must
    never COMMIT (see the rejoin rule in :mod:`node.consensus.pbft_viewchange`).
    """

    view: int
    active: bool
    floor: int
    stable: CheckpointProof
    votes: tuple[Vote, ...] = ()
    prepared: tuple[PreparedCertificate, ...] = ()
    new_view_built: int = 0
    vc_attempt: int = 0
    amnesiac: bool = False
    plan: tuple[tuple[int, bytes], ...] = ()  # active view's NEW-VIEW: (height, digest or b"")
    no_commit_view: int | None = None  # a view rejoined after asking to leave it

    def encode(self) -> bytes:
        """Canonical RLP (sorted votes and certificates)."""
        return bytes(
            rlp.encode(
                [
                    HARD_STATE_VERSION,
                    self.view,
                    int(self.active),
                    self.floor,
                    self.stable.to_rlp(),
                    [list(v) for v in sorted(self.votes)],
                    [c.to_rlp() for c in sorted(self.prepared, key=lambda c: c.height)],
                    self.new_view_built,
                    self.vc_attempt,
                    int(self.amnesiac),
                    [[h, d] for h, d in sorted(self.plan)],
                    0 if self.no_commit_view is None else self.no_commit_view + 1,
                ]
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> HardState:
        """Inverse of :meth:`encode`; raises :class:`ProofError` when malformed."""
        items = _list(_decode_rlp(data), 12)
        if _uint(items[0]) != HARD_STATE_VERSION:
            raise MalformedError("hard state: unknown version")
        votes = []
        for v in _list(items[5]):
            kind, height, round_, digest = _list(v, 4)
            votes.append((_uint(kind), _uint(height), _uint(round_), Hash32(_bytes(digest, (32,)))))
        plan = []
        for entry in _list(items[10]):
            h, d = _list(entry, 2)
            plan.append((_uint(h), _bytes(d, (0, 32))))
        return cls(
            view=_uint(items[1]),
            active=bool(_uint(items[2])),
            floor=_uint(items[3]),
            stable=CheckpointProof.from_rlp(items[4]),
            votes=tuple(votes),
            prepared=tuple(PreparedCertificate.from_rlp(c) for c in _list(items[6])),
            new_view_built=_uint(items[7]),
            vc_attempt=_uint(items[8]),
            amnesiac=bool(_uint(items[9])),
            plan=tuple(plan),
            no_commit_view=_uint(items[11]) - 1 if _uint(items[11]) else None,
        )
