"""Everything that determines a simulated run, and its one-line replay command.

A run is a pure function of :class:`SimOptions`: the same options replay the same run
byte for byte. :meth:`SimOptions.command` prints the options that differ from the defaults
as a ``python -m node.consensus.sim`` command line, and :func:`parse_config` reads the
``--config key=value`` engine overrides back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

SCENARIOS = ("random", "calm", "storm", "proposer-crash", "lost-votes", "locked")


@dataclass(frozen=True)
class SimOptions:
    """One simulated run (see ``python -m node.consensus.sim --help``)."""

    engine: str = "pbft"
    n: int = 4
    seed: int = 0
    byzantine: int = 0
    behaviours: str = "mixed"
    scenario: str = "random"
    fault_ticks: int = 150
    recovery_ticks: int = 600
    tail_ticks: int = 50
    loss: float = 0.05
    duplicate: float = 0.02
    delay_min: int = 1
    delay_max: int = 4
    skew: float = 0.1
    partitions: int = 1
    crashes: int = 1
    propose_delay: int = 0
    epoch_length: int = 0
    config: tuple[tuple[str, int], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("n >= 1")
        if not 0 <= self.byzantine <= self.n:
            raise ValueError("0 <= byzantine <= n")
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {self.scenario!r}; one of {SCENARIOS}")
        if self.fault_ticks < 0 or self.recovery_ticks < 1:
            raise ValueError("fault_ticks >= 0 and recovery_ticks >= 1")

    @property
    def ticks(self) -> int:
        """Longest run: faults, then the liveness window.

        A run stops ``tail_ticks`` after every honest replica committed past the heal
        (negative: never early), so a generous liveness bound costs nothing when it holds.
        """
        return self.fault_ticks + self.recovery_ticks

    def with_seed(self, seed: int) -> SimOptions:
        """The same run with another seed."""
        return replace(self, seed=seed)

    def argv(self) -> list[str]:
        """Command-line arguments reproducing these options (defaults left out)."""
        default = SimOptions()
        out = ["--engine", self.engine, "--n", str(self.n), "--seed", str(self.seed)]
        for f in fields(self):
            if f.name in ("engine", "n", "seed", "config"):
                continue
            value = getattr(self, f.name)
            if value != getattr(default, f.name):
                out += [f"--{f.name.replace('_', '-')}", _fmt(value)]
        for key, value in self.config:
            out += ["--config", f"{key}={value}"]
        return out

    def command(self) -> str:
        """The one-line command that replays this run exactly."""
        return "python -m node.consensus.sim " + " ".join(self.argv())

    def as_dict(self) -> dict[str, Any]:
        """Non-default fields other than engine/n/seed (the regression-list form)."""
        default = SimOptions()
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in ("engine", "n", "seed")
            and getattr(self, f.name) != getattr(default, f.name)
        }


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_config(items: list[str]) -> tuple[tuple[str, int], ...]:
    """``["base_timeout=10", ...]`` -> ``(("base_timeout", 10), ...)``, sorted by key."""
    out: dict[str, int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--config wants key=value, got {item!r}")
        out[key.strip()] = int(value)
    return tuple(sorted(out.items()))
