"""The invariants the simulator asserts after every step.

Theory of operation
-------------------
The checker is fed events as they happen (an honest replica sends, commits, reports
evidence, admits a Byzantine vote) and records a :class:`Violation` the moment an
invariant breaks, so "checked after every step" costs nothing extra. The invariants:

==========================  ===========================================================
agreement                   no two honest replicas commit different blocks at a height
validity                    a committed block is well formed, not marked invalid, hashes
                            to its claimed hash and extends the replica's previous block
certificate                 every committed block's certificate verifies against the
                            validator set and certifies that very block and height
order / revert              a replica commits heights one by one and never replaces a
                            committed (DPoS: final) block
honest-equivocation         no honest replica signs two digests for one slot (checked
                            by an EquivocationDetector over everything honest replicas send)
bogus-evidence              evidence emitted by an honest engine verifies
false-evidence              ... and never accuses an honest validator
uncaught-equivocation       a Byzantine equivocation whose both halves were admitted by one
                            honest replica (one incarnation) yields evidence from someone
liveness                    after faults heal, every honest replica commits a new height
                            within the liveness bound
==========================  ===========================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from node.consensus.certificate import CommitCertificate
from node.consensus.engine import CommittedBlock
from node.consensus.evidence import EquivocationDetector, EquivocationEvidence
from node.consensus.messages import EQUIVOCATION_KINDS, SignedMessage, recover_signer
from node.consensus.sim.blocks import intrinsic_info
from node.consensus.types import ZERO_HASH, Address, Hash32, ValidatorSet

SlotKey = tuple[bytes, int, int, int, int]  # (signer, engine, kind, height, round)


@dataclass(frozen=True)
class Violation:
    """One broken invariant, with enough context to start debugging."""

    tick: int
    invariant: str
    replica: int | None
    detail: str

    def __str__(self) -> str:
        who = "-" if self.replica is None else f"r{self.replica}"
        return f"[tick {self.tick}] {self.invariant} ({who}): {self.detail}"


@dataclass
class _Tip:
    height: int = 0
    hash: Hash32 = ZERO_HASH


@dataclass
class _Reach:
    """Digests of one Byzantine slot admitted by one honest replica incarnation."""

    digests: list[bytes] = field(default_factory=list)


class SafetyChecker:
    """Records every invariant violation of one simulated run."""

    def __init__(
        self,
        chain_id: int,
        commit_kind: int,
        validators_at: Callable[[int], ValidatorSet],
        honest: frozenset[Address],
    ) -> None:
        self.chain_id = chain_id
        self.commit_kind = commit_kind
        self.validators_at = validators_at
        self.honest = honest
        self.violations: list[Violation] = []
        self.canonical: dict[int, Hash32] = {}
        self._tips: dict[int, _Tip] = {}
        self._history: dict[int, dict[int, Hash32]] = {}
        self._recovered: dict[tuple[bytes, bytes], bytes | None] = {}
        self._detector = EquivocationDetector(max_entries=10_000_000)
        self._reach: dict[tuple[int, int, SlotKey], _Reach] = {}
        self.reached: dict[SlotKey, int] = {}  # Byzantine slot -> tick first reached
        self.caught: set[SlotKey] = set()
        self.evidence_reports = 0

    def _fail(self, tick: int, invariant: str, replica: int | None, detail: str) -> None:
        self.violations.append(Violation(tick, invariant, replica, detail))

    # -- what honest replicas sign ----------------------------------------------------

    def on_honest_send(self, replica: int, msg: SignedMessage, tick: int) -> None:
        """An honest replica put ``msg`` on the wire (only its own signatures count)."""
        if msg.signer not in self.honest:
            return
        evidence = self._detector.observe(msg)
        if evidence is not None:
            a, b = evidence.first, evidence.second
            self._fail(
                tick,
                "honest-equivocation",
                replica,
                f"0x{msg.signer.hex()[:8]} signed kind {a.kind} h={a.height} r={a.round} "
                f"for {a.digest.hex()[:8]} and {b.digest.hex()[:8]}",
            )

    # -- commits ----------------------------------------------------------------------

    def on_commit(self, replica: int, block: CommittedBlock, tick: int) -> None:
        """An honest replica committed ``block``: check everything about it."""
        tip = self._tips.setdefault(replica, _Tip())
        where = f"h={block.height} {block.block_hash.hex()[:8]}"
        if block.height <= tip.height:
            kind = "revert" if self._hash_at(replica, block.height) != block.block_hash else "order"
            self._fail(tick, kind, replica, f"{where} committed again at tip {tip.height}")
            return
        if block.height != tip.height + 1:
            self._fail(tick, "order", replica, f"{where} skips heights after {tip.height}")
        self._check_certificate(replica, block, tick, where)
        self._check_validity(replica, block, tip, tick, where)
        first = self.canonical.setdefault(block.height, block.block_hash)
        if first != block.block_hash:
            self._fail(
                tick,
                "agreement",
                replica,
                f"{where} but another honest replica committed {first.hex()[:8]}",
            )
        self._history.setdefault(replica, {})[block.height] = block.block_hash
        tip.height, tip.hash = block.height, block.block_hash

    def _hash_at(self, replica: int, height: int) -> Hash32 | None:
        return self._history.get(replica, {}).get(height)

    def _check_certificate(
        self, replica: int, block: CommittedBlock, tick: int, where: str
    ) -> None:
        cert = block.certificate
        if cert.block_hash != block.block_hash or cert.height != block.height:
            self._fail(
                tick,
                "certificate",
                replica,
                f"{where}: certificate is for h={cert.height} {cert.block_hash.hex()[:8]}",
            )
            return
        if cert.kind != self.commit_kind:
            self._fail(tick, "certificate", replica, f"{where}: vote kind {cert.kind}")
            return
        error = self._certificate_error(cert, self.validators_at(block.height))
        if error is not None:
            self._fail(tick, "certificate", replica, f"{where}: {error}")

    def _certificate_error(self, cert: CommitCertificate, vset: ValidatorSet) -> str | None:
        """``CommitCertificate.verify`` with each signature recovered once per run.

        Replicas assemble different certificates for one block from overlapping votes; the
        cache keys on (signature, vote hash), so it vouches only for what it checked.
        """
        h = cert.vote_hash(self.chain_id)
        seen: set[bytes] = set()
        for i, (signer, signature) in enumerate(cert.signatures):
            if signer in seen:
                return f"signature {i}: duplicate signer 0x{signer.hex()}"
            if signer not in vset:
                return f"signature {i}: 0x{signer.hex()} is not a validator"
            key = (signature, h)
            if key not in self._recovered:
                self._recovered[key] = recover_signer(h, signature)
            if self._recovered[key] != signer:
                return f"signature {i}: invalid signature by 0x{signer.hex()}"
            seen.add(signer)
        if len(seen) < vset.quorum:
            return f"only {len(seen)} signatures, quorum is {vset.quorum}"
        return None

    def _check_validity(
        self, replica: int, block: CommittedBlock, tip: _Tip, tick: int, where: str
    ) -> None:
        info = intrinsic_info(block.payload)
        if info is None:
            self._fail(tick, "validity", replica, f"{where}: invalid or malformed block")
        elif info.hash != block.block_hash or info.height != block.height:
            self._fail(
                tick,
                "validity",
                replica,
                f"{where}: payload is h={info.height} {info.hash.hex()[:8]}",
            )
        elif block.height == tip.height + 1 and info.parent_hash != tip.hash:
            self._fail(
                tick,
                "validity",
                replica,
                f"{where}: parent {info.parent_hash.hex()[:8]}"
                f" is not the previous block {tip.hash.hex()[:8]}",
            )

    def tip(self, replica: int) -> int:
        """Height of the last block ``replica`` committed."""
        return self._tips.get(replica, _Tip()).height

    # -- evidence ---------------------------------------------------------------------

    def on_evidence(self, replica: int, evidence: EquivocationEvidence, tick: int) -> None:
        """An honest engine reported evidence: it must verify and accuse a Byzantine."""
        self.evidence_reports += 1
        vset = self.validators_at(max(1, evidence.first.height))
        try:
            evidence.verify(self.chain_id, vset)
        except ValueError as exc:
            self._fail(tick, "bogus-evidence", replica, str(exc))
            return
        if evidence.validator in self.honest:
            self._fail(
                tick, "false-evidence", replica, f"accuses honest 0x{evidence.validator.hex()[:8]}"
            )
        self.caught.add(evidence.key())

    def on_byzantine_admitted(
        self, replica: int, incarnation: int, msg: SignedMessage, tick: int
    ) -> None:
        """An honest replica admitted a Byzantine-signed vote (not dropped on admission)."""
        if msg.kind not in EQUIVOCATION_KINDS:
            return
        slot: SlotKey = (msg.signer, *msg.slot())
        reach = self._reach.setdefault((replica, incarnation, slot), _Reach())
        if msg.digest not in reach.digests:
            reach.digests.append(msg.digest)
        if len(reach.digests) >= 2:
            self.reached.setdefault(slot, tick)

    def check_evidence_complete(self, tick: int) -> None:
        """Every reached Byzantine equivocation must have been reported by someone."""
        for slot, when in self.reached.items():
            if slot not in self.caught:
                signer, _engine, kind, height, round_ = slot
                self._fail(
                    tick,
                    "uncaught-equivocation",
                    None,
                    f"0x{signer.hex()[:8]} kind {kind} h={height} r={round_} reached "
                    f"an honest replica at tick {when}, no evidence emitted",
                )

    # -- liveness ---------------------------------------------------------------------

    def check_liveness(self, replicas: list[int], baseline: int, since: int, tick: int) -> None:
        """Each honest replica must have committed above ``baseline`` by now."""
        for r in replicas:
            if self.tip(r) <= baseline:
                self._fail(
                    tick,
                    "liveness",
                    r,
                    f"no new height since faults healed at tick "
                    f"{since}: tip {self.tip(r)}, baseline {baseline}",
                )
