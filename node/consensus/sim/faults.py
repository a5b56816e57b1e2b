"""Fault schedules: partitions that heal, crashes and restarts, drawn from the seed.

A :class:`FaultPlan` is data: a sorted list of :class:`FaultEvent` that the simulation
applies at their ticks. Every fault is transient and ends no later than the plan's
``heal_at`` tick, after which the simulation heals whatever is left, restarts every crashed
replica and checks liveness. Crashes only hit honest replicas (a crashed Byzantine replica
is just a silent one) and only restart from the durable store here; losing the hard state
is the dedicated ``lost-votes`` scenario's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from node.consensus.sim.rng import SimRng


class Action(Enum):
    """What a fault event does."""

    PARTITION = "partition"
    HEAL = "heal"
    CRASH = "crash"
    RESTART = "restart"
    RESTART_LOST = "restart-lost"


@dataclass(frozen=True)
class FaultEvent:
    """One fault at one tick: ``replica`` for crashes, ``groups`` for partitions."""

    at: int
    action: Action
    replica: int = -1
    groups: tuple[tuple[int, ...], ...] = ()


@dataclass(frozen=True)
class FaultPlan:
    """A schedule of faults, all over by ``heal_at``."""

    events: tuple[FaultEvent, ...]
    heal_at: int

    def at(self, tick: int) -> list[FaultEvent]:
        """Events scheduled for ``tick``, in plan order."""
        return [e for e in self.events if e.at == tick]


def random_split(rng: SimRng, n: int) -> tuple[tuple[int, ...], ...]:
    """Two sides: an isolated minority (half the time one replica), or a random cut."""
    order = list(range(n))
    rng.shuffle(order)
    cut = 1 if rng.chance(0.5) else rng.between(1, max(1, n - 1))
    return (tuple(sorted(order[:cut])), tuple(sorted(order[cut:])))


def random_plan(
    rng: SimRng,
    n: int,
    honest: list[int],
    heal_at: int,
    partitions: int,
    crashes: int,
) -> FaultPlan:
    """Random transient partitions and crash-restarts inside ``[0, heal_at)``."""
    events: list[FaultEvent] = []
    if heal_at < 2:
        return FaultPlan((), heal_at)
    for _ in range(partitions):
        start = rng.between(0, heal_at - 2)
        end = min(heal_at, start + rng.between(5, 60))
        events.append(FaultEvent(start, Action.PARTITION, groups=random_split(rng, n)))
        events.append(FaultEvent(end, Action.HEAL))
    for _ in range(crashes):
        if not honest:
            break
        victim = rng.choice(honest)
        start = rng.between(0, heal_at - 2)
        end = min(heal_at, start + rng.between(2, 60))
        events.append(FaultEvent(start, Action.CRASH, replica=victim))
        events.append(FaultEvent(end, Action.RESTART, replica=victim))
    events.sort(key=lambda e: e.at)  # stable: same-tick events keep their draw order
    return FaultPlan(tuple(events), heal_at)
