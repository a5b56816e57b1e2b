"""A deliberately tiny BFT engine for testing the simulator itself (not a real protocol).

Height ``h`` is proposed by ``members[h % n]`` (round 0 only, no view change, no catch-up):
the proposer signs a PRE-PREPARE carrying the block, every replica that validates it signs
one COMMIT, and a quorum of COMMITs commits the block with their certificate. Knobs break
it on purpose so the tests can show that the simulator catches the breakage:

- ``quorum``: commit on fewer votes than a real quorum (agreement breaks under equivocation);
- ``persist=False``: keep votes only in memory (a restarted replica double-signs);
- ``vote_invalid=True``: vote without validating (invalid blocks get committed).
"""

from __future__ import annotations

from collections import defaultdict

import rlp

from node.consensus.certificate import CommitCertificate
from node.consensus.engine import (
    BlockValidator,
    CommittedBlock,
    EngineStatus,
    MessageFilter,
    Outbound,
    ProposalRequest,
    Ready,
)
from node.consensus.evidence import EquivocationDetector, EquivocationEvidence
from node.consensus.messages import EngineId, Kind, SignedMessage, Signer
from node.consensus.sim.blocks import block_hash
from node.consensus.sim.engines import EngineSpec, register_engine
from node.consensus.sim.host import EngineFactory
from node.consensus.types import Hash32, ValidatorSet


class ToyEngine:
    """See the module docstring."""

    def __init__(
        self,
        chain_id: int,
        signer: Signer,
        validators: ValidatorSet,
        validate: BlockValidator,
        committed_height: int,
        committed_hash: Hash32,
        hard_state: bytes | None,
        *,
        quorum: int | None = None,
        persist: bool = True,
        vote_invalid: bool = False,
    ) -> None:
        self.chain_id, self.signer, self.vset, self.validate = (
            chain_id,
            signer,
            validators,
            validate,
        )
        self.quorum = quorum or validators.quorum
        self.persist_votes, self.vote_invalid = persist, vote_invalid
        self.h, self.tip = committed_height + 1, committed_hash
        self.filter = MessageFilter(chain_id, EngineId.PBFT)
        self.detector = EquivocationDetector()
        self.signed: dict[tuple[int, int], bytes] = {}
        if hard_state:
            for kind, height, digest in rlp.decode(hard_state):
                self.signed[(int.from_bytes(kind, "big"), int.from_bytes(height, "big"))] = digest
        self.blocks: dict[bytes, bytes] = {}
        self.votes: dict[tuple[int, bytes], dict[bytes, SignedMessage]] = defaultdict(dict)
        self.future: list[SignedMessage] = []
        self._out: list[Outbound] = []
        self._committed: list[CommittedBlock] = []
        self._evidence: list[EquivocationEvidence] = []
        self._persist = False
        self._propose: ProposalRequest | None = None
        self._maybe_request()

    def _maybe_request(self) -> None:
        if self.vset.member_at(self.h) == self.signer.address and (
            (Kind.PRE_PREPARE, self.h) not in self.signed
        ):
            self._propose = ProposalRequest(self.h, 0, self.tip)

    def _sign(self, kind: Kind, digest: bytes, payload: bytes = b"") -> SignedMessage | None:
        if (kind, self.h) in self.signed:
            return None
        self.signed[(kind, self.h)] = digest
        self._persist = self.persist_votes
        msg = self.signer.sign(self.chain_id, EngineId.PBFT, kind, self.h, 0, digest, payload)
        self._out.append(Outbound(None, msg))
        if kind == Kind.COMMIT:
            self.votes[(self.h, digest)][self.signer.address] = msg
        return msg

    def tick(self) -> None:
        """No timeouts in the toy."""

    def propose(self, payload: bytes) -> None:
        """Sign a PRE-PREPARE for the block and act on it."""
        info = self.validate(payload)
        if info is None or info.height != self.h:
            return
        msg = self._sign(Kind.PRE_PREPARE, info.hash, payload)
        if msg is not None:
            self._handle(msg)

    def step(self, message: SignedMessage) -> None:
        """Admit, detect equivocation, buffer future heights, handle the current one."""
        if not self.filter.admit(message, self.vset, self.h, self.h + 64):
            return
        evidence = self.detector.observe(message)
        if evidence is not None:
            self._evidence.append(evidence)
        if message.height > self.h:
            self.future.append(message)
        else:
            self._handle(message)

    def _handle(self, msg: SignedMessage) -> None:
        leader = self.vset.member_at(self.h)
        if msg.kind == Kind.PRE_PREPARE and msg.signer == leader:
            acceptable = self.vote_invalid or self.validate(msg.payload) is not None
            if acceptable and block_hash(msg.payload) == msg.digest:
                self.blocks[msg.digest] = msg.payload
                self._sign(Kind.COMMIT, msg.digest)
        elif msg.kind == Kind.COMMIT and not msg.payload:
            self.votes[(msg.height, msg.digest)][msg.signer] = msg
        self._try_commit()

    def _try_commit(self) -> None:
        for (height, digest), voters in list(self.votes.items()):
            if height == self.h and len(voters) >= self.quorum and digest in self.blocks:
                cert = CommitCertificate.from_votes(list(voters.values()))
                self._committed.append(
                    CommittedBlock(height, Hash32(digest), self.blocks[digest], cert)
                )
                self.h, self.tip = height + 1, Hash32(digest)
                self._maybe_request()
                pending, self.future = self.future, []
                for m in pending:
                    self.step_buffered(m)
                return

    def step_buffered(self, msg: SignedMessage) -> None:
        """Re-handle a buffered message now that its height may have come."""
        if msg.height > self.h:
            self.future.append(msg)
        elif msg.height == self.h:
            self._handle(msg)

    def deliver(self, block: CommittedBlock) -> None:
        """No catch-up in the toy."""

    def set_validators(self, validators: ValidatorSet, start_height: int) -> None:
        """Static validator set."""

    def has_ready(self) -> bool:
        """Anything to hand over?"""
        return bool(
            self._out or self._committed or self._evidence or self._persist or self._propose
        )

    def ready(self) -> Ready:
        """Everything accumulated since the last advance."""
        persist = None
        if self._persist:
            persist = bytes(rlp.encode([[k, h, d] for (k, h), d in self.signed.items()]))
        return Ready(
            persist, list(self._out), list(self._committed), list(self._evidence), self._propose
        )

    def advance(self) -> None:
        """The host handled the last Ready."""
        self._out, self._committed, self._evidence = [], [], []
        self._persist, self._propose = False, None

    def status(self) -> EngineStatus:
        """Snapshot."""
        return EngineStatus(
            "toy",
            self.h,
            0,
            0,
            self.vset.member_at(self.h),
            self.h - 1,
            0,
            0,
            dict(self.filter.dropped),
            0,
        )


def register_toy(name: str, **knobs: object) -> str:
    """Register a toy engine variant with the simulator under ``name``."""

    def build(chain_id: int, overrides: dict[str, int]) -> EngineFactory:
        def make(signer, validators, validate, height, tip, hard_state):  # type: ignore[no-untyped-def]
            return ToyEngine(
                chain_id, signer, validators, validate, height, tip, hard_state, **knobs
            )  # type: ignore[arg-type]

        return make  # type: ignore[return-value]

    register_engine(EngineSpec(name, Kind.COMMIT, build))
    return name
