"""Scenarios: what goes wrong during the fault phase of a run.

Each scenario acts at the start of every global tick (``on_tick``) and may watch
deliveries (``on_deliver``) or sends (through the host context's ``on_sent`` hook) and
install targeted drop rules on the network. Whatever it breaks, the simulation heals at
``fault_ticks``. ``report()`` returns the scenario's own observations for tests.

==================  ==========================================================================
random              link faults from the options plus random partitions and crash-restarts
calm                no faults at all (benchmarks, sanity)
storm               every replica isolated long enough for timeouts to double several times;
                    after the heal, views must converge and commits resume
proposer-crash      the current proposer crashes; the others must commit without it
lost-votes          a replica crashes right after signing and restarts with its hard state
                    lost (the same replica each time); it must never sign a second digest
                    for a slot
locked              IBFT-1.0's liveness bug: one replica prepared on block A in one view, another
                    on block B in a later view, then f replicas crash; commits must resume
==================  ==========================================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.consensus.messages import Kind, SignedMessage
from node.consensus.sim.faults import Action, FaultEvent, FaultPlan, random_plan
from node.consensus.sim.network import Envelope

if TYPE_CHECKING:
    from node.consensus.sim.cluster import Simulation

VOTE_OR_PROPOSAL = frozenset(
    {Kind.PRE_PREPARE, Kind.PREPARE, Kind.COMMIT, Kind.BLOCK, Kind.CONFIRM}
)


class Scenario:
    """The do-nothing scenario; subclasses override the hooks they need."""

    name = "calm"

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    def on_tick(self, now: int) -> None:
        """Called at the start of every global tick."""

    def on_deliver(self, env: Envelope) -> None:
        """Called before a consensus message is handed to its destination."""

    def report(self) -> dict[str, int | str]:
        """What the scenario observed."""
        return {}


class CalmScenario(Scenario):
    """No faults: the link delivers everything, once."""

    def __init__(self, sim: Simulation) -> None:
        super().__init__(sim)
        sim.network.faults = sim.faults = type(sim.faults)(
            0.0, 0.0, sim.faults.delay_min, sim.faults.delay_max
        )


class RandomScenario(Scenario):
    """Random transient partitions and crash-restarts (see :func:`random_plan`)."""

    name = "random"

    def __init__(self, sim: Simulation) -> None:
        super().__init__(sim)
        o = sim.options
        self.plan = random_plan(
            sim.rng.fork(), o.n, sim.honest, o.fault_ticks, o.partitions, o.crashes
        )
        self._next = 0

    def on_tick(self, now: int) -> None:
        """Apply this tick's events."""
        events = self.plan.events
        while self._next < len(events) and events[self._next].at <= now:
            if not self.sim.healed:
                apply_event(self.sim, events[self._next])
            self._next += 1


def apply_event(sim: Simulation, event: FaultEvent) -> None:
    """Carry out one fault event."""
    if event.action is Action.PARTITION:
        sim.network.partition([list(g) for g in event.groups])
    elif event.action is Action.HEAL:
        sim.network.heal()
    elif event.action is Action.CRASH:
        sim.crash(event.replica)
    elif event.action is Action.RESTART:
        sim.restart(event.replica)
    elif event.action is Action.RESTART_LOST:
        sim.restart(event.replica, lose_hard_state=True)


class StormScenario(Scenario):
    """Isolate every replica, then heal: a view-change storm must settle."""

    name = "storm"

    def __init__(self, sim: Simulation) -> None:
        super().__init__(sim)
        self.start = sim.rng.between(5, 25)
        self.rounds_at_heal = ""
        self.baseline = 0
        self.converged_at = -1

    def on_tick(self, now: int) -> None:
        """Partition at ``start``; after the heal, watch for views to converge."""
        sim = self.sim
        if now == self.start and not sim.healed:
            sim.network.partition([[i] for i in range(sim.options.n)])
        if sim.healed and not self.rounds_at_heal:
            self.rounds_at_heal = ",".join(str(r) for r in self._rounds())
            self.baseline = sim.max_honest_tip()
        if sim.healed and self.converged_at < 0:
            tips = [sim.checker.tip(i) for i in sim.honest]
            if self._spread() <= self.tolerance and min(tips) > self.baseline:
                self.converged_at = now

    @property
    def tolerance(self) -> int:
        """Round spread that counts as converged: DPoS rounds are slots of skewed clocks."""
        return 1 if self.sim.options.engine == "dpos" else 0

    def _spread(self) -> int:
        rounds = self._rounds()
        return max(rounds) - min(rounds) if rounds else 0

    def _rounds(self) -> list[int]:
        return [
            h.engine.status().round
            for h in (self.sim.hosts[i] for i in self.sim.honest)
            if h.engine is not None
        ]

    def report(self) -> dict[str, int | str]:
        """Views at heal time, and when they converged with commits resumed."""
        return {
            "rounds_at_heal": self.rounds_at_heal,
            "rounds_at_end": ",".join(str(r) for r in self._rounds()),
            "spread_at_end": self._spread(),
            "tolerance": self.tolerance,
            "converged_at": self.converged_at,
            "healed_at": self.sim.options.fault_ticks,
        }


class ProposerCrashScenario(Scenario):
    """Crash whoever the honest replicas consider the proposer; measure the recovery."""

    name = "proposer-crash"

    def __init__(self, sim: Simulation) -> None:
        super().__init__(sim)
        self.earliest = sim.rng.between(20, 40)
        self.crashed = -1
        self.crashed_at = -1
        self.tip_at_crash = 0
        self.recovered_at = -1

    def on_tick(self, now: int) -> None:
        """Crash the proposer once; then wait for two new heights."""
        sim = self.sim
        if self.crashed < 0 and now >= self.earliest and not sim.healed:
            victim = self._proposer()
            if victim is not None:
                self.crashed, self.crashed_at = victim, now
                self.tip_at_crash = sim.max_honest_tip()
                sim.crash(victim)
                sim.expect_progress(now + sim.options.recovery_ticks)
        if (
            self.crashed >= 0
            and self.recovered_at < 0
            and sim.max_honest_tip() >= self.tip_at_crash + 2
        ):
            self.recovered_at = now

    def _proposer(self) -> int | None:
        sim = self.sim
        for i in sim.running_honest():
            engine = sim.hosts[i].engine
            proposer = engine.status().proposer if engine is not None else None
            victim = sim.ctx.address_index.get(proposer) if proposer is not None else None
            if victim is not None and victim in sim.honest and sim.hosts[victim].running:
                return victim
        return None

    def report(self) -> dict[str, int | str]:
        """Who crashed when, and how many ticks two new heights took."""
        recovery = self.recovered_at - self.crashed_at if self.recovered_at >= 0 else -1
        return {
            "crashed": self.crashed,
            "crashed_at": self.crashed_at,
            "recovery_ticks": recovery,
        }


class LostVotesScenario(Scenario):
    """Crash a replica right after it signs, restart it with its hard state lost."""

    name = "lost-votes"

    def __init__(self, sim: Simulation) -> None:
        super().__init__(sim)
        self.rounds = 2
        self.armed_from = sim.rng.between(15, 40)
        self.proposer_victim = sim.rng.chance(0.5)
        self.victim = sim.rng.choice(sim.honest) if sim.honest else -1
        self.pending: list[tuple[int, int]] = []  # (tick, replica) restarts
        self.crash_next: int | None = None
        self.restarts = 0
        self.chosen = False  # once a replica lost its state, only it is crashed again
        sim.ctx.on_sent = self._on_sent

    def _on_sent(self, replica: int, msg: SignedMessage) -> None:
        sim = self.sim
        if self.restarts >= self.rounds or self.crash_next is not None or sim.healed:
            return
        if (
            sim.now < self.armed_from
            or replica in sim.byzantine
            or msg.signer != (sim.hosts[replica].address)
        ):
            return
        if sim.checker.tip(replica) < 1 or msg.kind not in VOTE_OR_PROPOSAL:
            return  # a fresh replica (height 0) cannot tell lost state from a first start
        if self.chosen and replica != self.victim:
            return  # one replica loses its state (repeatedly): it is the one fault it costs
        proposing = msg.kind in (Kind.PRE_PREPARE, Kind.BLOCK)
        if proposing if self.proposer_victim else replica == self.victim:
            self.crash_next, self.victim, self.chosen = replica, replica, True

    def on_tick(self, now: int) -> None:
        """Crash the trapped replica; restart it a few ticks later without hard state."""
        sim = self.sim
        if self.crash_next is not None:
            sim.crash(self.crash_next)
            self.pending.append((now + sim.rng.between(1, 4), self.crash_next))
            self.crash_next = None
        for when, replica in list(self.pending):
            if when <= now:
                self.pending.remove((when, replica))
                sim.restart(replica, lose_hard_state=True)
                self.restarts += 1

    def report(self) -> dict[str, int | str]:
        """How many lost-state restarts happened."""
        return {"lost_state_restarts": self.restarts}


def make_scenario(name: str, sim: Simulation) -> Scenario:
    """The scenario called ``name``."""
    from node.consensus.sim.locked import LockedScenario

    table: dict[str, type[Scenario]] = {
        "random": RandomScenario,
        "calm": CalmScenario,
        "storm": StormScenario,
        "proposer-crash": ProposerCrashScenario,
        "lost-votes": LostVotesScenario,
        "locked": LockedScenario,
    }
    return table[name](sim)


__all__ = ["FaultPlan", "Scenario", "make_scenario"]
