"""DPoS finality: a quorum of confirms in one round, certificates, finality lag."""

from __future__ import annotations

from node.consensus.certificate import CommitCertificate
from node.consensus.dpos import DposConfig, DposEngine
from node.consensus.engine import Ready
from node.consensus.messages import EngineId, Kind, SignedMessage
from node.consensus.types import ZERO_HASH, ValidatorSet
from tests.consensus.dpos_harness import (
    CHAIN_ID,
    Net,
    block_hash,
    block_msg,
    confirm,
    make_block,
    preconfirm,
    signers,
    validate,
)

KEYS = signers(4)
VSET = ValidatorSet(0, tuple(s.address for s in KEYS))
BLOCK = make_block(1, ZERO_HASH, b"first")
B = block_hash(BLOCK)


def _drain(engine: DposEngine) -> Ready:
    """Everything the engine wants done, merged into one Ready."""
    out = Ready()
    while engine.has_ready():
        rd = engine.ready()
        engine.advance()
        out.messages += rd.messages
        out.committed += rd.committed
        out.evidence += rd.evidence
    return out


def _own(rd: Ready, phase: int) -> list[SignedMessage]:
    return [
        o.message
        for o in rd.messages
        if o.message.kind == Kind.CONFIRM and o.message.round % 2 == phase
    ]


def _delegate_with_pol() -> DposEngine:
    """Delegate 3, having seen block B of slot 0 and a pre-confirm quorum for it."""
    engine = DposEngine(DposConfig(chain_id=CHAIN_ID), KEYS[3], VSET, validate)
    _drain(engine)
    engine.step(block_msg(KEYS[0], 1, 0, BLOCK))
    assert [m.digest for m in _own(_drain(engine), 0)] == [B]  # its own pre-confirm
    engine.step(preconfirm(KEYS[0], 1, 0, B))
    engine.step(preconfirm(KEYS[1], 1, 0, B))  # with its own: a POL (q = 3)
    confirms = _own(_drain(engine), 1)
    assert [(m.height, m.round, m.digest, m.payload) for m in confirms] == [(1, 1, B, b"")]
    return engine


def test_block_is_final_at_a_quorum_of_confirms_not_before() -> None:
    engine = _delegate_with_pol()
    engine.step(confirm(KEYS[0], 1, 0, B))  # 2 of 3
    assert _drain(engine).committed == []
    assert engine.status().committed_height == 0
    engine.step(confirm(KEYS[1], 1, 0, B))  # 3 of 3
    committed = _drain(engine).committed
    assert [(c.height, c.block_hash, c.payload) for c in committed] == [(1, B, BLOCK)]
    assert engine.status().committed_height == 1


def test_commit_certificate_verifies_on_its_own_against_the_committee() -> None:
    engine = _delegate_with_pol()
    engine.step(confirm(KEYS[0], 1, 0, B))
    engine.step(confirm(KEYS[2], 1, 0, B))
    (blk,) = _drain(engine).committed
    cert = CommitCertificate.decode(blk.certificate.encode())
    cert.verify(CHAIN_ID, VSET)  # raises if not a quorum of valid member signatures
    assert (cert.engine, cert.kind, cert.height, cert.block_hash) == (
        EngineId.DPOS,
        Kind.CONFIRM,
        1,
        B,
    )
    assert cert.round % 2 == 1 and len(cert.signatures) == 3


def test_confirms_from_different_rounds_do_not_add_up() -> None:
    engine = _delegate_with_pol()
    engine.step(confirm(KEYS[0], 1, 0, B))
    engine.step(confirm(KEYS[1], 1, 1, B))  # another round: a different certificate
    assert _drain(engine).committed == []


def test_preconfirm_signatures_can_never_form_a_certificate() -> None:
    votes = [preconfirm(k, 1, 0, B) for k in KEYS[:3]]
    forged = CommitCertificate(
        EngineId.DPOS, Kind.CONFIRM, 1, 0, B, tuple(sorted((v.signer, v.signature) for v in votes))
    )
    assert not forged.is_valid(CHAIN_ID, VSET)  # a pre-confirm signs a non-empty body


def test_finality_lag_is_head_height_minus_final_height() -> None:
    net = Net(4, DposConfig(chain_id=CHAIN_ID, max_lag=5))
    net.intercept = lambda _src, _dst, msg: msg.kind != Kind.CONFIRM  # no votes get through
    net.run(90)
    st = net.engine(0).status()
    assert st.committed_height == 0
    assert st.finality_lag == 5  # producers stopped at max_lag above the final block
    produced = {m.height for d in net.delegates for m in d.sent if m.kind == Kind.BLOCK}
    assert max(produced) == 5
    net.intercept = None  # votes flow again (retransmitted): the backlog becomes final
    net.run(80)
    st = net.engine(0).status()
    assert st.committed_height >= 6
    assert st.finality_lag <= 1
    net.assert_agreement()


def test_every_committed_block_carries_a_verifying_certificate_in_a_running_network() -> None:
    net = Net(4)
    net.run(60)
    assert min(net.heights()) >= 5
    for d in net.delegates:
        for blk in d.chain:
            blk.certificate.verify(CHAIN_ID, net.vset)
            assert blk.certificate.block_hash == blk.block_hash
    net.assert_agreement()
