"""An in-memory network with seeded faults: delay, loss, duplication, reordering, partitions.

Theory of operation
-------------------
Every send becomes an :class:`Envelope` scheduled for delivery at ``now + delay`` with the
delay drawn from the current :class:`LinkFaults`; a heap ordered by ``(deliver_at, seq)``
holds everything in flight, so messages overtake each other whenever their delays differ
(reordering comes for free). A send is dropped at once when its endpoints sit on different
sides of the current partition, when the loss draw says so, or when a scenario's
:data:`DropRule` matches; a duplication draw schedules a second copy with its own delay.
Delays are at least one tick, so whatever a delivery causes is delivered later and a tick
always terminates. The network never looks inside sync traffic or blocks; it counts
consensus messages and bytes separately from catch-up traffic for the summary.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from eth_hash.auto import keccak

from node.consensus.engine import CommittedBlock
from node.consensus.messages import SignedMessage
from node.consensus.sim.rng import SimRng


@dataclass(frozen=True)
class SyncAsk:
    """A catch-up request: send me your committed blocks from ``from_height``."""

    from_height: int


@dataclass(frozen=True)
class SyncAnswer:
    """Committed blocks (with certificates) answering a :class:`SyncAsk`."""

    blocks: tuple[CommittedBlock, ...]


Body = SignedMessage | SyncAsk | SyncAnswer


@dataclass(frozen=True)
class Envelope:
    """One message in flight from replica ``src`` to replica ``dst``."""

    src: int
    dst: int
    body: Body
    size: int
    sent_at: int


@dataclass(frozen=True)
class LinkFaults:
    """Per-send fault probabilities and the delay range in ticks (inclusive)."""

    loss: float = 0.0
    duplicate: float = 0.0
    delay_min: int = 1
    delay_max: int = 3

    def __post_init__(self) -> None:
        if self.delay_min < 1 or self.delay_max < self.delay_min:
            raise ValueError("delays are at least one tick and min <= max")
        if not (0.0 <= self.loss <= 1.0 and 0.0 <= self.duplicate <= 1.0):
            raise ValueError("probabilities are in [0, 1]")


DropRule = Callable[[int, int, SignedMessage, int], bool]
"""``(src, dst, message, now) -> True`` to drop: a scenario's targeted message filter."""


@dataclass
class TrafficStats:
    """What went over the wire (counted at send, before faults)."""

    messages: int = 0
    bytes: int = 0
    by_kind: Counter[int] = field(default_factory=Counter)
    sync_messages: int = 0
    sync_bytes: int = 0
    dropped: int = 0
    duplicated: int = 0


class Network:
    """The in-flight message heap plus the fault model."""

    def __init__(self, rng: SimRng, faults: LinkFaults) -> None:
        self._rng = rng
        self.faults = faults
        self._heap: list[tuple[int, int, Envelope]] = []
        self._seq = 0
        self._side: dict[int, int] | None = None  # replica -> partition group
        self.drop_rules: list[DropRule] = []
        self.stats = TrafficStats()
        self._trace = b""

    # -- topology -------------------------------------------------------------------

    def partition(self, groups: list[list[int]]) -> None:
        """Cut the network into ``groups``; only replicas in one group can talk."""
        self._side = {r: g for g, members in enumerate(groups) for r in members}

    def heal(self) -> None:
        """Remove any partition."""
        self._side = None

    def connected(self, a: int, b: int) -> bool:
        """True when ``a`` and ``b`` are on the same side of the partition."""
        return self._side is None or self._side.get(a, -1) == self._side.get(b, -2)

    @property
    def partitioned(self) -> bool:
        """True while a partition is in force."""
        return self._side is not None

    # -- traffic --------------------------------------------------------------------

    def send(self, src: int, dst: int, body: Body, size: int, now: int) -> None:
        """Put ``body`` in flight (or drop it, as the faults decide)."""
        if isinstance(body, SignedMessage):
            self._trace = keccak(self._trace + bytes([src, dst]) + body.signature)
            self.stats.messages += 1
            self.stats.bytes += size
            self.stats.by_kind[body.kind] += 1
            if any(rule(src, dst, body, now) for rule in self.drop_rules):
                self.stats.dropped += 1
                return
        else:
            self.stats.sync_messages += 1
            self.stats.sync_bytes += size
        if not self.connected(src, dst) or self._rng.chance(self.faults.loss):
            self.stats.dropped += 1
            return
        self._schedule(Envelope(src, dst, body, size, now), now)
        if self._rng.chance(self.faults.duplicate):
            self.stats.duplicated += 1
            self._schedule(Envelope(src, dst, body, size, now), now)

    def _schedule(self, env: Envelope, now: int) -> None:
        delay = self._rng.between(self.faults.delay_min, self.faults.delay_max)
        self._seq += 1
        heapq.heappush(self._heap, (now + delay, self._seq, env))

    def pop_due(self, now: int) -> Envelope | None:
        """The next envelope due at or before ``now``, or None."""
        if self._heap and self._heap[0][0] <= now:
            return heapq.heappop(self._heap)[2]
        return None

    def fingerprint(self) -> str:
        """Hex digest over every consensus message sent so far, in order."""
        return self._trace.hex()

    def in_flight(self) -> int:
        """Number of envelopes not yet delivered."""
        return len(self._heap)
