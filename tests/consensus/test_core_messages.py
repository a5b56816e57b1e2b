"""Properties of the consensus core: quorums, signed messages, certificates, evidence."""

from __future__ import annotations

import contextlib

import pytest
from eth_hash.auto import keccak
from hypothesis import given
from hypothesis import strategies as st

from node.consensus.certificate import CertificateError, CommitCertificate
from node.consensus.engine import MessageFilter
from node.consensus.evidence import EquivocationDetector, EquivocationEvidence, EvidenceError
from node.consensus.messages import EngineId, Kind, SignedMessage, Signer
from node.consensus.types import ValidatorSet, max_faulty, quorum_size

CHAIN = 7
SIGNERS = [Signer(keccak(bytes([i]))) for i in range(7)]
VSET4 = ValidatorSet(0, tuple(s.address for s in SIGNERS[:4]))
BLOCK = keccak(b"block")


@pytest.mark.parametrize("n", range(1, 40))
def test_any_two_quorums_share_an_honest_validator(n: int) -> None:
    q, f = quorum_size(n), max_faulty(n)
    assert 2 * q - n >= f + 1  # safety: intersection holds an honest replica
    assert q <= n - f  # liveness: honest replicas alone form a quorum


def test_quorum_is_2f_plus_1_when_n_is_3f_plus_1() -> None:
    for f in range(0, 6):
        assert quorum_size(3 * f + 1) == 2 * f + 1


def test_message_signature_is_bound_to_the_chain_id() -> None:
    msg = SIGNERS[0].sign(CHAIN, EngineId.PBFT, Kind.PREPARE, 3, 1, BLOCK)
    assert msg.verify(CHAIN)
    assert not msg.verify(CHAIN + 1)


def test_message_roundtrips_through_rlp() -> None:
    msg = SIGNERS[1].sign(CHAIN, EngineId.DPOS, Kind.BLOCK, 9, 4, BLOCK, b"payload")
    assert SignedMessage.decode(msg.encode()) == msg


@given(st.binary(max_size=300))
def test_malformed_message_bytes_raise_value_error_only(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        SignedMessage.decode(data)


def test_tampered_message_fails_verification() -> None:
    msg = SIGNERS[0].sign(CHAIN, EngineId.PBFT, Kind.COMMIT, 3, 0, BLOCK)
    forged = SignedMessage(
        msg.engine,
        msg.kind,
        msg.height + 1,
        msg.round,
        msg.digest,
        msg.payload,
        msg.signer,
        msg.signature,
    )
    assert not forged.verify(CHAIN)


def _commits(signers: list[Signer], digest: bytes = BLOCK) -> list[SignedMessage]:
    return [s.sign(CHAIN, EngineId.PBFT, Kind.COMMIT, 5, 2, digest) for s in signers]


def test_certificate_with_a_quorum_verifies_offline() -> None:
    cert = CommitCertificate.from_votes(_commits(SIGNERS[:3]))
    cert.verify(CHAIN, VSET4)
    assert CommitCertificate.decode(cert.encode()) == cert


def test_certificate_below_quorum_is_rejected() -> None:
    cert = CommitCertificate.from_votes(_commits(SIGNERS[:2]))
    with pytest.raises(CertificateError, match="quorum is 3"):
        cert.verify(CHAIN, VSET4)


def test_certificate_with_an_outsider_signature_is_rejected() -> None:
    cert = CommitCertificate.from_votes(_commits([*SIGNERS[:2], SIGNERS[5]]))
    with pytest.raises(CertificateError, match="not a validator"):
        cert.verify(CHAIN, VSET4)


def test_certificate_with_a_flipped_signature_byte_is_rejected() -> None:
    cert = CommitCertificate.from_votes(_commits(SIGNERS[:3]))
    signer, sig = cert.signatures[0]
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    tampered = CommitCertificate(
        cert.engine,
        cert.kind,
        cert.height,
        cert.round,
        cert.block_hash,
        ((signer, bad), *cert.signatures[1:]),
    )
    with pytest.raises(CertificateError, match="signature 0"):
        tampered.verify(CHAIN, VSET4)


def test_certificate_for_another_block_hash_is_rejected() -> None:
    cert = CommitCertificate.from_votes(_commits(SIGNERS[:3]))
    moved = CommitCertificate(
        cert.engine, cert.kind, cert.height, cert.round, keccak(b"other"), cert.signatures
    )
    assert not moved.is_valid(CHAIN, VSET4)


def test_conflicting_votes_become_verifiable_evidence() -> None:
    detector = EquivocationDetector()
    a = SIGNERS[2].sign(CHAIN, EngineId.PBFT, Kind.PREPARE, 4, 0, keccak(b"a"))
    b = SIGNERS[2].sign(CHAIN, EngineId.PBFT, Kind.PREPARE, 4, 0, keccak(b"b"))
    assert detector.observe(a) is None
    evidence = detector.observe(b)
    assert evidence is not None
    evidence.verify(CHAIN, VSET4)
    assert EquivocationEvidence.decode(evidence.encode()).is_valid(CHAIN, VSET4)
    assert detector.observe(b) is None  # reported once


def test_votes_in_different_rounds_are_not_equivocation() -> None:
    a = SIGNERS[2].sign(CHAIN, EngineId.PBFT, Kind.PREPARE, 4, 0, keccak(b"a"))
    b = SIGNERS[2].sign(CHAIN, EngineId.PBFT, Kind.PREPARE, 4, 1, keccak(b"b"))
    with pytest.raises(EvidenceError, match="different slots"):
        EquivocationEvidence(a, b).verify(CHAIN, VSET4)


def test_message_filter_drops_and_counts_each_reason() -> None:
    filt = MessageFilter(CHAIN, EngineId.PBFT)
    good = SIGNERS[0].sign(CHAIN, EngineId.PBFT, Kind.PREPARE, 5, 0, BLOCK)
    assert filt.admit(good, VSET4, 1, 10)
    assert not filt.admit(good, VSET4, 1, 10)  # replay
    wrong_engine = SIGNERS[0].sign(CHAIN, EngineId.DPOS, Kind.CONFIRM, 5, 0, BLOCK)
    assert not filt.admit(wrong_engine, VSET4, 1, 10)
    outsider = SIGNERS[6].sign(CHAIN, EngineId.PBFT, Kind.PREPARE, 5, 0, BLOCK)
    assert not filt.admit(outsider, VSET4, 1, 10)
    late = SIGNERS[1].sign(CHAIN, EngineId.PBFT, Kind.PREPARE, 50, 0, BLOCK)
    assert not filt.admit(late, VSET4, 1, 10)
    other_chain = SIGNERS[1].sign(CHAIN + 1, EngineId.PBFT, Kind.PREPARE, 5, 0, BLOCK)
    assert not filt.admit(other_chain, VSET4, 1, 10)
    unsigned = SignedMessage(1, 2, 5, 0, BLOCK, b"", SIGNERS[1].address, b"\x00" * 65)
    assert not filt.admit(unsigned, VSET4, 1, 10)
    assert dict(filt.dropped) == {
        "replay": 1,
        "wrong_engine": 1,
        "not_validator": 1,
        "out_of_window": 1,
        "bad_signature": 1,
        "unsigned": 1,
    }
