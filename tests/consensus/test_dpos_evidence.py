"""DPoS equivocation evidence: double production and double confirmation are caught, and the
evidence verifies with the committee alone."""

from __future__ import annotations

from node.consensus.dpos import DposConfig, DposEngine
from node.consensus.evidence import EquivocationEvidence
from node.consensus.messages import Kind
from node.consensus.types import ZERO_HASH, ValidatorSet
from tests.consensus.dpos_harness import (
    CHAIN_ID,
    block_hash,
    block_msg,
    confirm,
    make_block,
    preconfirm,
    signers,
    validate,
)

KEYS = signers(4)
VSET = ValidatorSet(0, tuple(k.address for k in KEYS))
A = make_block(1, ZERO_HASH, b"A")
B = make_block(1, ZERO_HASH, b"B")


def _engine() -> DposEngine:
    return DposEngine(DposConfig(chain_id=CHAIN_ID), KEYS[3], VSET, validate)


def _evidence(engine: DposEngine) -> list[EquivocationEvidence]:
    found: list[EquivocationEvidence] = []
    while engine.has_ready():
        found += engine.ready().evidence
        engine.advance()
    return found


def test_producer_signing_two_blocks_for_one_slot_yields_verifiable_evidence() -> None:
    engine = _engine()
    engine.step(block_msg(KEYS[0], 1, 0, A))
    engine.step(block_msg(KEYS[0], 1, 0, B))
    (ev,) = _evidence(engine)
    ev.verify(CHAIN_ID, VSET)
    assert ev.validator == KEYS[0].address
    assert ev.first.kind == Kind.BLOCK and {ev.first.digest, ev.second.digest} == {
        block_hash(A),
        block_hash(B),
    }
    assert EquivocationEvidence.decode(ev.encode()).is_valid(CHAIN_ID, VSET)
    assert engine.status().evidence == 1


def test_delegate_confirming_conflicting_blocks_at_one_height_yields_evidence() -> None:
    engine = _engine()
    engine.step(confirm(KEYS[1], 1, 0, block_hash(A)))
    engine.step(confirm(KEYS[1], 1, 0, block_hash(B)))
    engine.step(preconfirm(KEYS[2], 1, 3, block_hash(A)))
    engine.step(preconfirm(KEYS[2], 1, 3, b""))  # nil vs a block is a conflict too
    evidence = _evidence(engine)
    assert [e.validator for e in evidence] == [KEYS[1].address, KEYS[2].address]
    for ev in evidence:
        ev.verify(CHAIN_ID, VSET)


def test_preconfirm_and_confirm_of_one_round_never_look_like_equivocation() -> None:
    engine = _engine()
    # pre-confirm A, then confirm B in the same confirmation round (a POL for B formed)
    engine.step(preconfirm(KEYS[1], 1, 0, block_hash(A)))
    engine.step(confirm(KEYS[1], 1, 0, block_hash(B)))
    assert _evidence(engine) == []


def test_equivocation_at_an_already_final_height_is_still_caught() -> None:
    engine = _engine()
    engine.step(block_msg(KEYS[0], 1, 0, A))
    for k in KEYS[:2]:
        engine.step(preconfirm(k, 1, 0, block_hash(A)))
    for k in KEYS[:2]:
        engine.step(confirm(k, 1, 0, block_hash(A)))
    assert engine.status().committed_height == 1
    engine.step(confirm(KEYS[0], 1, 0, block_hash(B)))
    (ev,) = _evidence(engine)
    assert ev.validator == KEYS[0].address and ev.is_valid(CHAIN_ID, VSET)
