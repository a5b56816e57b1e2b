"""DPoS confirmation votes: how the two phases ride in CONFIRM messages, and their tallies.

A delegate's confirmation of the block at ``height`` in confirmation round ``r`` happens in
two phases, both carried by :attr:`Kind.CONFIRM` messages (the core message kinds are
shared, so the phase is encoded rather than given a kind of its own):

==============  ===============  ===============================  ======================
phase           message round    payload                          used for
==============  ===============  ===============================  ======================
pre-confirm     ``2 * r``        ``RLP([slot])`` (never empty)    locks (a quorum = POL)
confirm         ``2 * r + 1``    empty                            commit certificates
==============  ===============  ===============================  ======================

Why this encoding is sound:

- a commit certificate is a quorum of signatures over the sighash with an *empty* payload
  (:meth:`CommitCertificate.vote_hash`); a pre-confirm always carries a non-empty payload,
  so its signature can never be counted in a certificate, whatever its round says;
- the phases never share a message round, so an honest delegate that pre-confirms block A
  and then confirms block B of the same confirmation round (it saw a quorum for B) does not
  look like an equivocator to :class:`EquivocationDetector`; two pre-confirms (or two
  confirms) with different digests at one ``(height, message round)`` are real evidence;
- the pre-confirm payload carries the sender's current slot: the slot clocks of the
  delegates synchronise on it (see :mod:`node.consensus.dpos_schedule`).

:class:`VoteBook` keeps the verified votes of the heights still in play: per
``(height, round, phase)`` the first vote of each signer per digest, the highest round in
which each block had a pre-confirm quorum (its *POL round*, after Tendermint's
proof-of-lock), which ``(height, round)`` reached a confirm quorum, and the highest round
each delegate voted in (for round synchronisation).

A pre-confirm with an empty digest is a *nil* pre-confirm ("no block this round"): it
counts as taking part in the round, never towards a POL. Confirms are never nil.
"""

from __future__ import annotations

import rlp

from node.consensus.certificate import CommitCertificate
from node.consensus.messages import SignedMessage
from node.consensus.types import Address, Hash32

PRECONFIRM = 0
"""Phase 0: the lock-forming vote (Tendermint's prevote)."""

CONFIRM = 1
"""Phase 1: the certificate vote (Tendermint's precommit)."""

NIL = Hash32(b"")
"""Digest of a nil pre-confirm."""

NO_POL = -1
"""POL round of a block that never had a pre-confirm quorum."""

VoteKey = tuple[int, int, int]  # (height, round, phase)


def wire_round(round_: int, phase: int) -> int:
    """The ``round`` field of a CONFIRM message for ``round_`` and ``phase``."""
    return 2 * round_ + phase


def split_round(wire: int) -> tuple[int, int]:
    """Inverse of :func:`wire_round`: ``(round, phase)``."""
    round_, phase = divmod(wire, 2)
    return round_, phase


def preconfirm_payload(slot: int) -> bytes:
    """Body of a pre-confirm: the sender's current slot."""
    return bytes(rlp.encode([slot]))


def decode_preconfirm_payload(payload: bytes) -> int:
    """The slot a pre-confirm claims; raises ``ValueError`` when malformed."""
    try:
        items = rlp.decode(payload, strict=True)
    except rlp.exceptions.RLPException as exc:
        raise ValueError(f"malformed pre-confirm body: {exc}") from exc
    if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], bytes):
        raise ValueError("malformed pre-confirm body: expected [slot]")
    raw = items[0]
    if len(raw) > 8 or (raw and raw[0] == 0):
        raise ValueError("malformed pre-confirm body: non-canonical slot")
    return int.from_bytes(raw, "big")


class VoteBook:
    """Verified pre-confirms and confirms of the heights still in play."""

    def __init__(self) -> None:
        self._votes: dict[VoteKey, dict[Hash32, dict[Address, SignedMessage]]] = {}
        self._first: dict[VoteKey, dict[Address, Hash32]] = {}
        self._two_faced: set[tuple[VoteKey, Address]] = set()
        self._signers: dict[tuple[int, int], set[Address]] = {}
        self._latest: dict[int, dict[Address, int]] = {}
        self._pol: dict[Hash32, int] = {}
        self._pol_at: dict[tuple[int, int], list[Hash32]] = {}
        self._certified: dict[int, list[tuple[int, Hash32]]] = {}

    def add(self, msg: SignedMessage, quorum: int) -> bool:
        """Record a verified CONFIRM message; True iff it completed a quorum.

        A signer counts once per ``(height, round, phase, digest)``. An equivocating
        signer is counted for each digest it signed: two quorums for different digests
        would need an honest signer in both (quorum intersection), so this is safe.
        """
        round_, phase = split_round(msg.round)
        key = (msg.height, round_, phase)
        by_digest = self._votes.setdefault(key, {})
        voters = by_digest.setdefault(msg.digest, {})
        if msg.signer in voters:
            return False
        voters[msg.signer] = msg
        if self._first.setdefault(key, {}).setdefault(msg.signer, msg.digest) != msg.digest:
            self._two_faced.add((key, msg.signer))
        self._signers.setdefault((msg.height, round_), set()).add(msg.signer)
        latest = self._latest.setdefault(msg.height, {})
        latest[msg.signer] = max(latest.get(msg.signer, round_), round_)
        if len(voters) != quorum or msg.digest == NIL:
            return False
        if phase == PRECONFIRM:
            self._pol[msg.digest] = max(self._pol.get(msg.digest, NO_POL), round_)
            self._pol_at.setdefault((msg.height, round_), []).append(msg.digest)
        else:
            self._certified.setdefault(msg.height, []).append((round_, msg.digest))
        return True

    def pol_round(self, block_hash: bytes) -> int:
        """Highest round in which ``block_hash`` had a pre-confirm quorum, or NO_POL."""
        return self._pol.get(Hash32(block_hash), NO_POL)

    def pols_at(self, height: int, round_: int) -> list[Hash32]:
        """Blocks with a pre-confirm quorum at ``(height, round_)``, in arrival order."""
        return list(self._pol_at.get((height, round_), []))

    def votes(self, height: int, round_: int, phase: int, block_hash: bytes) -> list[SignedMessage]:
        """The recorded votes for one block in one round and phase, sorted by signer."""
        voters = self._votes.get((height, round_, phase), {}).get(Hash32(block_hash), {})
        return [voters[a] for a in sorted(voters)]

    def vote_of(self, height: int, round_: int, phase: int, signer: Address) -> Hash32 | None:
        """The first digest ``signer`` voted for at ``(height, round_, phase)``, if any."""
        return self._first.get((height, round_, phase), {}).get(signer)

    def equivocated(self, height: int, round_: int, phase: int, signer: Address) -> bool:
        """True if ``signer`` voted for two digests at ``(height, round_, phase)``."""
        return ((height, round_, phase), signer) in self._two_faced

    def certificate(self, height: int) -> CommitCertificate | None:
        """A commit certificate for ``height`` if some round reached a confirm quorum.

        The lowest such round is used (ties by lowest hash, which only a broken quorum
        assumption could produce), so the choice never depends on arrival order.
        """
        done = self._certified.get(height)
        if not done:
            return None
        round_, digest = min(done)
        return CommitCertificate.from_votes(self.votes(height, round_, CONFIRM, digest))

    def signers_in(self, height: int, round_: int) -> int:
        """Distinct delegates that sent any vote at ``(height, round_)``."""
        return len(self._signers.get((height, round_), ()))

    def signers_from(self, height: int, round_: int) -> int:
        """Distinct delegates that voted at ``height`` in ``round_`` or a later round."""
        return sum(1 for r in self._latest.get(height, {}).values() if r >= round_)

    def max_round(self, height: int) -> int:
        """Highest round anyone voted in at ``height`` (-1 if nobody did)."""
        return max(self._latest.get(height, {}).values(), default=-1)

    def highest_round_with(self, height: int, above: int, count: int) -> int | None:
        """Highest round > ``above`` at ``height`` in which ``count`` delegates voted."""
        best: int | None = None
        for (h, r), signers in self._signers.items():
            if h == height and r > above and len(signers) >= count and (best is None or r > best):
                best = r
        return best

    def forget_below(self, height: int) -> None:
        """Drop everything about heights below ``height``."""
        for key in [k for k in self._votes if k[0] < height]:
            for digest in self._votes[key]:
                self._pol.pop(digest, None)
            del self._votes[key]
            self._first.pop(key, None)
        self._two_faced = {x for x in self._two_faced if x[0][0] >= height}
        for sk in [k for k in self._signers if k[0] < height]:
            del self._signers[sk]
        for h in [h for h in self._latest if h < height]:
            del self._latest[h]
        for pk in [k for k in self._pol_at if k[0] < height]:
            del self._pol_at[pk]
        for h in [h for h in self._certified if h < height]:
            del self._certified[h]
