#pragma version ~=0.4.3
"""
@title TwinChain Membership
@notice Consortium accounts, their role bitmasks, and k-of-n admin proposals.
@dev Theory of operation.

    Roles are bits: ADMIN=1, MINER=2, TWIN=4, PUBLISHER=8, AUDITOR=16. An account may
    hold several; an account holding none is not a member.

    The contract is predeployed at genesis (runtime code written into state, the
    constructor never runs) and then `initialize` is called exactly once.

    After that, every change goes through a proposal. `propose` by an ADMIN creates it
    and counts as its first approval; `approve` by other admins adds approvals; the
    approval that brings the count to the threshold executes it in the same call.
    Approvals are counted among *current* admins only, so an approval left behind by
    a removed admin no longer counts. A proposal's validity is checked when it is
    proposed and again when it executes (state may have moved in between); an
    invalid one reverts the approving transaction with the same reason.

    Actions (the `action` argument of `propose`):
        GRANT_ROLE=1     account gains the bits in `argument` (no ADMIN bit)
        REVOKE_ROLE=2    account loses the bits in `argument` (no ADMIN bit)
        SET_THRESHOLD=3  threshold becomes `argument` (1 <= argument <= admin count;
                         `account` must be the zero address)
        ADD_ADMIN=4      account gains ADMIN (`argument` must be 0)
        REMOVE_ADMIN=5   account loses ADMIN; refused if fewer admins than the
                         threshold would remain (`argument` must be 0)

    Enumerations: `members()` (order not stable: removal swaps the last member into
    the hole), `minersList()` (insertion order, stable: the PBFT validator set),
    `admins()` (insertion order).
"""

ADMIN: constant(uint256) = 1
MINER: constant(uint256) = 2
TWIN: constant(uint256) = 4
PUBLISHER: constant(uint256) = 8
AUDITOR: constant(uint256) = 16
ALL_ROLES: constant(uint256) = 31

GRANT_ROLE: constant(uint256) = 1
REVOKE_ROLE: constant(uint256) = 2
SET_THRESHOLD: constant(uint256) = 3
ADD_ADMIN: constant(uint256) = 4
REMOVE_ADMIN: constant(uint256) = 5

MAX_ADMINS: constant(uint256) = 32
MAX_MEMBERS: constant(uint256) = 256
MAX_MINERS: constant(uint256) = 64


struct Proposal:
    action: uint256
    account: address
    argument: uint256
    proposer: address
    created_block: uint256
    executed: bool
    executed_block: uint256
    approvers: DynArray[address, MAX_ADMINS]


event Initialized:
    initializer: indexed(address)
    admins: DynArray[address, MAX_ADMINS]
    threshold: uint256
    member_count: uint256

event RoleGranted:
    account: indexed(address)
    proposal_id: indexed(uint256)
    actor: indexed(address)
    role: uint256
    roles: uint256

event RoleRevoked:
    account: indexed(address)
    proposal_id: indexed(uint256)
    actor: indexed(address)
    role: uint256
    roles: uint256

event ThresholdChanged:
    proposal_id: indexed(uint256)
    actor: indexed(address)
    old_threshold: uint256
    new_threshold: uint256

event ProposalCreated:
    proposal_id: indexed(uint256)
    proposer: indexed(address)
    account: indexed(address)
    action: uint256
    argument: uint256
    block: uint256

event ProposalApproved:
    proposal_id: indexed(uint256)
    approver: indexed(address)
    approvals: uint256
    threshold: uint256

event ProposalExecuted:
    proposal_id: indexed(uint256)
    executor: indexed(address)
    account: indexed(address)
    action: uint256
    argument: uint256
    block: uint256


initialized: public(bool)
threshold: public(uint256)
proposalCount: public(uint256)

_roles: HashMap[address, uint256]
_members: DynArray[address, MAX_MEMBERS]
_member_slot: HashMap[address, uint256]  # index + 1; 0 = not listed
_miners: DynArray[address, MAX_MINERS]
_admins: DynArray[address, MAX_ADMINS]
_proposals: HashMap[uint256, Proposal]
_approved: HashMap[uint256, HashMap[address, bool]]


@deploy
def __init__():
    pass


# ---------------------------------------------------------------- initialisation


@external
def initialize(
    admins: DynArray[address, MAX_ADMINS],
    threshold: uint256,
    members: DynArray[address, MAX_MEMBERS],
    roles: DynArray[uint256, MAX_MEMBERS],
):
    """
    @notice Set the first admins, the approval threshold and the initial members.
    @dev Works once. Members already listed (or listed as admins) get the union of
         their roles.
    """
    assert not self.initialized, "already initialized"
    assert len(admins) > 0, "no admins"
    assert threshold >= 1 and threshold <= len(admins), "invalid threshold"
    assert len(members) == len(roles), "members and roles length mismatch"
    self.initialized = True
    self.threshold = threshold
    for admin: address in admins:
        assert admin != empty(address), "zero account"
        assert self._roles[admin] & ADMIN == 0, "duplicate admin"
        self._set_roles(admin, self._roles[admin] | ADMIN, 0)
    for i: uint256 in range(len(members), bound=MAX_MEMBERS):
        role: uint256 = roles[i]
        assert members[i] != empty(address), "zero account"
        assert role != 0 and role & ~ALL_ROLES == 0, "invalid role"
        self._set_roles(members[i], self._roles[members[i]] | role, 0)
    log Initialized(
        initializer=msg.sender,
        admins=admins,
        threshold=threshold,
        member_count=len(self._members),
    )


# ---------------------------------------------------------------- proposals


@external
def propose(action: uint256, account: address, argument: uint256) -> uint256:
    """
    @notice Propose an admin action; the proposer's approval is counted at once.
    @return The proposal id (ids start at 1).
    """
    assert self._roles[msg.sender] & ADMIN != 0, "not an ADMIN"
    self._check_action(action, account, argument)
    pid: uint256 = self.proposalCount + 1
    self.proposalCount = pid
    self._proposals[pid] = Proposal(
        action=action,
        account=account,
        argument=argument,
        proposer=msg.sender,
        created_block=block.number,
        executed=False,
        executed_block=0,
        approvers=[],
    )
    log ProposalCreated(
        proposal_id=pid,
        proposer=msg.sender,
        account=account,
        action=action,
        argument=argument,
        block=block.number,
    )
    self._approve(pid)
    return pid


@external
def approve(proposal_id: uint256):
    """
    @notice Approve a pending proposal; executes it when approvals reach the threshold.
    """
    assert self._roles[msg.sender] & ADMIN != 0, "not an ADMIN"
    self._require_pending(proposal_id)
    assert not self._approved[proposal_id][msg.sender], "already approved"
    self._approve(proposal_id)


@external
def execute(proposal_id: uint256):
    """
    @notice Execute a proposal whose approvals already reach the threshold.
    @dev Needed when the threshold was lowered after the last approval.
    """
    assert self._roles[msg.sender] & ADMIN != 0, "not an ADMIN"
    self._require_pending(proposal_id)
    assert self._live_approvals(proposal_id) >= self.threshold, "not enough approvals"
    self._execute(proposal_id)


@internal
def _require_pending(proposal_id: uint256):
    assert proposal_id >= 1 and proposal_id <= self.proposalCount, "unknown proposal"
    assert not self._proposals[proposal_id].executed, "proposal already executed"


@internal
def _approve(proposal_id: uint256):
    self._approved[proposal_id][msg.sender] = True
    self._proposals[proposal_id].approvers.append(msg.sender)
    approvals: uint256 = self._live_approvals(proposal_id)
    log ProposalApproved(
        proposal_id=proposal_id,
        approver=msg.sender,
        approvals=approvals,
        threshold=self.threshold,
    )
    if approvals >= self.threshold:
        self._execute(proposal_id)


@internal
def _execute(proposal_id: uint256):
    p: Proposal = self._proposals[proposal_id]
    # Re-validate: state may have changed since the proposal was made.
    self._check_action(p.action, p.account, p.argument)
    self._proposals[proposal_id].executed = True
    self._proposals[proposal_id].executed_block = block.number
    old: uint256 = self._roles[p.account]
    if p.action == GRANT_ROLE:
        self._set_roles(p.account, old | p.argument, proposal_id)
    elif p.action == REVOKE_ROLE:
        self._set_roles(p.account, old & ~p.argument, proposal_id)
    elif p.action == SET_THRESHOLD:
        log ThresholdChanged(
            proposal_id=proposal_id,
            actor=msg.sender,
            old_threshold=self.threshold,
            new_threshold=p.argument,
        )
        self.threshold = p.argument
    elif p.action == ADD_ADMIN:
        self._set_roles(p.account, old | ADMIN, proposal_id)
    else:  # REMOVE_ADMIN, the only action left after _check_action
        self._set_roles(p.account, old & ~ADMIN, proposal_id)
    log ProposalExecuted(
        proposal_id=proposal_id,
        executor=msg.sender,
        account=p.account,
        action=p.action,
        argument=p.argument,
        block=block.number,
    )


@view
@internal
def _check_action(action: uint256, account: address, argument: uint256):
    held: uint256 = self._roles[account]
    if action == GRANT_ROLE or action == REVOKE_ROLE:
        assert account != empty(address), "zero account"
        assert argument != 0 and argument & ~ALL_ROLES == 0, "invalid role"
        assert argument & ADMIN == 0, "use ADD_ADMIN or REMOVE_ADMIN for the ADMIN role"
        if action == GRANT_ROLE:
            assert held & argument != argument, "role already held"
            self._check_room(held, held | argument)
        else:
            assert held & argument != 0, "role not held"
    elif action == SET_THRESHOLD:
        assert account == empty(address), "account must be zero"
        assert argument >= 1 and argument <= len(self._admins), "invalid threshold"
        assert argument != self.threshold, "threshold unchanged"
    elif action == ADD_ADMIN or action == REMOVE_ADMIN:
        assert account != empty(address), "zero account"
        assert argument == 0, "argument must be zero"
        if action == ADD_ADMIN:
            assert held & ADMIN == 0, "already an ADMIN"
            self._check_room(held, held | ADMIN)
        else:
            assert held & ADMIN != 0, "account is not an ADMIN"
            assert len(self._admins) > self.threshold, "would leave fewer admins than threshold"
    else:
        raise "unknown action"


@view
@internal
def _check_room(old: uint256, new: uint256):
    """
    @dev The enumerations are bounded; refuse a change that would overflow one.
    """
    if old == 0:
        assert len(self._members) < MAX_MEMBERS, "member list full"
    gained: uint256 = new & ~old
    if gained & MINER != 0:
        assert len(self._miners) < MAX_MINERS, "miner list full"
    if gained & ADMIN != 0:
        assert len(self._admins) < MAX_ADMINS, "admin list full"


@view
@internal
def _live_approvals(proposal_id: uint256) -> uint256:
    count: uint256 = 0
    for approver: address in self._proposals[proposal_id].approvers:
        if self._roles[approver] & ADMIN != 0:
            count += 1
    return count


# ---------------------------------------------------------------- role bookkeeping


@internal
def _set_roles(account: address, new: uint256, proposal_id: uint256):
    """
    @dev The single place where roles change: keeps the three enumerations in step
         with the bitmask and logs what moved.
    """
    old: uint256 = self._roles[account]
    if old == new:
        return
    self._check_room(old, new)
    if old == 0:
        self._members.append(account)
        self._member_slot[account] = len(self._members)
    elif new == 0:
        self._unlist_member(account)
    gained: uint256 = new & ~old
    lost: uint256 = old & ~new
    if gained & MINER != 0:
        self._miners.append(account)
    if lost & MINER != 0:
        self._miners = self._without(self._miners, account)
    if gained & ADMIN != 0:
        self._admins.append(account)
    if lost & ADMIN != 0:
        kept: DynArray[address, MAX_ADMINS] = []
        for a: address in self._admins:
            if a != account:
                kept.append(a)
        self._admins = kept
    self._roles[account] = new
    if gained != 0:
        log RoleGranted(
            account=account, proposal_id=proposal_id, actor=msg.sender, role=gained, roles=new
        )
    if lost != 0:
        log RoleRevoked(
            account=account, proposal_id=proposal_id, actor=msg.sender, role=lost, roles=new
        )


@internal
def _unlist_member(account: address):
    slot: uint256 = self._member_slot[account]
    last: address = self._members.pop()
    if last != account:
        self._members[slot - 1] = last
        self._member_slot[last] = slot
    self._member_slot[account] = 0


@pure
@internal
def _without(
    items: DynArray[address, MAX_MINERS], account: address
) -> DynArray[address, MAX_MINERS]:
    kept: DynArray[address, MAX_MINERS] = []
    for a: address in items:
        if a != account:
            kept.append(a)
    return kept


# ---------------------------------------------------------------- views


@view
@external
def hasRole(account: address, role: uint256) -> bool:
    """
    @notice True iff `role` is non-zero and `account` holds every bit of it.
    """
    return role != 0 and self._roles[account] & role == role


@view
@external
def rolesOf(account: address) -> uint256:
    """
    @notice The role bitmask of `account` (0 = not a member).
    """
    return self._roles[account]


@view
@external
def members() -> DynArray[address, MAX_MEMBERS]:
    """
    @notice Every account holding at least one role (order not stable).
    """
    return self._members


@view
@external
def memberCount() -> uint256:
    return len(self._members)


@view
@external
def memberAt(index: uint256) -> address:
    assert index < len(self._members), "index out of range"
    return self._members[index]


@view
@external
def minersList() -> DynArray[address, MAX_MINERS]:
    """
    @notice Current MINER accounts in the order they gained the role.
    """
    return self._miners


@view
@external
def admins() -> DynArray[address, MAX_ADMINS]:
    """
    @notice Current ADMIN accounts in the order they gained the role.
    """
    return self._admins


@view
@external
def adminCount() -> uint256:
    return len(self._admins)


@view
@external
def getProposal(proposal_id: uint256) -> Proposal:
    assert proposal_id >= 1 and proposal_id <= self.proposalCount, "unknown proposal"
    return self._proposals[proposal_id]


@view
@external
def approvalsOf(proposal_id: uint256) -> uint256:
    """
    @notice Approvals of the proposal that still count (approvers who are admins now).
    """
    assert proposal_id >= 1 and proposal_id <= self.proposalCount, "unknown proposal"
    return self._live_approvals(proposal_id)


@view
@external
def hasApproved(proposal_id: uint256, admin: address) -> bool:
    return self._approved[proposal_id][admin]
