"""Shared helpers for the simulator's seed sweeps (one pytest case per block of seeds)."""

from __future__ import annotations

import pytest

from node.consensus.sim import SimOptions, SimResult, run_seed
from node.consensus.sim.report import failure_lines


def require_engine(engine: str) -> None:
    """Skip when an engine module is not in the tree yet."""
    pytest.importorskip(f"node.consensus.{engine}")


def seed_blocks(first: int, count: int, block: int) -> list[range]:
    """``count`` seeds from ``first``, cut into blocks (their ids name the seeds)."""
    return [range(s, min(s + block, first + count)) for s in range(first, first + count, block)]


def block_id(seeds: range) -> str:
    """Test id of a seed block, e.g. ``seeds-0-24``."""
    return f"seeds-{seeds.start}-{seeds.stop - 1}"


def run_block(options: list[SimOptions]) -> list[SimResult]:
    """Run every option set; fail with each failing seed's violations and replay command."""
    results = [run_seed(o) for o in options]
    failing = [r for r in results if not r.ok]
    if failing:
        report = "\n".join(line for r in failing for line in failure_lines(r, limit=3))
        pytest.fail(f"{len(failing)} failing seed(s):\n{report}", pytrace=False)
    return results
