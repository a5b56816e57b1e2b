"""DPoS admission: inadmissible and invalid messages are dropped without effect and counted
by reason; everything the engine emits is deterministic."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from eth_hash.auto import keccak

from node.consensus.dpos import DposConfig, DposEngine
from node.consensus.messages import EngineId, Kind, Signer
from node.consensus.types import ZERO_HASH, Hash32, ValidatorSet
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
VSET = ValidatorSet(0, tuple(k.address for k in KEYS))
OUTSIDER = Signer(keccak(b"not a delegate"))
ROOT = Path(__file__).resolve().parents[2]


def _engine() -> DposEngine:
    engine = DposEngine(DposConfig(chain_id=CHAIN_ID, max_lag=8), KEYS[3], VSET, validate)
    while engine.has_ready():
        engine.ready()
        engine.advance()
    return engine


def test_inadmissible_messages_are_dropped_and_counted_by_reason() -> None:
    engine = _engine()
    h = block_hash(make_block(1, ZERO_HASH, b"x"))
    good = preconfirm(KEYS[0], 1, 0, h)
    cases = {
        "wrong_engine": KEYS[0].sign(CHAIN_ID, EngineId.PBFT, Kind.PREPARE, 1, 0, h),
        "unsigned": replace(good, signature=b"\x00" * 65),
        "bad_signature": replace(good, digest=Hash32(b"\x07" * 32)),
        "not_validator": preconfirm(OUTSIDER, 1, 0, h),
        "out_of_window": confirm(KEYS[0], 1 + 8 + 1, 0, h),  # beyond final + max_lag
        "malformed": KEYS[0].sign(CHAIN_ID, EngineId.DPOS, Kind.CONFIRM, 1, 1, h, b"body"),
    }
    for msg in cases.values():
        engine.step(msg)
    engine.step(good)
    engine.step(good)  # the very same message again
    engine.step(replace(good, payload=b"\x81"))  # a pre-confirm's body must be [slot]
    engine.step(block_msg(KEYS[2], 1, 0, make_block(1, ZERO_HASH, b"y")))  # not its slot
    expected = dict.fromkeys(cases, 1) | {"replay": 1, "invalid": 1}
    expected["malformed"] += 1
    assert engine.status().dropped == dict(sorted(expected.items()))
    st = engine.status()
    assert (st.committed_height, st.finality_lag, st.evidence) == (0, 0, 0)


def test_block_the_validator_rejects_is_never_final_and_is_counted_invalid() -> None:
    net = Net(4)
    net.down.add(0)  # slot 0's producer sends an invalid block instead of its own
    net.queue.clear()
    net.broadcast(0, block_msg(KEYS[0], 1, 0, make_block(1, ZERO_HASH, b"invalid")))
    net.restart(0)  # from its hard state: it already used slot 0 (for a block never sent)
    net.run(60)
    net.assert_agreement()
    assert min(net.heights()) >= 4
    assert all(b.payload != make_block(1, ZERO_HASH, b"invalid") for b in net.delegates[1].chain)
    assert net.engine(1).status().dropped.get("invalid", 0) >= 1


def test_everything_emitted_is_deterministic_whatever_the_hash_seed() -> None:
    script = (
        "from tests.consensus.dpos_harness import Net\n"
        "from eth_hash.auto import keccak\n"
        "net = Net(4)\n"
        "net.run(60)\n"
        "acc = b''\n"
        "for d in net.delegates:\n"
        "    for m in d.sent:\n"
        "        acc = keccak(acc + m.encode())\n"
        "print(acc.hex(), net.heights())\n"
    )
    outputs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(ROOT))
        run = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(run.stdout)
    assert len(outputs) == 1, outputs
