"""``python -m node.consensus.sim``: run seeds, print the summary and replay commands.

Exit status 0 when no seed broke an invariant, 1 otherwise. A failing seed prints the
exact command that replays it.
"""

from __future__ import annotations

import argparse
import sys

from node.consensus.sim.engines import ENGINES
from node.consensus.sim.options import SCENARIOS, SimOptions, parse_config
from node.consensus.sim.report import SimResult, failure_lines
from node.consensus.sim.run import describe, run_seeds

_D = SimOptions()


#: The SimOptions fields the command line sets: (field, type, help). Flags are the field
#: names with dashes, so ``SimOptions.argv()`` and this table always agree.
_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("n", int, "validators"),
    ("seed", int, "first seed"),
    ("byzantine", int, "Byzantine replicas (at most f for the guarantees to apply)"),
    (
        "behaviours",
        str,
        "'mixed' or a comma list of: silent, equivocate, conflict, invalid, replay, forge, badsync",
    ),
    ("fault_ticks", int, "ticks with faults; everything heals at this tick"),
    ("recovery_ticks", int, "ticks after the heal in which every honest replica must commit"),
    ("tail_ticks", int, "stop this many ticks after every honest replica recovered (-1: never)"),
    ("loss", float, "message loss rate until the heal"),
    ("duplicate", float, "message duplication rate"),
    ("delay_min", int, "min delay in ticks"),
    ("delay_max", int, "max delay in ticks"),
    ("skew", float, "tick-rate spread of the replicas' clocks, e.g. 0.1"),
    ("partitions", int, "transient partitions (random scenario)"),
    ("crashes", int, "crash-restarts of honest replicas (random scenario)"),
    ("propose_delay", int, "max ticks a host takes to build a proposed block"),
    ("epoch_length", int, "rotate the committee every this many heights (0: static set)"),
)


def build_parser() -> argparse.ArgumentParser:
    """The simulator's command line."""
    p = argparse.ArgumentParser(
        prog="python -m node.consensus.sim",
        description="Deterministic consensus simulator: n replicas, faults, Byzantine "
        "replicas, invariants checked after every step. A seed replays a run exactly.",
    )
    p.add_argument("--engine", default=_D.engine, choices=sorted(ENGINES), help="engine to run")
    p.add_argument("--scenario", default=_D.scenario, choices=SCENARIOS, help="what goes wrong")
    for name, kind, text in _FLAGS:
        flag = "--" + name.replace("_", "-")
        p.add_argument(flag, type=kind, default=getattr(_D, name), help=text)
    p.add_argument("--seeds", type=int, default=1, help="how many consecutive seeds to run")
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="engine config override (repeatable), e.g. base_timeout=10",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="one report per seed")
    return p


def options_from(args: argparse.Namespace) -> SimOptions:
    """SimOptions from parsed arguments."""
    fields = {name: getattr(args, name) for name, _, _ in _FLAGS}
    return SimOptions(
        engine=args.engine, scenario=args.scenario, config=parse_config(args.config), **fields
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        options = options_from(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def report(result: SimResult) -> None:
        if args.verbose:
            print("\n".join(describe(result)))
        elif not result.ok:
            print("\n".join(failure_lines(result)))

    summary = run_seeds(options, range(args.seed, args.seed + args.seeds), report)
    print("\n".join(summary.lines()))
    return 0 if summary.violations == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
