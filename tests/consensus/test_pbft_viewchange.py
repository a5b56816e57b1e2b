"""PBFT view change: timers, VIEW-CHANGE contents, NEW-VIEW recomputation, joining, storms,
equivocating primaries, and the IBFT-1.0 locked-on-different-blocks case."""

from __future__ import annotations

from itertools import pairwise

from node.consensus.certificate import CommitCertificate
from node.consensus.engine import CommittedBlock
from node.consensus.messages import Kind, SignedMessage
from node.consensus.pbft import PbftConfig
from node.consensus.pbft_codec import (
    HardState,
    NewViewBody,
    Reproposal,
    SignatureCache,
    ViewChangeBody,
)
from node.consensus.types import ZERO_HASH
from tests.consensus.pbft_harness import (
    CHAIN_ID,
    Cluster,
    block_hash,
    make_block,
    sign,
    view_change,
)

SMALL = PbftConfig(chain_id=CHAIN_ID, checkpoint_interval=2, watermark_window=8)


def _sent(c: Cluster, i: int, kind: Kind) -> list[SignedMessage]:
    return [m for m in c.replicas[i].sent if m.kind == kind]


def _committed_block(c: Cluster, height: int, parent: bytes) -> CommittedBlock:
    payload = make_block(height, parent, b"delivered")
    d = block_hash(payload)
    votes = [sign(s, Kind.COMMIT, height, 0, d) for s in c.signers[: c.vset.quorum]]
    return CommittedBlock(height, d, payload, CommitCertificate.from_votes(votes))


def test_timeout_doubles_per_view_change_up_to_the_cap_and_resets_on_commit() -> None:
    c = Cluster(4, PbftConfig(chain_id=CHAIN_ID, base_timeout=4, max_timeout=16))
    e = c.engine(3)  # driven by hand: nothing ever reaches it but what we inject
    changes: list[tuple[int, int]] = []  # (tick, view) of each new VIEW-CHANGE
    for tick in range(1, 80):
        e.tick()
        for out in e.ready().messages:
            m = out.message
            if m.kind == Kind.VIEW_CHANGE and (not changes or m.round > changes[-1][1]):
                changes.append((tick, m.round))
                for j in (1, 2):  # a quorum asks for the same view: escalation may proceed
                    e.step(view_change(c.signers[j], m.round))
    gaps = [b[0] - a[0] for a, b in pairwise(changes)]
    assert changes[0] == (4, 1)
    assert gaps[:4] == [8, 16, 16, 16]  # 4 -> 8 -> 16, capped at max_timeout
    assert e.timeout == 16
    e.deliver(_committed_block(c, 1, ZERO_HASH))
    assert e.committed_height == 1 and e.timeout == 4  # progress resets the doubling


def test_view_change_carries_stable_checkpoint_and_prepared_certificates() -> None:
    c = Cluster(4, SMALL)
    c.stop_at = 3
    c.intercept = lambda _s, _d, m: not (m.kind == Kind.COMMIT and m.height == 3)
    c.pump()
    assert c.heights() == [2, 2, 2, 2]
    pp = _sent(c, 0, Kind.PRE_PREPARE)[-1]
    assert pp.height == 3
    c.run_until(lambda: bool(_sent(c, 1, Kind.VIEW_CHANGE)))
    vc = _sent(c, 1, Kind.VIEW_CHANGE)[0]
    body = ViewChangeBody.decode(vc.payload)
    assert (vc.round, vc.height, body.checkpoint.height) == (1, 2, 2)
    assert [(p.height, p.view, p.digest) for p in body.prepared] == [(3, 0, pp.digest)]
    assert len(body.prepared[0].prepares) == c.vset.quorum - 1
    body.verify(SignatureCache(CHAIN_ID), lambda _h: c.vset, 1)
    c.intercept = None  # the new primary re-proposes the prepared block in view 1
    c.run_until(lambda: min(c.heights()) >= 3)
    blk = c.replicas[2].chain[2]
    assert (blk.block_hash, blk.certificate.round) == (pp.digest, 1)
    c.assert_agreement()


def _stuck_in_view_change(c: Cluster, cut: int) -> SignedMessage:
    """Prepare height 3 without committing, change view; ``cut`` misses the NEW-VIEW."""
    c.stop_at = 3
    c.intercept = lambda _s, _d, m: not (m.kind == Kind.COMMIT and m.height == 3)
    c.pump()
    c.intercept = lambda _s, d, m: (
        m.kind != Kind.COMMIT and not (d == cut and m.kind == Kind.NEW_VIEW)
    )
    c.run_until(lambda: bool(_sent(c, 1, Kind.NEW_VIEW)))
    assert c.engine(cut).view == 1 and not c.engine(cut).view_active
    return _sent(c, 1, Kind.NEW_VIEW)[0]


def _resign(c: Cluster, nv: SignedMessage, body: NewViewBody) -> SignedMessage:
    return sign(c.signers[1], Kind.NEW_VIEW, nv.height, nv.round, b"", body.encode())


def test_new_view_recomputation_rejects_forged_new_views() -> None:
    c = Cluster(4, SMALL)
    nv = _stuck_in_view_change(c, cut=2)
    body = NewViewBody.decode(nv.payload)
    (prop,) = body.reproposals
    other = make_block(3, c.replicas[1].chain[1].block_hash, b"forged")
    forged_pp = sign(c.signers[1], Kind.PRE_PREPARE, 3, 1, block_hash(other), other)
    forgeries = [
        NewViewBody(body.view_changes, (Reproposal(prop.height),)),  # drops the prepared block
        NewViewBody(body.view_changes, (Reproposal(3, block_hash(other), forged_pp.signature),)),
        NewViewBody(body.view_changes[:-1], body.reproposals),  # fewer than a quorum
        NewViewBody(body.view_changes, ()),  # re-proposals missing
    ]
    e = c.engine(2)
    for forged in forgeries:
        before = e.status().dropped.get("invalid", 0)
        e.step(_resign(c, nv, forged))
        assert e.status().dropped.get("invalid", 0) == before + 1
        assert not e.view_active
    e.step(nv)
    assert e.view == 1 and e.view_active


def test_replica_joins_a_higher_view_after_f_plus_1_view_changes() -> None:
    c = Cluster(4)
    c.stop_at = 0
    c.pump()
    e = c.engine(3)
    e.step(view_change(c.signers[1], 5))
    assert e.view == 0 and e.view_active  # one replica (maybe faulty) is not enough
    e.step(view_change(c.signers[2], 7))
    assert e.view == 5 and not e.view_active  # f+1 = 2: the lowest of the two highest
    assert any(
        o.message.kind == Kind.VIEW_CHANGE and o.message.round == 5 for o in e.ready().messages
    )


def test_lone_partitioned_replica_causes_no_view_change_storm() -> None:
    c = Cluster(4, PbftConfig(chain_id=CHAIN_ID, base_timeout=10, max_timeout=40))
    c.stop_at = 2
    c.pump()  # everyone has voted: no one starts out fresh
    c.blocked = {(3, j) for j in range(3)} | {(j, 3) for j in range(3)}
    for t in range(300):
        if t % 5 == 0:
            c.stop_at += 1  # the host proposes one block every five ticks
        c.tick()
    cut = c.engine(3)
    assert cut.view == 1 and not cut.view_active  # asked once, never ran ahead alone
    assert all(c.engine(i).status().round_changes == 0 for i in range(3))
    c.blocked = set()
    mark = len(c.replicas[3].sent)
    c.stop_at += 5
    c.run_until(lambda: c.heights()[3] == c.heights()[0] == c.stop_at, max_ticks=400)
    assert all(c.engine(i).view == 0 for i in range(3))  # the majority never moved
    assert cut.view == 0 and cut.view_active  # it rejoined the view that kept deciding
    c.stop_at += 3
    c.run_until(lambda: min(c.heights()) == c.stop_at)
    late = c.replicas[3].sent[mark:]
    assert any(m.kind == Kind.PREPARE and m.round == 0 for m in late)
    assert not any(m.kind == Kind.COMMIT and m.round == 0 for m in late)  # the rejoin rule
    hs = c.replicas[3].hard_state
    assert hs is not None and HardState.decode(hs).no_commit_view == 0  # survives restarts
    c.assert_agreement()


def test_equivocating_primary_yields_verifiable_evidence_and_a_view_change() -> None:
    c = Cluster(4)
    c.stop_at = 0
    c.pump()
    e = c.engine(1)
    a, b = make_block(1, ZERO_HASH, b"a"), make_block(1, ZERO_HASH, b"b")
    e.step(sign(c.signers[0], Kind.PRE_PREPARE, 1, 0, block_hash(a), a))
    e.step(sign(c.signers[0], Kind.PRE_PREPARE, 1, 0, block_hash(b), b))
    ready = e.ready()
    (ev,) = ready.evidence
    ev.verify(CHAIN_ID, c.vset)
    assert ev.validator == c.address(0)
    assert e.view == 1 and not e.view_active
    assert any(o.message.kind == Kind.VIEW_CHANGE for o in ready.messages)
    assert e.status().evidence == 1


def _commits_by(c: Cluster, i: int, view: int) -> list[SignedMessage]:
    return [m for m in _sent(c, i, Kind.COMMIT) if m.round == view]


def test_ibft_locked_on_different_blocks_still_makes_progress() -> None:
    """Replica 2 prepared X in view 0, replica 3 prepared Y in view 1, the primary of
    view 1 crashes: the NEW-VIEW of view 2 carries both certificates, picks the later (Y),
    and replica 2 is released from X. IBFT 1.0 would stall here forever."""
    c = Cluster(4)
    c.stop_at = 1
    phase = ["A"]

    def rule(src: int, dst: int, m: SignedMessage) -> bool:
        if phase[0] == "A":  # view 0: only replica 2 sees the prepares, no commits
            return dst == 2 if m.kind == Kind.PREPARE else m.kind != Kind.COMMIT
        if phase[0] == "B":  # view 1 without replica 2: only replica 3 prepares
            if 2 in (src, dst):
                return False
            if m.kind == Kind.PREPARE:
                return dst == 3 and m.round == 1
            return m.kind != Kind.COMMIT
        return True

    c.intercept = rule
    c.pump()
    (x_vote,) = _commits_by(c, 2, 0)
    phase[0] = "B"
    c.run_until(lambda: bool(_commits_by(c, 3, 1)))
    (y_vote,) = _commits_by(c, 3, 1)
    assert x_vote.digest != y_vote.digest and c.heights() == [0, 0, 0, 0]
    phase[0] = "C"
    c.down.add(1)  # f = 1 crashes: the three left must all agree
    c.run_until(lambda: all(c.heights()[i] == 1 for i in (0, 2, 3)), max_ticks=1000)
    c.assert_agreement()
    assert c.replicas[2].chain[0].block_hash == y_vote.digest
    assert any(m.digest == y_vote.digest for m in _sent(c, 2, Kind.COMMIT))
