"""PBFT admission: every inadmissible or protocol-invalid message is dropped, counted
under its reason, and leaves the replica's state untouched."""

from __future__ import annotations

from dataclasses import replace

import pytest
from eth_hash.auto import keccak

from node.consensus.messages import EngineId, Kind, SignedMessage, Signer
from node.consensus.pbft import PbftEngine
from node.consensus.types import ZERO_HASH
from tests.consensus.pbft_harness import (
    CHAIN_ID,
    Cluster,
    block_hash,
    make_block,
    sign,
    view_change,
)


def _fresh() -> tuple[Cluster, PbftEngine]:
    c = Cluster(4)
    c.stop_at = 0  # nothing proposed: replica 1 sits at height 1, view 0
    c.pump()
    return c, c.engine(1)


def _state(e: PbftEngine) -> tuple[bytes, list[int], list[int], int, int, bool]:
    return (
        e.hard_state_bytes(),
        e.log.heights(),
        e.log.checkpoint_heights(),
        e.view,
        e.committed_height,
        e.has_ready(),
    )


def _cases(c: Cluster) -> dict[str, list[SignedMessage]]:
    primary, backup, outsider = c.signers[0], c.signers[2], Signer(keccak(b"outsider"))
    blk = make_block(1, ZERO_HASH, b"x")
    d = block_hash(blk)
    prepare = sign(backup, Kind.PREPARE, 1, 0, d)
    return {
        "wrong_engine": [backup.sign(CHAIN_ID, EngineId.DPOS, Kind.PREPARE, 1, 0, d)],
        "unsigned": [replace(prepare, signature=b"\x00" * 65)],
        "bad_signature": [replace(prepare, digest=block_hash(b"other"))],
        "not_validator": [sign(outsider, Kind.PREPARE, 1, 0, d)],
        "out_of_window": [sign(backup, Kind.PREPARE, c.config.watermark_window + 1, 0, d)],
        "malformed": [sign(backup, Kind.VIEW_CHANGE, 0, 1, b"", b"\x01not rlp")],
        "invalid": [
            sign(backup, Kind.PRE_PREPARE, 1, 0, d, blk),  # not the primary
            sign(primary, Kind.PRE_PREPARE, 1, 0, block_hash(b"x"), blk),  # digest mismatch
            sign(primary, Kind.PRE_PREPARE, 1, 0, *_invalid_block()),  # validator says no
            sign(backup, Kind.PREPARE, 1, 0, d, b"payload"),  # prepares carry no payload
            sign(primary, Kind.PREPARE, 1, 0, d),  # the primary does not prepare
            sign(backup, Kind.CHECKPOINT, 3, 0, d),  # not a checkpoint height
            sign(backup, Kind.NEW_VIEW, 0, 1, b"", b""),  # not the primary of view 1
            sign(backup, Kind.BLOCK, 1, 0, d),  # a DPoS kind
        ],
    }


def _invalid_block() -> tuple[bytes, bytes]:
    blk = make_block(1, ZERO_HASH, b"invalid")
    return block_hash(blk), blk


@pytest.mark.parametrize(
    "reason",
    [
        "wrong_engine",
        "unsigned",
        "bad_signature",
        "not_validator",
        "out_of_window",
        "malformed",
        "invalid",
    ],
)
def test_each_drop_reason_is_counted_and_changes_nothing(reason: str) -> None:
    c, _ = _fresh()
    for msg in _cases(c)[reason]:
        _, e = _fresh()  # one replica per message: two bad pre-prepares would equivocate
        before = _state(e)
        dropped = e.status().dropped.get(reason, 0)
        e.step(msg)
        assert e.status().dropped.get(reason, 0) == dropped + 1, msg
        assert _state(e) == before, msg


def test_replayed_message_is_dropped_as_replay() -> None:
    c, e = _fresh()
    msg = sign(c.signers[2], Kind.PREPARE, 1, 0, block_hash(b"blk"))
    e.step(msg)
    before = _state(e)
    e.step(msg)
    assert e.status().dropped == {"replay": 1}
    assert _state(e) == before


def test_stale_view_change_is_dropped_out_of_window() -> None:
    c = Cluster(4)
    c.down.add(0)  # the primary of view 0 is gone: the others install view 1
    c.run_until(lambda: all(c.engine(i).view == 1 and c.engine(i).view_active for i in (1, 2, 3)))
    e = c.engine(1)
    before = e.status().dropped.get("out_of_window", 0)
    e.step(view_change(c.signers[0], 1))
    assert e.status().dropped.get("out_of_window", 0) == before + 1
