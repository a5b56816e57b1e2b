"""Results of simulated runs and the summary the simulator prints."""

from __future__ import annotations

from dataclasses import dataclass, field

from node.consensus.sim.checker import Violation
from node.consensus.sim.options import SimOptions
from node.consensus.types import max_faulty


@dataclass
class SimResult:
    """What one seed did."""

    options: SimOptions
    violations: list[Violation]
    heights: int  # highest height committed by an honest replica
    min_heights: int  # lowest honest tip at the end (catch-up worked if close to heights)
    recovered_after: int  # ticks from the heal until every honest replica committed (-1: never)
    view_changes: int  # max over honest replicas of their round changes
    messages: int
    bytes: int
    sync_messages: int
    sync_bytes: int
    evidence: int  # evidence records emitted by honest engines
    equivocations_reached: int  # Byzantine equivocations both halves of which one honest saw
    equivocations_caught: int
    byzantine_profiles: list[str]
    fingerprint: str  # keccak over everything sent, in order: the run's identity
    scenario: dict[str, int | str] = field(default_factory=dict)
    final_state: str = ""  # each replica's next height / round at the end

    @property
    def ok(self) -> bool:
        """True when no invariant broke."""
        return not self.violations


@dataclass
class RunSummary:
    """Aggregate over many seeds of one configuration."""

    engine: str
    n: int
    byzantine: int
    seeds: int = 0
    violations: int = 0
    heights: int = 0
    view_changes: int = 0
    messages: int = 0
    bytes: int = 0
    evidence: int = 0
    reached: int = 0
    failing: list[SimResult] = field(default_factory=list)

    def add(self, result: SimResult) -> None:
        """Fold one seed in."""
        self.seeds += 1
        self.violations += len(result.violations)
        self.heights += result.heights
        self.view_changes += result.view_changes
        self.messages += result.messages
        self.bytes += result.bytes
        self.evidence += result.evidence
        self.reached += result.equivocations_reached
        if not result.ok:
            self.failing.append(result)

    def lines(self) -> list[str]:
        """The printed summary."""
        per = max(1, self.heights)
        return [
            f"engine={self.engine} n={self.n} f={max_faulty(self.n)} "
            f"byzantine={self.byzantine} seeds={self.seeds} violations={self.violations}",
            f"  heights committed={self.heights} "
            f"(mean {self.heights / max(1, self.seeds):.1f}/seed) "
            f"view changes={self.view_changes} evidence={self.evidence} "
            f"(equivocations reaching an honest replica={self.reached})",
            f"  messages/block={self.messages / per:.1f} bytes/block={self.bytes / per:.0f}",
        ]


def failure_lines(result: SimResult, limit: int = 5) -> list[str]:
    """What a failing seed prints: its violations and the command that replays it."""
    out = [f"FAIL seed {result.options.seed}: {len(result.violations)} violation(s)"]
    out += [f"  {v}" for v in result.violations[:limit]]
    if len(result.violations) > limit:
        out.append(f"  ... {len(result.violations) - limit} more")
    out.append(f"  final height/round: {result.final_state}")
    out.append(f"  replay: {result.options.command()}")
    return out
