"""The long soak: >= 10,000 seeds per engine, n up to 13 (only with TWINCHAIN_LONG=1).

Same matrix as ``python bench/consensus.py --long 10000``; see bench/README.md for the
recorded result.
"""

from __future__ import annotations

import multiprocessing
import os

import pytest

from node.consensus.sim import SimResult, run_seed
from node.consensus.sim.report import failure_lines
from node.consensus.sim.soak import soak_options
from tests.consensus.sim_sweep import require_engine

SEEDS = int(os.environ.get("TWINCHAIN_LONG_SEEDS", "10000"))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("TWINCHAIN_LONG") != "1", reason="TWINCHAIN_LONG=1"),
    pytest.mark.timeout(0),
]


def _one(args: tuple[str, int]) -> SimResult:
    engine, index = args
    return run_seed(soak_options(engine, index))


@pytest.mark.parametrize("engine", ["pbft", "dpos"])
def test_long_soak_finds_no_violation(engine: str) -> None:
    require_engine(engine)
    with multiprocessing.Pool(os.cpu_count() or 1) as pool:
        results = pool.map(_one, [(engine, i) for i in range(SEEDS)], chunksize=16)
    failing = [r for r in results if not r.ok]
    assert not failing, "\n".join(line for r in failing[:20] for line in failure_lines(r, 3))
    assert max(r.options.n for r in results) == 13
