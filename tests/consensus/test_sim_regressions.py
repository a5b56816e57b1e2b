"""Seeds that once broke an invariant, replayed for ever.

Each entry is ``(engine, n, seed, options)`` with ``options`` the non-default
:class:`SimOptions` fields (what ``SimOptions.as_dict()`` prints), plus an optional reason
when the failure is a known engine bug awaiting a fix (run as ``xfail(strict=False)``).
Replay any of them with the command in the test's failure message.
"""

from __future__ import annotations

from typing import Any

import pytest

from node.consensus.sim import SimOptions
from tests.consensus.sim_sweep import require_engine, run_block

Regression = tuple[str, int, int, dict[str, Any], str | None]

#: PBFT at 509dd4d: an honest replica commits height h with a quorum that includes
#: Byzantine votes, the other honest replicas stay prepared at h; nobody ships them the
#: certificate (catch-up needs f+1 validators ahead, only one honest one is), so with f
#: Byzantine replicas no quorum can form at h again: a permanent stall after the heal.
PBFT_COMMITTED_AHEAD_STALL = (
    "PBFT liveness: one honest replica committed h, the rest never learn it (no catch-up "
    "trigger below f+1 replicas ahead); replay with the command in the failure message"
)
_SUITE = {"fault_ticks": 100, "tail_ticks": 30}

REGRESSIONS: list[Regression] = [
    ("pbft", 7, 25, {**_SUITE, "byzantine": 2}, PBFT_COMMITTED_AHEAD_STALL),
    ("pbft", 7, 31, {**_SUITE, "byzantine": 2}, PBFT_COMMITTED_AHEAD_STALL),
    ("pbft", 7, 39, {**_SUITE, "byzantine": 2}, PBFT_COMMITTED_AHEAD_STALL),
]


def known_bug_seeds(engine: str, n: int, options: dict[str, Any]) -> set[int]:
    """Seeds of a sweep that are xfail regressions here (the sweep leaves them to us)."""
    return {
        seed
        for e, size, seed, opts, bug in REGRESSIONS
        if bug and e == engine and size == n and opts == options
    }


def _case(entry: Regression) -> Any:
    engine, n, seed, _options, known_bug = entry
    marks = [pytest.mark.xfail(reason=known_bug, strict=False)] if known_bug else []
    return pytest.param(entry, id=f"{engine}-n{n}-seed{seed}", marks=marks)


@pytest.mark.parametrize("entry", [_case(e) for e in REGRESSIONS])
def test_regression_seed_stays_fixed(entry: Regression) -> None:
    engine, n, seed, options, _ = entry
    require_engine(engine)
    if "config" in options:
        options = {**options, "config": tuple(tuple(kv) for kv in options["config"])}
    run_block([SimOptions(engine=engine, n=n, seed=seed, **options)])
