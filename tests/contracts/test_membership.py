"""Membership: roles, enumerations, k-of-n admin proposals (threshold 2 of 3 here)."""

from __future__ import annotations

import pytest
from eth_utils import to_checksum_address
from web3.contract import Contract

from contracts import ProposalAction, Role
from tests.contracts.net import ADMINS, ROLE_PLAN, THRESHOLD, TestNet, assert_reverts

ZERO = "0x0000000000000000000000000000000000000000"
GRANT, REVOKE, SET_THRESHOLD, ADD_ADMIN, REMOVE_ADMIN = (int(a) for a in ProposalAction)


def synthetic(i: int) -> str:
    """An address nobody holds a key for (members that never send transactions)."""
    return to_checksum_address(f"0x{0x10000 + i:040x}")


def propose(net: TestNet, proposer: str, action: int, account: str, argument: int) -> int:
    fn = net.membership.functions.propose(action, account, argument)
    return int(net.result_of(fn, proposer))


def fresh(
    net: TestNet, admins: list[str], threshold: int, members: list[str], roles: list[int]
) -> Contract:
    """An uninitialised Membership deployed by constructor, then initialised."""
    contract = net.deploy_fresh("Membership")
    fn = contract.functions.initialize(admins, threshold, members, roles)
    net.send(fn, "outsider", gas=29_000_000)
    return contract


# ---------------------------------------------------------------- genesis state


def test_genesis_roles_match_the_initialize_arguments(net: TestNet) -> None:
    m = net.membership.functions
    for name, role in ROLE_PLAN.items():
        expected = int(Role.ADMIN) if name in ADMINS else int(role)
        assert m.rolesOf(net.accounts[name]).call() == expected
    assert m.threshold().call() == THRESHOLD
    assert m.initialized().call() is True
    assert m.admins().call() == [net.accounts[n] for n in ADMINS]
    assert m.minersList().call() == [net.accounts[f"miner{i}"] for i in range(4)]
    members = m.members().call()
    assert sorted(members) == sorted(net.accounts[n] for n, r in ROLE_PLAN.items() if r)
    assert m.memberCount().call() == len(members)
    assert [m.memberAt(i).call() for i in range(len(members))] == members


def test_has_role_requires_every_bit_and_a_nonzero_role(net: TestNet) -> None:
    m = net.membership.functions
    twin = net.accounts["twin0"]
    assert m.hasRole(twin, int(Role.TWIN)).call() is True
    assert m.hasRole(twin, int(Role.TWIN | Role.MINER)).call() is False
    assert m.hasRole(twin, 0).call() is False
    assert m.hasRole(net.accounts["outsider"], int(Role.TWIN)).call() is False


def test_member_at_rejects_index_out_of_range(net: TestNet) -> None:
    count = net.membership.functions.memberCount().call()
    with pytest.raises(Exception, match="index out of range"):
        net.membership.functions.memberAt(count).call()


# ---------------------------------------------------------------- initialize


def test_initialize_works_only_once(net: TestNet) -> None:
    fn = net.membership.functions.initialize([net.accounts["outsider"]], 1, [], [])
    assert_reverts(net, fn, "outsider", "already initialized")


def test_initialize_logs_every_grant_and_the_parameters(net: TestNet) -> None:
    contract = net.deploy_fresh("Membership")
    a0, a1, miner = net.accounts["admin0"], net.accounts["admin1"], net.accounts["miner0"]
    fn = contract.functions.initialize([a0, a1], 1, [miner, a0], [int(Role.MINER), 8])
    receipt = net.send(fn, "outsider")
    grants = net.events(receipt, contract, "RoleGranted")
    assert [(g["account"], g["role"], g["roles"], g["proposal_id"]) for g in grants] == [
        (a0, 1, 1, 0),
        (a1, 1, 1, 0),
        (miner, 2, 2, 0),
        (a0, 8, 9, 0),  # an admin listed as a member gets the union of its roles
    ]
    assert all(g["actor"] == net.accounts["outsider"] for g in grants)
    init = net.event(receipt, contract, "Initialized")
    assert init["admins"] == [a0, a1]
    assert init["threshold"] == 1
    assert init["member_count"] == 3
    assert contract.functions.rolesOf(a0).call() == 9


@pytest.mark.parametrize(
    ("admins", "threshold", "members", "roles", "reason"),
    [
        ([], 1, [], [], "no admins"),
        (["admin0"], 0, [], [], "invalid threshold"),
        (["admin0"], 2, [], [], "invalid threshold"),
        (["admin0"], 1, ["twin0"], [], "members and roles length mismatch"),
        ([ZERO], 1, [], [], "zero account"),
        (["admin0"], 1, [ZERO], [4], "zero account"),
        (["admin0", "admin0"], 1, [], [], "duplicate admin"),
        (["admin0"], 1, ["twin0"], [0], "invalid role"),
        (["admin0"], 1, ["twin0"], [32], "invalid role"),
    ],
)
def test_initialize_rejects_bad_arguments(
    net: TestNet,
    admins: list[str],
    threshold: int,
    members: list[str],
    roles: list[int],
    reason: str,
) -> None:
    contract = net.deploy_fresh("Membership")
    resolve = lambda n: net.accounts.get(n, n)  # noqa: E731
    fn = contract.functions.initialize(
        [resolve(a) for a in admins], threshold, [resolve(m) for m in members], roles
    )
    assert_reverts(net, fn, "outsider", reason)


def test_initialize_rejects_more_members_than_the_list_holds(net: TestNet) -> None:
    contract = net.deploy_fresh("Membership")
    members = [synthetic(i) for i in range(256)]
    fn = contract.functions.initialize([net.accounts["admin0"]], 1, members, [4] * 256)
    assert_reverts(net, fn, "outsider", "member list full")


# ---------------------------------------------------------------- propose / approve


def test_proposal_counts_the_proposer_as_first_approval(net: TestNet) -> None:
    outsider = net.accounts["outsider"]
    fn = net.membership.functions.propose(GRANT, outsider, int(Role.TWIN))
    receipt = net.send(fn, "admin0")
    created = net.event(receipt, net.membership, "ProposalCreated")
    assert created == {
        "proposal_id": 1,
        "proposer": net.accounts["admin0"],
        "account": outsider,
        "action": GRANT,
        "argument": int(Role.TWIN),
        "block": receipt["blockNumber"],
    }
    approved = net.event(receipt, net.membership, "ProposalApproved")
    assert (approved["approvals"], approved["threshold"]) == (1, THRESHOLD)
    assert net.events(receipt, net.membership, "ProposalExecuted") == []
    m = net.membership.functions
    assert m.approvalsOf(1).call() == 1
    assert m.hasApproved(1, net.accounts["admin0"]).call() is True
    proposal = m.getProposal(1).call()
    admin0 = net.accounts["admin0"]
    assert proposal == (GRANT, outsider, 4, admin0, receipt["blockNumber"], False, 0, [admin0])
    assert m.rolesOf(outsider).call() == 0


def test_grant_role_executes_when_approvals_reach_threshold(net: TestNet) -> None:
    outsider = net.accounts["outsider"]
    pid = propose(net, "admin0", GRANT, outsider, int(Role.MINER | Role.TWIN))
    receipt = net.send(net.membership.functions.approve(pid), "admin1")
    executed = net.event(receipt, net.membership, "ProposalExecuted")
    assert (executed["proposal_id"], executed["executor"], executed["account"]) == (
        pid,
        net.accounts["admin1"],
        outsider,
    )
    granted = net.event(receipt, net.membership, "RoleGranted")
    assert granted == {
        "account": outsider,
        "proposal_id": pid,
        "actor": net.accounts["admin1"],
        "role": 6,
        "roles": 6,
    }
    m = net.membership.functions
    assert m.rolesOf(outsider).call() == 6
    assert outsider in m.members().call()
    assert m.minersList().call()[-1] == outsider
    assert m.getProposal(pid).call()[5] is True  # executed


def test_grant_role_gains_only_the_missing_bits(net: TestNet) -> None:
    twin = net.accounts["twin0"]
    pid = propose(net, "admin0", GRANT, twin, int(Role.TWIN | Role.AUDITOR))
    receipt = net.send(net.membership.functions.approve(pid), "admin1")
    granted = net.event(receipt, net.membership, "RoleGranted")
    assert (granted["role"], granted["roles"]) == (int(Role.AUDITOR), int(Role.TWIN | Role.AUDITOR))


def test_revoke_role_keeps_miner_order_and_unlists_empty_accounts(net: TestNet) -> None:
    miner1 = net.accounts["miner1"]
    pid = propose(net, "admin0", REVOKE, miner1, int(Role.MINER))
    receipt = net.send(net.membership.functions.approve(pid), "admin2")
    revoked = net.event(receipt, net.membership, "RoleRevoked")
    assert (revoked["account"], revoked["role"], revoked["roles"]) == (miner1, 2, 0)
    m = net.membership.functions
    assert m.minersList().call() == [net.accounts[f"miner{i}"] for i in (0, 2, 3)]
    assert miner1 not in m.members().call()
    assert m.rolesOf(miner1).call() == 0
    assert m.memberCount().call() == len(m.members().call())


def test_set_threshold_changes_the_approvals_needed(net: TestNet) -> None:
    pid = propose(net, "admin0", SET_THRESHOLD, ZERO, 3)
    receipt = net.send(net.membership.functions.approve(pid), "admin1")
    changed = net.event(receipt, net.membership, "ThresholdChanged")
    assert (changed["old_threshold"], changed["new_threshold"]) == (2, 3)
    assert net.membership.functions.threshold().call() == 3
    grant = propose(net, "admin0", GRANT, net.accounts["outsider"], 4)
    net.send(net.membership.functions.approve(grant), "admin1")
    assert net.membership.functions.rolesOf(net.accounts["outsider"]).call() == 0
    net.send(net.membership.functions.approve(grant), "admin2")
    assert net.membership.functions.rolesOf(net.accounts["outsider"]).call() == 4


def test_add_and_remove_admin(net: TestNet) -> None:
    newcomer = net.accounts["publisher"]
    pid = propose(net, "admin0", ADD_ADMIN, newcomer, 0)
    net.send(net.membership.functions.approve(pid), "admin1")
    m = net.membership.functions
    assert m.admins().call() == [*(net.accounts[n] for n in ADMINS), newcomer]
    assert m.rolesOf(newcomer).call() == int(Role.ADMIN | Role.PUBLISHER)
    pid = propose(net, "publisher", REMOVE_ADMIN, net.accounts["admin0"], 0)
    receipt = net.send(m.approve(pid), "admin2")
    assert net.event(receipt, net.membership, "RoleRevoked")["role"] == int(Role.ADMIN)
    assert m.admins().call() == [net.accounts["admin1"], net.accounts["admin2"], newcomer]
    assert m.adminCount().call() == 3
    assert net.accounts["admin0"] not in m.members().call()


def test_double_approval_rejected(net: TestNet) -> None:
    pid = propose(net, "admin0", GRANT, net.accounts["outsider"], 4)
    assert_reverts(net, net.membership.functions.approve(pid), "admin0", "already approved")


def test_executed_proposal_cannot_run_again(net: TestNet) -> None:
    pid = propose(net, "admin0", GRANT, net.accounts["outsider"], 4)
    net.send(net.membership.functions.approve(pid), "admin1")
    m = net.membership.functions
    assert_reverts(net, m.approve(pid), "admin2", "proposal already executed")
    assert_reverts(net, m.execute(pid), "admin2", "proposal already executed")


@pytest.mark.parametrize("pid", [0, 7])
def test_unknown_proposal_rejected(net: TestNet, pid: int) -> None:
    m = net.membership.functions
    assert_reverts(net, m.approve(pid), "admin0", "unknown proposal")
    assert_reverts(net, m.execute(pid), "admin0", "unknown proposal")
    for view in (m.getProposal(pid), m.approvalsOf(pid)):
        with pytest.raises(Exception, match="unknown proposal"):
            view.call()


@pytest.mark.parametrize("sender", ["miner0", "publisher", "outsider"])
def test_only_admins_propose_approve_and_execute(net: TestNet, sender: str) -> None:
    m = net.membership.functions
    assert_reverts(net, m.propose(GRANT, net.accounts["outsider"], 4), sender, "not an ADMIN")
    pid = propose(net, "admin0", GRANT, net.accounts["outsider"], 4)
    assert_reverts(net, m.approve(pid), sender, "not an ADMIN")
    assert_reverts(net, m.execute(pid), sender, "not an ADMIN")


@pytest.mark.parametrize(
    ("action", "account", "argument", "reason"),
    [
        (GRANT, ZERO, 4, "zero account"),
        (GRANT, "outsider", 0, "invalid role"),
        (GRANT, "outsider", 32, "invalid role"),
        (GRANT, "outsider", 1, "use ADD_ADMIN or REMOVE_ADMIN for the ADMIN role"),
        (REVOKE, "admin1", 1, "use ADD_ADMIN or REMOVE_ADMIN for the ADMIN role"),
        (GRANT, "twin0", 4, "role already held"),
        (REVOKE, "twin0", 2, "role not held"),
        (SET_THRESHOLD, ZERO, 0, "invalid threshold"),
        (SET_THRESHOLD, ZERO, 4, "invalid threshold"),
        (SET_THRESHOLD, ZERO, 2, "threshold unchanged"),
        (SET_THRESHOLD, "outsider", 3, "account must be zero"),
        (ADD_ADMIN, ZERO, 0, "zero account"),
        (ADD_ADMIN, "outsider", 1, "argument must be zero"),
        (ADD_ADMIN, "admin1", 0, "already an ADMIN"),
        (REMOVE_ADMIN, "twin0", 0, "account is not an ADMIN"),
        (0, "outsider", 4, "unknown action"),
        (6, "outsider", 4, "unknown action"),
    ],
)
def test_invalid_proposal_rejected(
    net: TestNet, action: int, account: str, argument: int, reason: str
) -> None:
    fn = net.membership.functions.propose(action, net.accounts.get(account, account), argument)
    assert_reverts(net, fn, "admin0", reason)


def test_remove_admin_refused_when_fewer_admins_than_threshold_would_remain(
    net: TestNet,
) -> None:
    m = net.membership.functions
    pid = propose(net, "admin0", REMOVE_ADMIN, net.accounts["admin2"], 0)
    net.send(m.approve(pid), "admin1")
    assert m.adminCount().call() == 2
    fn = m.propose(REMOVE_ADMIN, net.accounts["admin1"], 0)
    assert_reverts(net, fn, "admin0", "would leave fewer admins than threshold")


def test_approval_of_removed_admin_no_longer_counts(net: TestNet) -> None:
    m = net.membership.functions
    outsider = net.accounts["outsider"]
    pending = propose(net, "admin2", GRANT, outsider, 4)
    removal = propose(net, "admin0", REMOVE_ADMIN, net.accounts["admin2"], 0)
    net.send(m.approve(removal), "admin1")
    assert m.approvalsOf(pending).call() == 0
    net.send(m.approve(pending), "admin0")
    assert m.rolesOf(outsider).call() == 0  # one live approval of two needed
    net.send(m.approve(pending), "admin1")
    assert m.rolesOf(outsider).call() == 4


def test_stale_proposal_is_revalidated_at_execution(net: TestNet) -> None:
    m = net.membership.functions
    outsider = net.accounts["outsider"]
    first = propose(net, "admin0", GRANT, outsider, 4)
    second = propose(net, "admin1", GRANT, outsider, 4)
    net.send(m.approve(first), "admin1")
    assert_reverts(net, m.approve(second), "admin0", "role already held")
    assert m.getProposal(second).call()[5] is False


def test_execute_after_threshold_was_lowered(net: TestNet) -> None:
    m = net.membership.functions
    raise_to_3 = propose(net, "admin0", SET_THRESHOLD, ZERO, 3)
    net.send(m.approve(raise_to_3), "admin1")
    grant = propose(net, "admin0", GRANT, net.accounts["outsider"], 4)
    net.send(m.approve(grant), "admin1")
    assert_reverts(net, m.execute(grant), "admin0", "not enough approvals")
    lower_to_2 = propose(net, "admin0", SET_THRESHOLD, ZERO, 2)
    net.send(m.approve(lower_to_2), "admin1")
    net.send(m.approve(lower_to_2), "admin2")
    receipt = net.send(m.execute(grant), "admin2")
    assert net.event(receipt, net.membership, "ProposalExecuted")["proposal_id"] == grant
    assert m.rolesOf(net.accounts["outsider"]).call() == 4


# ---------------------------------------------------------------- bounded lists


def test_grant_refused_when_member_list_full(net: TestNet) -> None:
    admin = net.accounts["admin0"]
    contract = fresh(net, [admin], 1, [synthetic(i) for i in range(255)], [4] * 255)
    assert contract.functions.memberCount().call() == 256
    fn = contract.functions.propose(GRANT, net.accounts["outsider"], 4)
    assert_reverts(net, fn, "admin0", "member list full")


def test_grant_refused_when_miner_list_full(net: TestNet) -> None:
    admin = net.accounts["admin0"]
    contract = fresh(net, [admin], 1, [synthetic(i) for i in range(64)], [2] * 64)
    fn = contract.functions.propose(GRANT, net.accounts["outsider"], int(Role.MINER))
    assert_reverts(net, fn, "admin0", "miner list full")


def test_add_admin_refused_when_admin_list_full(net: TestNet) -> None:
    admins = [net.accounts["admin0"], *(synthetic(i) for i in range(31))]
    contract = fresh(net, admins, 1, [], [])
    fn = contract.functions.propose(ADD_ADMIN, net.accounts["outsider"], 0)
    assert_reverts(net, fn, "admin0", "admin list full")


def test_threshold_one_executes_on_propose(net: TestNet) -> None:
    contract = fresh(net, [net.accounts["admin0"]], 1, [], [])
    fn = contract.functions.propose(GRANT, net.accounts["outsider"], 8)
    receipt = net.send(fn, "admin0")
    assert net.event(receipt, contract, "ProposalExecuted")["proposal_id"] == 1
    assert contract.functions.rolesOf(net.accounts["outsider"]).call() == 8
