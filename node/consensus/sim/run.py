"""Running many seeds and printing what they found."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from node.consensus.sim.cluster import run_seed
from node.consensus.sim.options import SimOptions
from node.consensus.sim.report import RunSummary, SimResult, failure_lines


def run_seeds(
    options: SimOptions,
    seeds: Iterable[int],
    on_result: Callable[[SimResult], None] | None = None,
) -> RunSummary:
    """Run ``options`` once per seed; fold the results into a summary."""
    summary = RunSummary(options.engine, options.n, options.byzantine)
    for seed in seeds:
        result = run_seed(options.with_seed(seed))
        summary.add(result)
        if on_result is not None:
            on_result(result)
    return summary


def describe(result: SimResult) -> list[str]:
    """A verbose one-seed report."""
    o = result.options
    lines = [
        f"seed {o.seed}: heights {result.min_heights}..{result.heights} "
        f"view changes {result.view_changes} messages {result.messages} "
        f"bytes {result.bytes} sync {result.sync_messages} evidence {result.evidence} "
        f"equivocations reached/caught {result.equivocations_reached}/"
        f"{result.equivocations_caught}",
    ]
    if result.byzantine_profiles:
        lines.append(f"  byzantine: {', '.join(result.byzantine_profiles)}")
    if result.scenario:
        lines.append("  scenario: " + " ".join(f"{k}={v}" for k, v in result.scenario.items()))
    lines.append(f"  fingerprint {result.fingerprint[:16]}")
    if not result.ok:
        lines += failure_lines(result)
    return lines
