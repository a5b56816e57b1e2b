"""Election (DPoS): stake, candidates, votes, committee, unstake, equivocation jail.

The shared fixture's Election has committee size 3, max votes 3, unstake delay 5.
"""

from __future__ import annotations

from collections.abc import Sequence

import coincurve
import pytest
from eth_hash.auto import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import ProposalAction, Role
from node.consensus import messages
from tests.contracts.net import MAX_VOTES, UNSTAKE_DELAY, TestNet, assert_reverts

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
PBFT, PREPARE, COMMIT, VIEW_CHANGE = 1, 2, 3, 5


def candidates(net: TestNet, names: Sequence[str]) -> list[str]:
    for name in names:
        net.send(net.election.functions.registerCandidate(), name)
    return [net.accounts[n] for n in names]


def stake_and_vote(net: TestNet, voter: str, amount: int, names: Sequence[str]) -> None:
    net.send(net.election.functions.stake(), voter, value=amount)
    net.send(net.election.functions.vote([net.accounts[n] for n in names]), voter)


def weights(net: TestNet, names: Sequence[str]) -> list[int]:
    return [net.election.functions.weightOf(net.accounts[n]).call() for n in names]


def by_address(net: TestNet, names: Sequence[str]) -> list[str]:
    return sorted((net.accounts[n] for n in names), key=lambda a: int(a, 16))


# ---------------------------------------------------------------- initialize


def test_initialize_works_only_once(net: TestNet) -> None:
    fn = net.election.functions.initialize(net.membership.address, 3, 3, 5)
    assert_reverts(net, fn, "outsider", "already initialized")


def test_initialize_sets_and_logs_the_parameters(net: TestNet) -> None:
    election = net.deploy_fresh("Election")
    fn = election.functions.initialize(net.membership.address, 7, 4, 100)
    receipt = net.send(fn, "admin0")
    assert net.event(receipt, election, "Initialized") == {
        "initializer": net.accounts["admin0"],
        "membership": net.membership.address,
        "committee_size": 7,
        "max_votes": 4,
        "unstake_delay": 100,
    }
    e = election.functions
    assert (e.committeeSize().call(), e.maxVotes().call(), e.unstakeDelay().call()) == (7, 4, 100)


@pytest.mark.parametrize(
    ("membership", "size", "max_votes", "reason"),
    [
        (ZERO_ADDRESS, 3, 3, "zero membership address"),
        ("twin0", 3, 3, "membership has no code"),
        (None, 0, 3, "invalid committee size"),
        (None, 65, 3, "invalid committee size"),
        (None, 3, 0, "invalid max votes"),
        (None, 3, 33, "invalid max votes"),
    ],
)
def test_initialize_rejects_bad_parameters(
    net: TestNet, membership: str | None, size: int, max_votes: int, reason: str
) -> None:
    election = net.deploy_fresh("Election")
    target = net.membership.address if membership is None else membership
    fn = election.functions.initialize(net.accounts.get(target, target), size, max_votes, 1)
    assert_reverts(net, fn, "outsider", reason)


def test_uninitialized_election_refuses_stake(net: TestNet) -> None:
    election = net.deploy_fresh("Election")
    assert_reverts(net, election.functions.stake(), "twin0", "not initialized", value=1)


# ---------------------------------------------------------------- stake, candidates


def test_stake_locks_coin_and_adds_up(net: TestNet) -> None:
    e = net.election.functions
    net.send(e.stake(), "twin0", value=300)
    receipt = net.send(e.stake(), "twin0", value=200)
    event = net.event(receipt, net.election, "Staked")
    assert event == {
        "account": net.accounts["twin0"],
        "amount": 200,
        "stake": 500,
        "block": receipt["blockNumber"],
    }
    assert e.stakeOf(net.accounts["twin0"]).call() == 500
    assert e.totalStaked().call() == 500
    assert net.w3.eth.get_balance(net.election.address) == 500


def test_stake_requires_membership_and_coin(net: TestNet) -> None:
    assert_reverts(net, net.election.functions.stake(), "outsider", "not a member", value=1)
    assert_reverts(net, net.election.functions.stake(), "twin0", "zero stake")


def test_register_candidate(net: TestNet) -> None:
    receipt = net.send(net.election.functions.registerCandidate(), "miner2")
    assert net.event(receipt, net.election, "CandidateRegistered") == {
        "candidate": net.accounts["miner2"],
        "block": receipt["blockNumber"],
    }
    e = net.election.functions
    assert e.candidates().call() == [net.accounts["miner2"]]
    assert e.isCandidate(net.accounts["miner2"]).call() is True


def test_register_candidate_rejects_non_miners_and_repeats(net: TestNet) -> None:
    fn = net.election.functions.registerCandidate()
    assert_reverts(net, fn, "twin0", "not a MINER")
    assert_reverts(net, fn, "admin0", "not a MINER")
    net.send(fn, "miner0")
    assert_reverts(net, fn, "miner0", "already a candidate")


def test_candidate_list_is_bounded(net: TestNet) -> None:
    """Fill 64 places, then free a MINER role (the candidacy stays) for a 65th miner."""
    miners = net.spares(65)
    membership = net.deploy_fresh("Membership")
    roles = [int(Role.MINER)] * 64 + [int(Role.TWIN)]
    fn = membership.functions.initialize(
        [net.accounts["admin0"]], 1, [net.accounts[m] for m in miners], roles
    )
    net.send(fn, "admin0", gas=20_000_000)
    election = net.deploy_fresh("Election")
    net.send(election.functions.initialize(membership.address, 3, 3, 0), "admin0")
    for miner in miners[:64]:
        net.send(election.functions.registerCandidate(), miner)
    m = membership.functions
    revoke, grant = int(ProposalAction.REVOKE_ROLE), int(ProposalAction.GRANT_ROLE)
    net.send(m.propose(revoke, net.accounts[miners[0]], int(Role.MINER)), "admin0")
    net.send(m.propose(grant, net.accounts[miners[64]], int(Role.MINER)), "admin0")
    assert_reverts(net, election.functions.registerCandidate(), miners[64], "candidate list full")


# ---------------------------------------------------------------- votes and committee


def test_vote_gives_each_candidate_the_voter_stake(net: TestNet) -> None:
    candidates(net, ["miner0", "miner1", "miner2"])
    stake_and_vote(net, "twin0", 100, ["miner0", "miner1"])
    stake_and_vote(net, "twin1", 50, ["miner1", "miner2"])
    assert weights(net, ["miner0", "miner1", "miner2"]) == [100, 150, 50]
    assert net.election.functions.votesOf(net.accounts["twin1"]).call() == [
        net.accounts["miner1"],
        net.accounts["miner2"],
    ]


def test_revote_replaces_previous_votes(net: TestNet) -> None:
    candidates(net, ["miner0", "miner1", "miner2"])
    stake_and_vote(net, "twin0", 100, ["miner0", "miner1"])
    fn = net.election.functions.vote([net.accounts["miner2"]])
    receipt = net.send(fn, "twin0")
    assert net.event(receipt, net.election, "Voted") == {
        "voter": net.accounts["twin0"],
        "candidates": [net.accounts["miner2"]],
        "previous": [net.accounts["miner0"], net.accounts["miner1"]],
        "weight": 100,
        "block": receipt["blockNumber"],
    }
    assert weights(net, ["miner0", "miner1", "miner2"]) == [0, 0, 100]
    net.send(net.election.functions.vote([]), "twin0")
    assert weights(net, ["miner0", "miner1", "miner2"]) == [0, 0, 0]


def test_more_stake_raises_the_weight_of_current_votes(net: TestNet) -> None:
    candidates(net, ["miner0", "miner1"])
    stake_and_vote(net, "twin0", 100, ["miner0", "miner1"])
    net.send(net.election.functions.stake(), "twin0", value=20)
    assert weights(net, ["miner0", "miner1"]) == [120, 120]


def test_vote_rejects_bad_ballots(net: TestNet) -> None:
    cands = candidates(net, ["miner0", "miner1", "miner2", "miner3"])
    e = net.election.functions
    assert_reverts(net, e.vote(cands[:1]), "twin0", "no stake")
    net.send(e.stake(), "twin0", value=10)
    assert len(cands) > MAX_VOTES
    assert_reverts(net, e.vote(cands), "twin0", "too many votes")
    assert_reverts(net, e.vote([net.accounts["twin1"]]), "twin0", "not a candidate")
    assert_reverts(net, e.vote([cands[0], cands[0]]), "twin0", "duplicate candidate")


def test_committee_is_top_weight_then_lower_address(net: TestNet) -> None:
    names = ["miner0", "miner1", "miner2", "miner3"]
    candidates(net, names)
    committee = net.election.functions.committee
    assert committee().call() == by_address(net, names)[:3]  # no votes yet: by address
    stake_and_vote(net, "twin0", 100, ["miner3"])
    stake_and_vote(net, "twin1", 40, ["miner1", "miner2"])
    tied = by_address(net, ["miner1", "miner2"])  # 40 each: lower address first
    assert committee().call() == [net.accounts["miner3"], *tied]


def test_committee_is_smaller_when_fewer_candidates(net: TestNet) -> None:
    candidates(net, ["miner0"])
    assert net.election.functions.committee().call() == [net.accounts["miner0"]]


def test_committee_excludes_candidates_who_lost_the_miner_role(net: TestNet) -> None:
    candidates(net, ["miner0", "miner1"])
    stake_and_vote(net, "twin0", 100, ["miner0"])
    m = net.membership.functions
    revoke = int(ProposalAction.REVOKE_ROLE)
    net.send(m.propose(revoke, net.accounts["miner0"], int(Role.MINER)), "admin0")
    net.send(m.approve(1), "admin1")
    assert net.election.functions.committee().call() == [net.accounts["miner1"]]


# ---------------------------------------------------------------- unstake and withdraw


def test_unstake_drops_weight_at_request_and_pays_after_delay(net: TestNet) -> None:
    candidates(net, ["miner0"])
    stake_and_vote(net, "twin0", 100, ["miner0"])
    e = net.election.functions
    receipt = net.send(e.requestUnstake(60), "twin0")
    unlock = receipt["blockNumber"] + UNSTAKE_DELAY
    assert net.event(receipt, net.election, "UnstakeRequested") == {
        "account": net.accounts["twin0"],
        "amount": 60,
        "stake": 40,
        "pending": 60,
        "unlock_block": unlock,
    }
    assert weights(net, ["miner0"]) == [40]
    assert e.stakeOf(net.accounts["twin0"]).call() == 40
    assert e.totalStaked().call() == 40
    assert e.pendingUnstake(net.accounts["twin0"]).call() == 60
    assert e.unlockBlock(net.accounts["twin0"]).call() == unlock
    assert_reverts(net, e.withdraw(), "twin0", "unstake delay not elapsed")
    net.mine(unlock - net.block_number)
    receipt = net.send(e.withdraw(), "twin0")
    assert net.event(receipt, net.election, "Withdrawn") == {
        "account": net.accounts["twin0"],
        "amount": 60,
        "block": receipt["blockNumber"],
    }
    assert net.w3.eth.get_balance(net.election.address) == 40
    assert e.pendingUnstake(net.accounts["twin0"]).call() == 0
    assert_reverts(net, e.withdraw(), "twin0", "nothing to withdraw")


def test_new_unstake_request_restarts_the_delay(net: TestNet) -> None:
    e = net.election.functions
    net.send(e.stake(), "twin0", value=100)
    net.send(e.requestUnstake(10), "twin0")
    net.mine(UNSTAKE_DELAY - 1)
    receipt = net.send(e.requestUnstake(10), "twin0")
    assert e.pendingUnstake(net.accounts["twin0"]).call() == 20
    assert e.unlockBlock(net.accounts["twin0"]).call() == receipt["blockNumber"] + UNSTAKE_DELAY
    assert_reverts(net, e.withdraw(), "twin0", "unstake delay not elapsed")


def test_unstake_rejects_zero_and_excess(net: TestNet) -> None:
    e = net.election.functions
    net.send(e.stake(), "twin0", value=100)
    assert_reverts(net, e.requestUnstake(0), "twin0", "zero amount")
    assert_reverts(net, e.requestUnstake(101), "twin0", "amount exceeds stake")
    assert_reverts(net, e.requestUnstake(1), "twin1", "amount exceeds stake")


# ---------------------------------------------------------------- equivocation evidence


def sign(net: TestNet, signer: str, h: bytes) -> bytes:
    """65-byte r || s || v (v in {0, 1}) over a 32-byte hash, as validators sign."""
    return bytes(coincurve.PrivateKey(net.keys[signer]).sign_recoverable(h, hasher=None))


def sighash(
    chain_id: int, kind: int, height: int, rnd: int, digest: bytes, payload: bytes
) -> bytes:
    """The sighash layout of the brief, written out independently of node.consensus."""
    domain = keccak(b"TwinChain consensus message v1")
    words = b"".join(x.to_bytes(32, "big") for x in (chain_id, PBFT, kind, height, rnd))
    return keccak(domain + words + digest + payload)


def evidence(
    net: TestNet, signer: str, kind: int = PREPARE, chain_id: int | None = None
) -> tuple[object, ...]:
    """jail() arguments: `signer` signed two digests for (PBFT, kind, height 7, round 1)."""
    chain = net.chain_id if chain_id is None else chain_id
    da, db, pa, pb = (keccak(x) for x in (b"block-a", b"block-b", b"payload-a", b"payload-b"))
    sig_a = sign(net, signer, sighash(chain, kind, 7, 1, da, pa))
    sig_b = sign(net, signer, sighash(chain, kind, 7, 1, db, pb))
    return (net.accounts[signer], PBFT, kind, 7, 1, da, pa, sig_a, db, pb, sig_b)


def test_contract_sighash_matches_the_consensus_layer(net: TestNet) -> None:
    d, p = keccak(b"d"), keccak(b"p")
    on_chain = net.election.functions.sighash(PBFT, COMMIT, 12, 3, d, p).call()
    assert on_chain == sighash(net.chain_id, COMMIT, 12, 3, d, p)
    assert on_chain == messages.sighash(net.chain_id, PBFT, COMMIT, 12, 3, d, p)
    assert net.election.functions.DOMAIN().call() == messages.DOMAIN


def test_evidence_kinds_match_the_consensus_layer(net: TestNet) -> None:
    on_chain = {k for k in range(32) if net.election.functions.isEvidenceKind(k).call()}
    assert on_chain == {int(k) for k in messages.EQUIVOCATION_KINDS}


def test_jail_on_equivocation_excludes_the_validator(net: TestNet) -> None:
    candidates(net, ["miner0", "miner1", "miner2", "miner3"])
    stake_and_vote(net, "twin0", 100, ["miner2"])
    args = evidence(net, "miner2")
    receipt = net.send(net.election.functions.jail(*args), "auditor")
    _, engine, kind, height, rnd, da, pa, sig_a, db, pb, sig_b = args
    assert net.event(receipt, net.election, "Jailed") == {
        "validator": net.accounts["miner2"],
        "reporter": net.accounts["auditor"],
        "height": height,
        "engine": engine,
        "kind": kind,
        "round": rnd,
        "digest_a": da,
        "payload_hash_a": pa,
        "sig_a": sig_a,
        "digest_b": db,
        "payload_hash_b": pb,
        "sig_b": sig_b,
        "block": receipt["blockNumber"],
    }
    e = net.election.functions
    assert e.isJailed(net.accounts["miner2"]).call() is True
    assert net.accounts["miner2"] not in e.committee().call()
    assert len(e.committee().call()) == 3
    assert_reverts(net, e.registerCandidate(), "miner2", "candidate jailed")
    net.send(e.stake(), "twin1", value=5)
    assert_reverts(net, e.vote([net.accounts["miner2"]]), "twin1", "candidate jailed")


def test_jail_accepts_evidence_signed_by_the_node_signer(net: TestNet) -> None:
    candidates(net, ["miner1"])
    signer = messages.Signer(net.keys["miner1"])
    a = signer.sign(net.chain_id, messages.EngineId.DPOS, messages.Kind.BLOCK, 9, 0, b"\x01" * 32)
    b = signer.sign(net.chain_id, messages.EngineId.DPOS, messages.Kind.BLOCK, 9, 0, b"\x02" * 32)
    fn = net.election.functions.jail(
        net.accounts["miner1"], a.engine, a.kind, a.height, a.round, a.digest,
        a.payload_hash, a.signature, b.digest, b.payload_hash, b.signature,
    )  # fmt: skip
    net.send(fn, "miner0")
    assert net.election.functions.isJailed(net.accounts["miner1"]).call() is True


def test_jail_rejects_bad_evidence(net: TestNet) -> None:
    candidates(net, ["miner0", "miner1"])
    jail = net.election.functions.jail
    good = list(evidence(net, "miner0"))
    assert_reverts(net, jail(*good), "outsider", "not a member")
    assert_reverts(net, jail(*evidence(net, "miner2")), "twin0", "not a candidate")
    args = evidence(net, "miner0", kind=VIEW_CHANGE)
    assert_reverts(net, jail(*args), "twin0", "kind is not equivocation evidence")
    same = [*good[:8], good[5], good[6], good[7]]
    assert_reverts(net, jail(*same), "twin0", "digests do not differ")
    short = [*good[:10], good[10][:64]]
    assert_reverts(net, jail(*short), "twin0", "invalid signature length")
    v27 = [*good[:7], good[7][:64] + bytes([27]), *good[8:]]
    assert_reverts(net, jail(*v27), "twin0", "invalid signature v")
    by_other = list(evidence(net, "miner1"))
    mixed_a = [*good[:7], by_other[7], *good[8:]]
    assert_reverts(net, jail(*mixed_a), "twin0", "signature a not by validator")
    mixed_b = [*good[:10], by_other[10]]
    assert_reverts(net, jail(*mixed_b), "twin0", "signature b not by validator")
    other_chain = evidence(net, "miner0", chain_id=net.chain_id + 1)
    assert_reverts(net, jail(*other_chain), "twin0", "signature a not by validator")
    net.send(jail(*good), "twin0")
    assert_reverts(net, jail(*good), "twin0", "already jailed")


# ---------------------------------------------------------------- weight invariant

VOTERS = ("twin0", "twin1", "twin2", "publisher")
CANDIDATES = ("miner0", "miner1", "miner2", "miner3")

Op = tuple[str, int, int, tuple[int, ...]]  # (kind, voter index, amount, candidate indexes)

ops = st.lists(
    st.tuples(
        st.sampled_from(["stake", "vote", "unstake"]),
        st.integers(0, len(VOTERS) - 1),
        st.integers(1, 50),
        st.lists(st.integers(0, 3), max_size=MAX_VOTES, unique=True).map(tuple),
    ),
    min_size=4,
    max_size=14,
)


@settings(max_examples=6, deadline=None, derandomize=True)
@given(script=ops)
def test_weights_and_committee_follow_stakes_and_votes(
    session_net: TestNet, script: list[Op]
) -> None:
    """weightOf[c] == sum of the stakes of voters naming c; committee ranks by that."""
    net = session_net
    with net.isolated():
        candidates(net, CANDIDATES)
        stake = dict.fromkeys(VOTERS, 0)
        votes: dict[str, tuple[int, ...]] = dict.fromkeys(VOTERS, ())
        e = net.election.functions
        for kind, who, amount, picks in script:
            voter = VOTERS[who]
            if kind == "stake":
                net.send(e.stake(), voter, value=amount)
                stake[voter] += amount
            elif kind == "vote" and stake[voter] > 0:
                net.send(e.vote([net.accounts[CANDIDATES[i]] for i in picks]), voter)
                votes[voter] = picks
            elif kind == "unstake" and amount <= stake[voter]:
                net.send(e.requestUnstake(amount), voter)
                stake[voter] -= amount
        expected = {
            net.accounts[c]: sum(stake[v] for v in VOTERS if i in votes[v])
            for i, c in enumerate(CANDIDATES)
        }
        assert {a: e.weightOf(a).call() for a in expected} == expected
        ranked = sorted(expected, key=lambda a: (-expected[a], int(a, 16)))
        assert e.committee().call() == ranked[:3]
