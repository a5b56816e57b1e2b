"""The engine interface shared by PBFT and DPoS (sans-IO, in the style of etcd's raft).

Theory of operation
-------------------
An engine is a deterministic state machine. The host (the daemon, or the simulator)
drives it with four inputs and drains one output:

- ``tick()``                — one unit of logical time has passed (timeouts count ticks);
- ``step(message)``         — a signed message arrived from a peer (any peer, any order);
- ``propose(payload)``      — the host's answer to ``Ready.propose``: an encoded block;
- ``deliver(block)``        — a committed block with its certificate fetched by catch-up;
- ``ready()`` -> ``Ready``  — everything the host must now do, in this order:
    1. write ``persist`` durably (own votes, view, locks) — *before* sending anything,
       so a restarted replica never signs two different things for one slot;
    2. send ``messages``;
    3. execute/store ``committed`` blocks in order (each carries its certificate);
    4. record ``evidence``; answer ``propose`` and ``sync`` requests;
- ``advance()``             — the host has done all of the above.

No clocks, sockets, threads or randomness live in an engine: the same inputs in the same
order give the same outputs, byte for byte. Block semantics are injected as a
:data:`BlockValidator`: the engine never decodes a block itself.

Inputs that fail the admission rules (:class:`MessageFilter`) are dropped and counted by
reason; they never change engine state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from node.consensus.certificate import CommitCertificate
from node.consensus.evidence import EquivocationEvidence
from node.consensus.messages import SignedMessage
from node.consensus.types import Address, Hash32, ValidatorSet


@dataclass(frozen=True)
class BlockInfo:
    """What the engine needs to know about a valid block."""

    hash: Hash32
    parent_hash: Hash32
    height: int


BlockValidator = Callable[[bytes], "BlockInfo | None"]
"""Decode and validate an encoded block; ``None`` means invalid (never raises)."""


@dataclass(frozen=True)
class Outbound:
    """A message to send: to one validator, or to every other validator if ``to`` is None."""

    to: Address | None
    message: SignedMessage


@dataclass(frozen=True)
class CommittedBlock:
    """A block that is final, with the certificate proving it."""

    height: int
    block_hash: Hash32
    payload: bytes
    certificate: CommitCertificate


@dataclass(frozen=True)
class ProposalRequest:
    """The host should build a block at ``height`` on ``parent_hash`` and ``propose`` it."""

    height: int
    round: int
    parent_hash: Hash32


@dataclass(frozen=True)
class SyncRequest:
    """The engine is behind: fetch committed blocks from ``from_height`` (from ``peer``,
    or from anyone if None) and hand them back with ``deliver``."""

    from_height: int
    peer: Address | None = None


@dataclass
class Ready:
    """What the host must do now (see the module docstring for the order)."""

    persist: bytes | None = None
    messages: list[Outbound] = field(default_factory=list)
    committed: list[CommittedBlock] = field(default_factory=list)
    evidence: list[EquivocationEvidence] = field(default_factory=list)
    propose: ProposalRequest | None = None
    sync: list[SyncRequest] = field(default_factory=list)

    def is_empty(self) -> bool:
        """True when there is nothing to do."""
        return (
            self.persist is None
            and not self.messages
            and not self.committed
            and not self.evidence
            and self.propose is None
            and not self.sync
        )


@dataclass(frozen=True)
class EngineStatus:
    """A snapshot for `twinchain node status` and metrics."""

    engine: str
    height: int  # next height to decide
    round: int  # PBFT view / DPoS slot
    epoch: int
    proposer: Address | None
    committed_height: int
    finality_lag: int  # heights produced but not yet final (always 0 for PBFT)
    round_changes: int  # view changes (PBFT) / skipped slots (DPoS)
    dropped: dict[str, int]
    evidence: int


class DropReason(Enum):
    """Why an inbound message was dropped without effect."""

    MALFORMED = "malformed"
    WRONG_ENGINE = "wrong_engine"
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad_signature"
    NOT_VALIDATOR = "not_validator"
    REPLAY = "replay"
    OUT_OF_WINDOW = "out_of_window"
    INVALID = "invalid"  # well-signed but violates a protocol rule


class Engine(Protocol):
    """The interface both engines implement."""

    def tick(self) -> None:
        """One unit of logical time passed."""

    def step(self, message: SignedMessage) -> None:
        """Process a message from a peer (dropped and counted if inadmissible)."""

    def propose(self, payload: bytes) -> None:
        """Answer a ``ProposalRequest`` with an encoded block."""

    def deliver(self, block: CommittedBlock) -> None:
        """Hand over a committed block fetched by catch-up (verified before use)."""

    def set_validators(self, validators: ValidatorSet, start_height: int) -> None:
        """Install the validator set that takes effect at ``start_height``."""

    def has_ready(self) -> bool:
        """True when :meth:`ready` would return something."""

    def ready(self) -> Ready:
        """What the host must do now."""

    def advance(self) -> None:
        """The host has processed the last ``Ready``."""

    def status(self) -> EngineStatus:
        """Current status snapshot."""


class MessageFilter:
    """The admission rules every engine applies before looking at a message.

    A message is admitted iff it is for this engine, signed by the claimed signer in
    this chain's domain, the signer is a validator at that height, the height is inside
    ``[low, high]`` and the exact message was not seen before. Drops are counted.
    """

    def __init__(self, chain_id: int, engine: int, replay_window: int = 100_000) -> None:
        self.chain_id = chain_id
        self.engine = engine
        self.dropped: Counter[str] = Counter()
        self._seen: dict[bytes, int] = {}  # signature -> height
        self._replay_window = replay_window

    def admit(
        self,
        msg: SignedMessage,
        validators: ValidatorSet | None,
        low: int,
        high: int,
    ) -> bool:
        """Apply the rules; count and return False on the first that fails."""
        reason = self._check(msg, validators, low, high)
        if reason is not None:
            self.dropped[reason.value] += 1
            return False
        self._seen[msg.signature] = msg.height
        if len(self._seen) > self._replay_window:
            self.forget_below(low)
        return True

    def drop(self, reason: DropReason) -> None:
        """Count a drop decided by the engine itself."""
        self.dropped[reason.value] += 1

    def _check(
        self,
        msg: SignedMessage,
        validators: ValidatorSet | None,
        low: int,
        high: int,
    ) -> DropReason | None:
        if msg.engine != self.engine:
            return DropReason.WRONG_ENGINE
        if not msg.signature or not any(msg.signature):
            return DropReason.UNSIGNED
        if msg.height < low or msg.height > high:
            return DropReason.OUT_OF_WINDOW
        if validators is None or msg.signer not in validators:
            return DropReason.NOT_VALIDATOR
        if msg.signature in self._seen:
            return DropReason.REPLAY
        if not msg.verify(self.chain_id):
            return DropReason.BAD_SIGNATURE
        return None

    def forget_below(self, height: int) -> None:
        """Forget seen signatures for heights below ``height`` (those are out of window)."""
        self._seen = {s: h for s, h in self._seen.items() if h >= height}
