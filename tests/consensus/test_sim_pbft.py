"""PBFT under the simulator: 300 seeds over n in {4, 7} with faults and f Byzantine replicas.

Each case runs a block of seeds; a failure lists every failing seed with its violations and
the one-line command that replays it (``python -m node.consensus.sim ...``). Seeds that are
known engine bugs live in ``test_sim_regressions.py`` as xfail cases and are left out here.
"""

from __future__ import annotations

import pytest

from node.consensus.sim.soak import suite_options
from tests.consensus.sim_sweep import block_id, require_engine, run_block, seed_blocks
from tests.consensus.test_sim_regressions import known_bug_seeds

ENGINE = "pbft"
SEEDS_PER_N = 150
BLOCK = 25


@pytest.mark.parametrize("n", [4, 7])
@pytest.mark.parametrize("seeds", seed_blocks(0, SEEDS_PER_N, BLOCK), ids=block_id)
def test_pbft_keeps_safety_and_liveness_under_faults_and_f_byzantine(n: int, seeds: range) -> None:
    require_engine(ENGINE)
    known = known_bug_seeds(ENGINE, n, suite_options(ENGINE, n, 0).as_dict())
    results = run_block([suite_options(ENGINE, n, s) for s in seeds if s not in known])
    assert sum(r.heights for r in results) > 0
