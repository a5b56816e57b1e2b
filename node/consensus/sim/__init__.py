"""Deterministic consensus simulator (TigerBeetle VOPR / FoundationDB style).

``python -m node.consensus.sim --engine pbft --n 4 --seed 1 --seeds 100 --byzantine 1``
runs ``n`` replicas of an engine over an in-memory network with seeded faults and
Byzantine replicas, checks the safety invariants after every step and liveness after the
faults heal, and prints a summary; a failing seed prints the one-line command that replays
it. Like the engines it drives, the simulator is sans-IO and deterministic: all randomness
comes from one :class:`~node.consensus.sim.rng.SimRng` seeded by the run's seed, and time
is ticks.

Modules: ``rng`` (the PRNG), ``blocks`` (block format and injected validator), ``network``
(in-memory links with faults), ``byzantine`` (misbehaving replicas), ``host`` (a replica
and the host honouring its Ready contract), ``checker`` (invariants), ``faults`` and
``scenarios``/``locked`` (what goes wrong), ``cluster`` (the main loop), ``options``,
``report`` and ``run`` (configuration, results, many seeds), ``__main__`` (the CLI).
"""

from node.consensus.sim.cluster import Simulation, run_seed
from node.consensus.sim.options import SimOptions
from node.consensus.sim.report import RunSummary, SimResult

__all__ = ["RunSummary", "SimOptions", "SimResult", "Simulation", "run_seed"]
