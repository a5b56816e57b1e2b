"""The seed matrices the test suite and the long soak run.

A matrix maps a flat run index to :class:`SimOptions`, deterministically, so any number of
workers can split it and a failure is replayed from its options alone. The mix covers every
validator-set size asked for, ``f`` Byzantine replicas with random behaviours, link faults,
partitions and crashes in most runs, the named scenarios in the rest, and a committee that
changes every four heights in a fifth of all runs.
"""

from __future__ import annotations

from dataclasses import replace

from node.consensus.sim.options import SimOptions
from node.consensus.types import max_faulty

#: Scenario mix of the soak: (scenario, weight out of 20).
SOAK_SCENARIOS = (
    ("random", 14),
    ("storm", 2),
    ("proposer-crash", 2),
    ("lost-votes", 1),
    ("locked", 1),
)


def scenario_byzantine(scenario: str, n: int) -> int:
    """Byzantine replicas a scenario can add while liveness is still owed during it.

    A crashed proposer, or a replica restarted without its votes (which may sit out the
    slot it lost), spends one fault of the budget ``f``; the locked staging crashes ``f``.
    """
    f = max_faulty(n)
    if scenario == "locked":
        return 0
    if scenario in ("lost-votes", "proposer-crash"):
        return max(0, f - 1)
    return f


def suite_options(engine: str, n: int, seed: int, **overrides: object) -> SimOptions:
    """The default-suite run: ``f`` Byzantine replicas, faults, short enough for CI."""
    base = SimOptions(
        engine=engine,
        n=n,
        seed=seed,
        byzantine=max_faulty(n),
        fault_ticks=100,
        recovery_ticks=600,
        tail_ticks=30,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def soak_options(engine: str, index: int, sizes: tuple[int, ...] = (4, 7, 10, 13)) -> SimOptions:
    """Run number ``index`` of the long soak for ``engine`` (its seed is ``index``)."""
    n = sizes[index % len(sizes)]
    slot = (index // len(sizes)) % 20
    scenario = "random"
    for name, weight in SOAK_SCENARIOS:
        if slot < weight:
            scenario = name
            break
        slot -= weight
    byzantine = scenario_byzantine(scenario, n)
    if engine == "dpos" and scenario == "locked":
        scenario = "random"  # a PBFT-specific staging
    return SimOptions(
        engine=engine,
        n=n,
        seed=index,
        byzantine=byzantine,
        scenario=scenario,
        fault_ticks=120,
        recovery_ticks=600,
        tail_ticks=40,
        crashes=1 + index % 2,
        partitions=1 + (index // 2) % 2,
        epoch_length=4 if index % 5 == 2 else 0,  # a fifth of the runs rotate committees
    )
