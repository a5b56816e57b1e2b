"""DPoS catch-up: a delegate that is behind asks for committed blocks (Ready.sync) and
deliver() verifies each one before making it final."""

from __future__ import annotations

from dataclasses import replace

from node.consensus.certificate import CommitCertificate
from node.consensus.dpos import DposConfig, DposEngine
from node.consensus.engine import CommittedBlock, Ready
from node.consensus.types import ZERO_HASH, ValidatorSet
from tests.consensus.dpos_harness import (
    CHAIN_ID,
    Net,
    block_hash,
    confirm,
    make_block,
    signers,
    validate,
)

KEYS = signers(4)
VSET = ValidatorSet(0, tuple(k.address for k in KEYS))


def _committed(height: int, parent: bytes, tag: bytes, voters: int = 3) -> CommittedBlock:
    payload = make_block(height, parent, tag)
    h = block_hash(payload)
    cert = CommitCertificate.from_votes([confirm(k, height, 0, h) for k in KEYS[:voters]])
    return CommittedBlock(height, h, payload, cert)


def _drain(engine: DposEngine) -> Ready:
    out = Ready()
    while engine.has_ready():
        rd = engine.ready()
        engine.advance()
        out.committed += rd.committed
        out.sync += rd.sync
    return out


def test_lagging_delegate_asks_for_sync_and_catches_up_via_deliver() -> None:
    net = Net(4)
    net.run(20)
    net.down.add(3)
    net.run(120)  # the other three keep finalising without it
    assert len(net.delegates[3].chain) < min(len(d.chain) for d in net.delegates[:3]) - 8
    net.restart(3)
    net.run(60)
    lagger = net.delegates[3]
    assert lagger.syncs >= 1
    net.assert_agreement()
    assert len(lagger.chain) >= max(len(d.chain) for d in net.delegates) - 1


def test_deliver_rejects_a_block_whose_certificate_or_payload_does_not_verify() -> None:
    engine = DposEngine(DposConfig(chain_id=CHAIN_ID), KEYS[3], VSET, validate)
    _drain(engine)
    good = _committed(1, ZERO_HASH, b"one")
    engine.deliver(_committed(1, ZERO_HASH, b"one", voters=2))  # below the quorum
    engine.deliver(replace(good, payload=make_block(1, ZERO_HASH, b"forged")))
    engine.deliver(
        replace(good, certificate=replace(good.certificate, round=0))
    )  # pre-confirm round
    engine.deliver(_committed(1, b"\x11" * 32, b"orphan"))  # wrong parent
    assert _drain(engine).committed == []
    assert engine.status().dropped == {"invalid": 4}
    assert engine.status().committed_height == 0
    engine.deliver(good)
    assert [c.block_hash for c in _drain(engine).committed] == [good.block_hash]


def test_delivered_blocks_ahead_of_the_final_height_wait_for_their_parent() -> None:
    engine = DposEngine(DposConfig(chain_id=CHAIN_ID), KEYS[3], VSET, validate)
    _drain(engine)
    first = _committed(1, ZERO_HASH, b"one")
    second = _committed(2, first.block_hash, b"two")
    engine.deliver(second)
    assert _drain(engine).committed == []
    engine.deliver(first)
    assert [c.height for c in _drain(engine).committed] == [1, 2]


def test_a_certificate_for_a_block_we_lack_triggers_a_sync_request() -> None:
    engine = DposEngine(DposConfig(chain_id=CHAIN_ID), KEYS[3], VSET, validate)
    _drain(engine)
    unseen = block_hash(make_block(1, ZERO_HASH, b"unseen"))
    for k in KEYS[:3]:
        engine.step(confirm(k, 1, 0, unseen))
    rd = _drain(engine)
    assert rd.committed == [] and [s.from_height for s in rd.sync] == [1]
