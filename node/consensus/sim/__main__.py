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


def build_parser() -> argparse.ArgumentParser:
    """The simulator's command line."""
    p = argparse.ArgumentParser(
        prog="python -m node.consensus.sim",
        description="Deterministic consensus simulator: n replicas, faults, Byzantine "
        "replicas, invariants checked after every step. A seed replays a run exactly.",
    )
    p.add_argument("--engine", default=_D.engine, choices=sorted(ENGINES), help="engine to run")
    p.add_argument("--n", type=int, default=_D.n, help="validators")
    p.add_argument("--seed", type=int, default=_D.seed, help="first seed")
    p.add_argument("--seeds", type=int, default=1, help="how many consecutive seeds to run")
    p.add_argument(
        "--byzantine",
        type=int,
        default=_D.byzantine,
        help="Byzantine replicas (at most f for the guarantees to apply)",
    )
    p.add_argument(
        "--behaviours",
        default=_D.behaviours,
        help="'mixed' or a comma list of: silent, equivocate, conflict, invalid, "
        "replay, forge, badsync",
    )
    p.add_argument(
        "--scenario",
        default=_D.scenario,
        choices=SCENARIOS,
        help="what goes wrong (see scenarios.py)",
    )
    p.add_argument(
        "--fault-ticks",
        type=int,
        default=_D.fault_ticks,
        help="ticks with faults; everything heals at this tick",
    )
    p.add_argument(
        "--recovery-ticks",
        type=int,
        default=_D.recovery_ticks,
        help="ticks after the heal in which every honest replica must commit",
    )
    p.add_argument(
        "--tail-ticks",
        type=int,
        default=_D.tail_ticks,
        help="stop this many ticks after every honest replica recovered (-1: run all ticks)",
    )
    p.add_argument("--loss", type=float, default=_D.loss, help="message loss rate until the heal")
    p.add_argument("--duplicate", type=float, default=_D.duplicate, help="duplication rate")
    p.add_argument("--delay-min", type=int, default=_D.delay_min, help="min delay in ticks")
    p.add_argument("--delay-max", type=int, default=_D.delay_max, help="max delay in ticks")
    p.add_argument("--skew", type=float, default=_D.skew, help="tick-rate spread, e.g. 0.1")
    p.add_argument(
        "--partitions", type=int, default=_D.partitions, help="transient partitions (random)"
    )
    p.add_argument(
        "--crashes", type=int, default=_D.crashes, help="crash-restarts of honest replicas (random)"
    )
    p.add_argument(
        "--propose-delay",
        type=int,
        default=_D.propose_delay,
        help="max ticks a host takes to build a proposed block",
    )
    p.add_argument(
        "--epoch-length",
        type=int,
        default=_D.epoch_length,
        help="rotate the committee every this many heights (0: one static validator set)",
    )
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
    return SimOptions(
        engine=args.engine,
        n=args.n,
        seed=args.seed,
        byzantine=args.byzantine,
        behaviours=args.behaviours,
        scenario=args.scenario,
        fault_ticks=args.fault_ticks,
        recovery_ticks=args.recovery_ticks,
        tail_ticks=args.tail_ticks,
        loss=args.loss,
        duplicate=args.duplicate,
        delay_min=args.delay_min,
        delay_max=args.delay_max,
        skew=args.skew,
        partitions=args.partitions,
        crashes=args.crashes,
        propose_delay=args.propose_delay,
        epoch_length=args.epoch_length,
        config=parse_config(args.config),
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
