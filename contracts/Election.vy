#pragma version ~=0.4.3
"""
@title TwinChain Election
@notice Delegated proof of stake: members stake native coin and vote for MINER
        candidates; the committee is the top `committee_size` candidates by weight.
        Anyone who is a member may jail a candidate given two conflicting signed
        consensus messages (equivocation evidence).
@dev Theory of operation.

    Weight. A voter's whole current stake counts for each candidate it votes for
    (up to `max_votes` of them), so at all times
        weightOf[c] == sum(stakeOf[v] for every voter v whose votes contain c).
    `stake`, `vote` and `requestUnstake` keep that invariant; voting again replaces
    the previous votes; an unstake request removes its amount from the weights at
    once, and the coin can be withdrawn `unstake_delay` blocks later (a new request
    restarts the delay for everything pending).

    Committee. Eligible candidates are those not jailed that still hold MINER in
    Membership. They are ordered by weight (highest first), ties by lower address,
    and the first `committee_size` form the committee. Candidates with zero weight
    stay eligible, so a fresh network with no votes yet still has a committee.

    Evidence. Consensus messages are signed over
        keccak256(abi.encode(DOMAIN, chain_id, engine, kind, height, round,
                             digest, payload_hash))
    with DOMAIN = keccak256("TwinChain consensus message v1") and signatures laid
    out r || s || v, v in {0, 1}. Two signatures by one validator for the same
    (engine, kind, height, round) over different digests are equivocation, for the
    kinds where an honest validator signs one digest per slot: PRE-PREPARE=1,
    PREPARE=2, COMMIT=3 (PBFT), BLOCK=16, CONFIRM=17 (DPoS) -- the same set as
    node.consensus.messages.EQUIVOCATION_KINDS. View changes and checkpoints are not
    evidence. `jail` does not slash stake; it removes the candidate from the
    committee for good.
"""


interface IMembership:
    def rolesOf(account: address) -> uint256: view


MINER: constant(uint256) = 2

MAX_CANDIDATES: constant(uint256) = 64
MAX_COMMITTEE: constant(uint256) = 64
MAXV: constant(uint256) = 32

# Message kinds that are equivocation evidence (values fixed by node.consensus.messages).
KIND_PRE_PREPARE: constant(uint256) = 1
KIND_PREPARE: constant(uint256) = 2
KIND_COMMIT: constant(uint256) = 3
KIND_BLOCK: constant(uint256) = 16
KIND_CONFIRM: constant(uint256) = 17

DOMAIN: public(constant(bytes32)) = keccak256("TwinChain consensus message v1")


event Initialized:
    initializer: indexed(address)
    membership: address
    committee_size: uint256
    max_votes: uint256
    unstake_delay: uint256

event Staked:
    account: indexed(address)
    amount: uint256
    stake: uint256
    block: uint256

event CandidateRegistered:
    candidate: indexed(address)
    block: uint256

event Voted:
    voter: indexed(address)
    candidates: DynArray[address, MAXV]
    previous: DynArray[address, MAXV]
    weight: uint256
    block: uint256

event UnstakeRequested:
    account: indexed(address)
    amount: uint256
    stake: uint256
    pending: uint256
    unlock_block: uint256

event Withdrawn:
    account: indexed(address)
    amount: uint256
    block: uint256

event Jailed:
    validator: indexed(address)
    reporter: indexed(address)
    height: indexed(uint256)
    engine: uint256
    kind: uint256
    round: uint256
    digest_a: bytes32
    payload_hash_a: bytes32
    sig_a: Bytes[65]
    digest_b: bytes32
    payload_hash_b: bytes32
    sig_b: Bytes[65]
    block: uint256


initialized: public(bool)
membership: public(address)
committeeSize: public(uint256)
maxVotes: public(uint256)
unstakeDelay: public(uint256)

stakeOf: public(HashMap[address, uint256])
totalStaked: public(uint256)
weightOf: public(HashMap[address, uint256])
pendingUnstake: public(HashMap[address, uint256])
unlockBlock: public(HashMap[address, uint256])
isCandidate: public(HashMap[address, bool])
isJailed: public(HashMap[address, bool])

_votes: HashMap[address, DynArray[address, MAXV]]
_candidates: DynArray[address, MAX_CANDIDATES]


@deploy
def __init__():
    pass


@external
def initialize(
    membership: address, committee_size: uint256, max_votes: uint256, unstake_delay: uint256
):
    """
    @notice Bind to Membership and set the election parameters. Works once.
    """
    assert not self.initialized, "already initialized"
    assert membership != empty(address), "zero membership address"
    assert membership.is_contract, "membership has no code"
    assert committee_size >= 1 and committee_size <= MAX_COMMITTEE, "invalid committee size"
    assert max_votes >= 1 and max_votes <= MAXV, "invalid max votes"
    self.initialized = True
    self.membership = membership
    self.committeeSize = committee_size
    self.maxVotes = max_votes
    self.unstakeDelay = unstake_delay
    log Initialized(
        initializer=msg.sender,
        membership=membership,
        committee_size=committee_size,
        max_votes=max_votes,
        unstake_delay=unstake_delay,
    )


@view
@internal
def _roles_of(account: address) -> uint256:
    membership: address = self.membership
    assert membership != empty(address), "not initialized"
    return staticcall IMembership(membership).rolesOf(account)


# ---------------------------------------------------------------- stake and votes


@payable
@external
def stake():
    """
    @notice Lock `msg.value` more native coin; current votes gain the same weight.
    """
    assert self._roles_of(msg.sender) != 0, "not a member"
    assert msg.value > 0, "zero stake"
    new_stake: uint256 = self.stakeOf[msg.sender] + msg.value
    self.stakeOf[msg.sender] = new_stake
    self.totalStaked += msg.value
    for candidate: address in self._votes[msg.sender]:
        self.weightOf[candidate] += msg.value
    log Staked(account=msg.sender, amount=msg.value, stake=new_stake, block=block.number)


@external
def registerCandidate():
    """
    @notice Stand for the committee. Only MINER accounts; a jailed one never again.
    """
    assert self._roles_of(msg.sender) & MINER != 0, "not a MINER"
    assert not self.isJailed[msg.sender], "candidate jailed"
    assert not self.isCandidate[msg.sender], "already a candidate"
    assert len(self._candidates) < MAX_CANDIDATES, "candidate list full"
    self.isCandidate[msg.sender] = True
    self._candidates.append(msg.sender)
    log CandidateRegistered(candidate=msg.sender, block=block.number)


@external
def vote(candidates: DynArray[address, MAXV]):
    """
    @notice Replace the caller's votes; each named candidate gets the caller's stake.
    @dev An empty list withdraws all votes.
    """
    weight: uint256 = self.stakeOf[msg.sender]
    assert weight > 0, "no stake"
    assert len(candidates) <= self.maxVotes, "too many votes"
    for i: uint256 in range(len(candidates), bound=MAXV):
        candidate: address = candidates[i]
        assert self.isCandidate[candidate], "not a candidate"
        assert not self.isJailed[candidate], "candidate jailed"
        for j: uint256 in range(i, bound=MAXV):
            assert candidates[j] != candidate, "duplicate candidate"
    previous: DynArray[address, MAXV] = self._votes[msg.sender]
    for candidate: address in previous:
        self.weightOf[candidate] -= weight
    for candidate: address in candidates:
        self.weightOf[candidate] += weight
    self._votes[msg.sender] = candidates
    log Voted(
        voter=msg.sender,
        candidates=candidates,
        previous=previous,
        weight=weight,
        block=block.number,
    )


@external
def requestUnstake(amount: uint256):
    """
    @notice Start unlocking `amount`; it stops counting as weight now and can be
            withdrawn `unstakeDelay` blocks later.
    """
    assert amount > 0, "zero amount"
    current: uint256 = self.stakeOf[msg.sender]
    assert amount <= current, "amount exceeds stake"
    self.stakeOf[msg.sender] = current - amount
    self.totalStaked -= amount
    for candidate: address in self._votes[msg.sender]:
        self.weightOf[candidate] -= amount
    pending: uint256 = self.pendingUnstake[msg.sender] + amount
    unlock: uint256 = block.number + self.unstakeDelay
    self.pendingUnstake[msg.sender] = pending
    self.unlockBlock[msg.sender] = unlock
    log UnstakeRequested(
        account=msg.sender,
        amount=amount,
        stake=current - amount,
        pending=pending,
        unlock_block=unlock,
    )


@nonreentrant
@external
def withdraw():
    """
    @notice Pay out everything pending once its delay has elapsed.
    """
    amount: uint256 = self.pendingUnstake[msg.sender]
    assert amount > 0, "nothing to withdraw"
    assert block.number >= self.unlockBlock[msg.sender], "unstake delay not elapsed"
    self.pendingUnstake[msg.sender] = 0
    self.unlockBlock[msg.sender] = 0
    log Withdrawn(account=msg.sender, amount=amount, block=block.number)
    raw_call(msg.sender, b"", value=amount)


# ---------------------------------------------------------------- evidence


@view
@internal
def _sighash(
    engine: uint256,
    kind: uint256,
    height: uint256,
    round: uint256,
    digest: bytes32,
    payload_hash: bytes32,
) -> bytes32:
    return keccak256(
        concat(
            DOMAIN,
            convert(chain.id, bytes32),
            convert(engine, bytes32),
            convert(kind, bytes32),
            convert(height, bytes32),
            convert(round, bytes32),
            digest,
            payload_hash,
        )
    )


@pure
@internal
def _signer(sighash: bytes32, sig: Bytes[65]) -> address:
    assert len(sig) == 65, "invalid signature length"
    v: uint256 = convert(slice(sig, 64, 1), uint256)
    assert v <= 1, "invalid signature v"
    return ecrecover(sighash, v + 27, extract32(sig, 0), extract32(sig, 32))


@pure
@internal
def _is_evidence_kind(kind: uint256) -> bool:
    return (
        kind == KIND_PRE_PREPARE
        or kind == KIND_PREPARE
        or kind == KIND_COMMIT
        or kind == KIND_BLOCK
        or kind == KIND_CONFIRM
    )


@pure
@external
def isEvidenceKind(kind: uint256) -> bool:
    """
    @notice True iff two conflicting signatures of this message kind prove equivocation.
    """
    return self._is_evidence_kind(kind)


@view
@external
def sighash(
    engine: uint256,
    kind: uint256,
    height: uint256,
    round: uint256,
    digest: bytes32,
    payload_hash: bytes32,
) -> bytes32:
    """
    @notice The hash a validator signs for a consensus message on this chain.
    """
    return self._sighash(engine, kind, height, round, digest, payload_hash)


@external
def jail(
    validator: address,
    engine: uint256,
    kind: uint256,
    height: uint256,
    round: uint256,
    digest_a: bytes32,
    payload_hash_a: bytes32,
    sig_a: Bytes[65],
    digest_b: bytes32,
    payload_hash_b: bytes32,
    sig_b: Bytes[65],
):
    """
    @notice Jail `validator` for signing two different digests in one slot.
    """
    assert self._roles_of(msg.sender) != 0, "not a member"
    assert self.isCandidate[validator], "not a candidate"
    assert not self.isJailed[validator], "already jailed"
    assert self._is_evidence_kind(kind), "kind is not equivocation evidence"
    assert digest_a != digest_b, "digests do not differ"
    signer_a: address = self._signer(
        self._sighash(engine, kind, height, round, digest_a, payload_hash_a), sig_a
    )
    assert signer_a == validator, "signature a not by validator"
    signer_b: address = self._signer(
        self._sighash(engine, kind, height, round, digest_b, payload_hash_b), sig_b
    )
    assert signer_b == validator, "signature b not by validator"
    self.isJailed[validator] = True
    log Jailed(
        validator=validator,
        reporter=msg.sender,
        height=height,
        engine=engine,
        kind=kind,
        round=round,
        digest_a=digest_a,
        payload_hash_a=payload_hash_a,
        sig_a=sig_a,
        digest_b=digest_b,
        payload_hash_b=payload_hash_b,
        sig_b=sig_b,
        block=block.number,
    )


# ---------------------------------------------------------------- views


@view
@external
def committee() -> DynArray[address, MAX_COMMITTEE]:
    """
    @notice Top `committeeSize` eligible candidates by weight, ties by lower address.
    """
    ranked: DynArray[address, MAX_CANDIDATES] = []
    weights: DynArray[uint256, MAX_CANDIDATES] = []
    for candidate: address in self._candidates:
        if self.isJailed[candidate] or self._roles_of(candidate) & MINER == 0:
            continue
        # Insertion sort: shift lower-ranked entries one place right.
        weight: uint256 = self.weightOf[candidate]
        ranked.append(candidate)
        weights.append(weight)
        pos: uint256 = len(ranked) - 1
        for _k: uint256 in range(MAX_CANDIDATES):
            if pos == 0 or not self._ranks_before(
                weight, candidate, weights[pos - 1], ranked[pos - 1]
            ):
                break
            ranked[pos] = ranked[pos - 1]
            weights[pos] = weights[pos - 1]
            pos -= 1
        ranked[pos] = candidate
        weights[pos] = weight
    size: uint256 = min(self.committeeSize, len(ranked))
    result: DynArray[address, MAX_COMMITTEE] = []
    for i: uint256 in range(size, bound=MAX_COMMITTEE):
        result.append(ranked[i])
    return result


@pure
@internal
def _ranks_before(w_a: uint256, a: address, w_b: uint256, b: address) -> bool:
    if w_a != w_b:
        return w_a > w_b
    return convert(a, uint256) < convert(b, uint256)


@view
@external
def candidates() -> DynArray[address, MAX_CANDIDATES]:
    """
    @notice Every registered candidate (jailed included) in registration order.
    """
    return self._candidates


@view
@external
def votesOf(voter: address) -> DynArray[address, MAXV]:
    return self._votes[voter]
