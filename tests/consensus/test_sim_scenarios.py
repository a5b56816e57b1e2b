"""Named PBFT/IBFT pitfalls and crash scenarios, run in the simulator.

- a view-change storm after a transient partition: views converge, commits resume;
- a proposer crash: the others commit without it, and it catches up after restarting;
- a replica restarted with its votes lost must never sign a second digest for a slot;
- IBFT 1.0's locked-on-different-blocks case: PBFT still commits;
- a committee that changes every epoch (validator-set changes) keeps every invariant.
"""

from __future__ import annotations

import pytest

from node.consensus.sim import SimOptions
from tests.consensus.sim_sweep import require_engine, run_block

SEEDS = range(6)


@pytest.mark.parametrize("engine", ["pbft", "dpos"])
@pytest.mark.parametrize("n", [4, 7])
def test_view_change_storm_after_transient_partition_converges(engine: str, n: int) -> None:
    require_engine(engine)
    options = [
        SimOptions(
            engine=engine, n=n, seed=s, scenario="storm", fault_ticks=160, recovery_ticks=240
        )
        for s in SEEDS
    ]
    for r in run_block(options):
        assert int(r.scenario["converged_at"]) >= 0, r.scenario
        assert int(r.scenario["spread_at_end"]) <= int(r.scenario["tolerance"]), r.scenario
        assert r.min_heights > 0


@pytest.mark.parametrize("engine", ["pbft", "dpos"])
@pytest.mark.parametrize("n", [4, 7])
def test_proposer_crash_is_survived_and_the_proposer_catches_up(engine: str, n: int) -> None:
    require_engine(engine)
    options = [
        SimOptions(
            engine=engine,
            n=n,
            seed=s,
            scenario="proposer-crash",
            fault_ticks=200,
            recovery_ticks=200,
            byzantine=(n - 1) // 3 - 1,
        )
        for s in SEEDS
    ]
    for r in run_block(options):
        assert int(r.scenario["recovery_ticks"]) >= 0, r.scenario
        assert r.min_heights >= r.heights - 2  # the restarted proposer caught up


@pytest.mark.parametrize("engine", ["pbft", "dpos"])
@pytest.mark.parametrize(("n", "byzantine", "behaviours"), [(4, 0, "mixed"), (7, 1, "equivocate")])
def test_restarted_replica_with_votes_lost_never_double_signs(
    engine: str, n: int, byzantine: int, behaviours: str
) -> None:
    require_engine(engine)
    options = [
        SimOptions(
            engine=engine,
            n=n,
            seed=s,
            scenario="lost-votes",
            byzantine=byzantine,
            behaviours=behaviours,
            fault_ticks=150,
            recovery_ticks=200,
        )
        for s in range(10)
    ]
    results = run_block(options)  # honest-equivocation would be a violation
    assert sum(int(r.scenario["lost_state_restarts"]) for r in results) >= 10


def test_ibft_locked_on_different_blocks_still_commits() -> None:
    require_engine("pbft")
    options = [
        SimOptions(
            engine="pbft",
            n=4,
            seed=s,
            scenario="locked",
            loss=0.0,
            duplicate=0.0,
            fault_ticks=400,
            recovery_ticks=200,
        )
        for s in range(8)
    ]
    results = run_block(options)
    for r in results:
        assert 0 <= int(r.scenario["committed_at"]) < 400, r.scenario  # with f crashed
    differ = [r for r in results if r.scenario["locks_differ"] == 1]
    assert len(differ) >= len(results) // 2, [r.scenario for r in results]


@pytest.mark.parametrize("engine", ["pbft", "dpos"])
@pytest.mark.parametrize("n", [4, 7])
def test_committee_rotation_every_epoch_keeps_safety_and_liveness(engine: str, n: int) -> None:
    require_engine(engine)
    options = [
        SimOptions(
            engine=engine,
            n=n,
            seed=s,
            byzantine=(n - 1) // 3,
            epoch_length=4,
            fault_ticks=100,
            tail_ticks=30,
        )
        for s in SEEDS
    ]
    results = run_block(options)
    assert max(r.heights for r in results) > 8  # at least two committee switches
