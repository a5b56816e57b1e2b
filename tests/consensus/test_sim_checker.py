"""The simulator's invariant checker, fed hand-made events: each invariant fires."""

from __future__ import annotations

from eth_hash.auto import keccak

from node.consensus.certificate import CommitCertificate
from node.consensus.engine import CommittedBlock
from node.consensus.evidence import EquivocationEvidence
from node.consensus.messages import EngineId, Kind, Signer
from node.consensus.sim.blocks import block_hash, make_block
from node.consensus.sim.checker import SafetyChecker
from node.consensus.types import ZERO_HASH, Hash32, ValidatorSet

CHAIN = 77
SIGNERS = [Signer(keccak(b"checker %d" % i)) for i in range(4)]
VSET = ValidatorSet(0, tuple(s.address for s in SIGNERS))
HONEST = frozenset(s.address for s in SIGNERS[:3])  # SIGNERS[3] is Byzantine


def _checker() -> SafetyChecker:
    return SafetyChecker(CHAIN, Kind.COMMIT, lambda _h: VSET, HONEST)


def _committed(height: int, parent: Hash32, data: bytes, voters: int = 3) -> CommittedBlock:
    payload = make_block(height, parent, SIGNERS[0].address, data)
    digest = block_hash(payload)
    votes = [s.sign(CHAIN, EngineId.PBFT, Kind.COMMIT, height, 0, digest) for s in SIGNERS]
    return CommittedBlock(height, digest, payload, CommitCertificate.from_votes(votes[:voters]))


def _invariants(checker: SafetyChecker) -> list[str]:
    return [v.invariant for v in checker.violations]


def test_a_clean_chain_passes() -> None:
    c = _checker()
    b1 = _committed(1, ZERO_HASH, b"a")
    b2 = _committed(2, b1.block_hash, b"b")
    for replica in range(3):
        c.on_commit(replica, b1, 1)
        c.on_commit(replica, b2, 2)
    assert c.violations == []
    assert c.tip(0) == 2


def test_agreement_two_blocks_at_one_height() -> None:
    c = _checker()
    c.on_commit(0, _committed(1, ZERO_HASH, b"a"), 1)
    c.on_commit(1, _committed(1, ZERO_HASH, b"b"), 1)
    assert _invariants(c) == ["agreement"]


def test_certificate_below_quorum() -> None:
    c = _checker()
    c.on_commit(0, _committed(1, ZERO_HASH, b"a", voters=2), 1)
    assert _invariants(c) == ["certificate"]


def test_certificate_for_another_block() -> None:
    c = _checker()
    good, other = _committed(1, ZERO_HASH, b"a"), _committed(1, ZERO_HASH, b"b")
    c.on_commit(0, CommittedBlock(1, good.block_hash, good.payload, other.certificate), 1)
    assert _invariants(c) == ["certificate"]


def test_validity_invalid_block_and_broken_parent_link() -> None:
    c = _checker()
    c.on_commit(0, _committed(1, ZERO_HASH, b"INVALID"), 1)
    c.on_commit(1, _committed(1, Hash32(b"\x01" * 32), b"x"), 1)
    assert _invariants(c) == ["validity", "validity", "agreement"]


def test_revert_and_order() -> None:
    c = _checker()
    b1 = _committed(1, ZERO_HASH, b"a")
    c.on_commit(0, b1, 1)
    c.on_commit(0, _committed(1, ZERO_HASH, b"b"), 2)  # replaces a committed block
    c.on_commit(0, _committed(3, b1.block_hash, b"c"), 3)  # skips height 2
    assert _invariants(c)[:2] == ["revert", "order"]


def test_honest_equivocation_is_flagged_byzantine_is_not() -> None:
    c = _checker()
    for signer in (SIGNERS[0], SIGNERS[3]):
        for digest in (b"\x01" * 32, b"\x02" * 32):
            c.on_honest_send(0, signer.sign(CHAIN, EngineId.PBFT, Kind.PREPARE, 1, 0, digest), 1)
    assert _invariants(c) == ["honest-equivocation"]


def _evidence(signer: Signer) -> EquivocationEvidence:
    a = signer.sign(CHAIN, EngineId.PBFT, Kind.PREPARE, 4, 1, b"\x01" * 32)
    b = signer.sign(CHAIN, EngineId.PBFT, Kind.PREPARE, 4, 1, b"\x02" * 32)
    return EquivocationEvidence(a, b)


def test_evidence_must_verify_and_accuse_a_byzantine_validator() -> None:
    c = _checker()
    c.on_evidence(0, _evidence(SIGNERS[3]), 1)
    assert c.violations == []
    c.on_evidence(0, _evidence(SIGNERS[1]), 1)
    ev = _evidence(SIGNERS[3])
    c.on_evidence(0, EquivocationEvidence(ev.first, ev.first), 1)
    assert _invariants(c) == ["false-evidence", "bogus-evidence"]


def test_equivocation_reaching_one_replica_must_be_caught() -> None:
    c = _checker()
    ev = _evidence(SIGNERS[3])
    c.on_byzantine_admitted(0, 1, ev.first, 1)
    c.on_byzantine_admitted(1, 1, ev.second, 1)  # halves at different replicas: not reached
    c.check_evidence_complete(5)
    assert c.violations == []
    c.on_byzantine_admitted(0, 2, ev.second, 2)  # same replica, new incarnation: not reached
    c.check_evidence_complete(5)
    assert c.violations == []
    c.on_byzantine_admitted(0, 1, ev.second, 3)
    c.check_evidence_complete(5)
    assert _invariants(c) == ["uncaught-equivocation"]
    c.violations.clear()
    c.on_evidence(2, ev, 6)
    c.check_evidence_complete(7)
    assert c.violations == []


def test_liveness_flags_replicas_that_did_not_move() -> None:
    c = _checker()
    c.on_commit(0, _committed(1, ZERO_HASH, b"a"), 1)
    c.check_liveness([0, 1], baseline=0, since=0, tick=10)
    assert [(v.invariant, v.replica) for v in c.violations] == [("liveness", 1)]
