"""A cluster of simulated replicas over the faulty network, and the main loop.

Theory of operation
-------------------
:class:`Simulation` builds ``n`` validators with fixed keys (derived from their index, so
signatures are comparable across runs), picks the Byzantine ones and their behaviours from
the seed, and runs ``fault_ticks + recovery_ticks`` global ticks. One global tick is:

1. the scenario acts (applies scheduled faults, arms traps);
2. every running replica, in a freshly shuffled order, receives its share of engine ticks
   (each replica has its own tick rate: clock skew) and drains its Ready;
3. every envelope due by now is delivered, one at a time, each followed by a drain;
4. liveness deadlines that fall on this tick are checked.

At tick ``fault_ticks`` every fault is healed: partitions and drop rules go, loss stops,
crashed replicas restart from their durable stores, and every honest replica must then
commit a new height before the run ends. Safety invariants are checked as events happen
(:mod:`node.consensus.sim.checker`). Everything random is drawn from one
:class:`SimRng` seeded with the run's seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

from eth_hash.auto import keccak

from node.consensus.messages import SignedMessage, Signer
from node.consensus.sim.byzantine import Behaviour, parse_profile
from node.consensus.sim.checker import SafetyChecker
from node.consensus.sim.engines import ENGINES, SIM_CHAIN_ID, engine_factory
from node.consensus.sim.host import Host, HostContext, committee
from node.consensus.sim.network import Envelope, LinkFaults, Network
from node.consensus.sim.options import SimOptions
from node.consensus.sim.report import SimResult
from node.consensus.sim.rng import SimRng
from node.consensus.sim.scenarios import Scenario, make_scenario
from node.consensus.types import ValidatorSet


@cache
def validator_signer(index: int) -> Signer:
    """The fixed key of simulated validator ``index``."""
    return Signer(keccak(b"twinchain-sim validator %d" % index))


@cache
def outsider_signer(index: int) -> Signer:
    """A key that is not in any simulated validator set (for forgeries)."""
    return Signer(keccak(b"twinchain-sim outsider %d" % index))


@dataclass
class _Expectation:
    """Every replica in ``replicas`` must commit above ``baseline`` by ``deadline``."""

    since: int
    deadline: int
    baseline: int
    replicas: tuple[int, ...]


class Simulation:
    """One seeded run (see the module docstring)."""

    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.rng = SimRng(options.seed)
        n = options.n
        signers = [validator_signer(i) for i in range(n)]
        self.validators = ValidatorSet(0, tuple(s.address for s in signers))
        self.byzantine = frozenset(self.rng.sample(range(n), options.byzantine))
        self.honest = [i for i in range(n) if i not in self.byzantine]
        self.faults = LinkFaults(
            options.loss, options.duplicate, options.delay_min, options.delay_max
        )
        self.network = Network(self.rng.fork(), self.faults)
        spec = ENGINES.get(options.engine)
        if spec is None:
            raise ValueError(f"unknown engine {options.engine!r}; one of {sorted(ENGINES)}")
        self.checker = SafetyChecker(
            SIM_CHAIN_ID,
            spec.commit_kind,
            self.committee_at,
            frozenset(signers[i].address for i in self.honest),
        )
        self.ctx = HostContext(
            chain_id=SIM_CHAIN_ID,
            validators=self.validators,
            network=self.network,
            checker=self.checker,
            factory=engine_factory(
                options.engine, SIM_CHAIN_ID, options.config, options.epoch_length
            ),
            address_index={s.address: i for i, s in enumerate(signers)},
            byzantine=self.byzantine,
            propose_delay=options.propose_delay,
            epoch_length=options.epoch_length,
            unwrap=spec.unwrap(SIM_CHAIN_ID) if spec.unwrap is not None else None,
        )
        self.hosts = [self._make_host(i, signers[i]) for i in range(n)]
        self.expectations: list[_Expectation] = []
        self.now = 0
        self.healed = False
        self.heal_baseline = 0
        self.recovered_after = -1  # ticks from the heal until every honest replica moved on
        self.scenario: Scenario = make_scenario(options.scenario, self)

    def _make_host(self, i: int, signer: Signer) -> Host:
        rng = self.rng.fork()
        rate = 1.0 + self.options.skew * (2.0 * self.rng.random() - 1.0)
        if i not in self.byzantine:
            return Host(i, signer, self.ctx, rng, tick_rate=rate)
        profile = parse_profile(self.options.behaviours, self.rng)
        return Host(i, signer, self.ctx, rng, rate, byzantine=profile, outsider=outsider_signer(i))

    # -- what scenarios use -----------------------------------------------------------

    def committee_at(self, height: int) -> ValidatorSet:
        """The validator set in force at ``height`` (rotating when ``epoch_length`` > 0)."""
        return committee(self.validators, self.options.epoch_length, height)

    def running_honest(self) -> list[int]:
        """Indices of honest replicas that are up."""
        return [i for i in self.honest if self.hosts[i].running]

    def max_honest_tip(self) -> int:
        """Highest height any honest replica committed."""
        return max((self.checker.tip(i) for i in self.honest), default=0)

    def crash(self, i: int) -> None:
        """Crash replica ``i`` (no-op if it is down)."""
        self.hosts[i].crash()

    def restart(self, i: int, lose_hard_state: bool = False) -> None:
        """Restart replica ``i`` from its durable store (no-op if it is up)."""
        if not self.hosts[i].running:
            self.hosts[i].now = self.now
            self.hosts[i].start(lose_hard_state=lose_hard_state)

    def expect_progress(self, deadline: int, replicas: list[int] | None = None) -> None:
        """Each of ``replicas`` (default: running honest) must commit above today's best."""
        chosen = tuple(self.running_honest() if replicas is None else replicas)
        self.expectations.append(_Expectation(self.now, deadline, self.max_honest_tip(), chosen))

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> SimResult:
        """Run the ticks (stopping early once liveness is shown, see ``tail_ticks``)."""
        for host in self.hosts:
            host.start()
        for now in range(self.options.ticks):
            self.step(now)
            if self._done(now):
                break
        self._check_deadlines(final=True)
        self.checker.check_evidence_complete(self.now)
        return self._result()

    def _done(self, now: int) -> bool:
        """True once every honest replica moved on after the heal, plus the tail."""
        tail = self.options.tail_ticks
        if tail < 0 or self.recovered_after < 0 or self.expectations:
            return False
        return now >= self.options.fault_ticks + self.recovered_after + tail

    def step(self, now: int) -> None:
        """One global tick (see the module docstring)."""
        self.now = now
        if now == self.options.fault_ticks:
            self._heal_all()
        self.scenario.on_tick(now)
        order = list(range(len(self.hosts)))
        self.rng.shuffle(order)
        for i in order:
            self.hosts[i].on_tick(now)
        while (env := self.network.pop_due(now)) is not None:
            self._deliver(env)
        self._check_deadlines(final=False)
        if (
            self.healed
            and self.recovered_after < 0
            and all(self.checker.tip(i) > self.heal_baseline for i in self.honest)
        ):
            self.recovered_after = now - self.options.fault_ticks

    def _deliver(self, env: Envelope) -> None:
        if isinstance(env.body, SignedMessage):
            self.scenario.on_deliver(env)
        self.hosts[env.dst].receive(env, self.now)

    def _heal_all(self) -> None:
        self.healed = True
        self.network.heal()
        self.network.drop_rules.clear()
        self.network.faults = replace(self.faults, loss=0.0)
        for i in range(len(self.hosts)):
            self.restart(i)
        self.heal_baseline = self.max_honest_tip()
        self.expect_progress(self.options.ticks - 1, list(self.honest))

    def _check_deadlines(self, final: bool) -> None:
        keep: list[_Expectation] = []
        for e in self.expectations:
            met = all(self.checker.tip(r) > e.baseline for r in e.replicas)
            if not met and (e.deadline <= self.now or final):
                self.checker.check_liveness(list(e.replicas), e.baseline, e.since, self.now)
            elif not met:
                keep.append(e)
        self.expectations = keep

    def _result(self) -> SimResult:
        tips = [self.checker.tip(i) for i in self.honest]
        stats = self.network.stats
        profiles = [
            self.hosts[i].byzantine.label()  # type: ignore[union-attr]
            for i in sorted(self.byzantine)
        ]
        return SimResult(
            options=self.options,
            violations=list(self.checker.violations),
            heights=max(tips, default=0),
            min_heights=min(tips, default=0),
            recovered_after=self.recovered_after,
            view_changes=max((self.hosts[i].round_changes() for i in self.honest), default=0),
            messages=stats.messages,
            bytes=stats.bytes,
            sync_messages=stats.sync_messages,
            sync_bytes=stats.sync_bytes,
            evidence=self.checker.evidence_reports,
            equivocations_reached=len(self.checker.reached),
            equivocations_caught=len(set(self.checker.reached) & self.checker.caught),
            byzantine_profiles=profiles,
            fingerprint=self.network.fingerprint(),
            scenario=self.scenario.report(),
            final_state=self._final_state(),
        )

    def _final_state(self) -> str:
        """``r<i>:<next height>/<round>`` per replica; ``*`` marks Byzantine, ``down`` crashed."""
        parts = []
        for host in self.hosts:
            mark = "*" if not host.honest else ""
            if host.engine is None:
                parts.append(f"r{host.index}{mark}:down")
                continue
            st = host.engine.status()
            parts.append(f"r{host.index}{mark}:{st.height}/{st.round}")
        return " ".join(parts)

    def is_silent(self, i: int) -> bool:
        """True for a Byzantine replica that sends nothing."""
        profile = self.hosts[i].byzantine
        return profile is not None and profile.has(Behaviour.SILENT)


def run_seed(options: SimOptions) -> SimResult:
    """Run one seed."""
    return Simulation(options).run()
