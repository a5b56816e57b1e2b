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

_SUITE = {"fault_ticks": 100, "tail_ticks": 30}

#: Found by the default sweep at 3a0ef85 (first PBFT commit), fixed by 8bd4d02/3b92f13: a
#: replica whose VIEW-CHANGE(v+1) was lost escalated to v+2 on seeing a quorum for v+1,
#: the others (short of that quorum) kept re-sending for v+1 and never joined v+2 (fewer
#: than f+1 asked): honest replicas split over two views for ever.
_SPLIT_VIEWS = [("pbft", 4, seed, {**_SUITE, "byzantine": 1}, None) for seed in (7, 79, 92)]

#: Found at 3a0ef85 (n=4) and still at 509dd4d (n=7), fixed by dfe7017 (VIEW-CHANGE carries
#: the sender's latest commit certificate): an honest replica committed height h with a
#: quorum that included Byzantine votes; the others stayed at h and never learnt it (no
#: catch-up trigger below f+1 replicas ahead), and with f Byzantine replicas no new quorum
#: could form at h.
_COMMITTED_AHEAD = [
    ("pbft", 4, 83, {**_SUITE, "byzantine": 1}, None),
    ("pbft", 4, 138, {**_SUITE, "byzantine": 1}, None),
    ("pbft", 7, 25, {**_SUITE, "byzantine": 2}, None),
    ("pbft", 7, 31, {**_SUITE, "byzantine": 2}, None),
    ("pbft", 7, 39, {**_SUITE, "byzantine": 2}, None),
]

#: Found by the long soak at b8b52a9 (run 4234 of the matrix), fixed by the commit that
#: added this entry: a replica restarted with its hard state lost (tip 6, it had prepared
#: at height 7 in view 3) was re-enabled by a NEW-VIEW for view 3 that carried its amnesiac
#: VIEW-CHANGE — a second NEW-VIEW for that view from a Byzantine primary — and prepared a
#: different block at (7, 3). An amnesiac replica now never votes at or below its stored
#: tip + 1, where every lost vote must lie.
_AMNESIAC_REENABLED = [
    (
        "pbft",
        10,
        4234,
        {
            "byzantine": 2,
            "scenario": "lost-votes",
            "fault_ticks": 120,
            "tail_ticks": 40,
            "partitions": 2,
        },
        None,
    ),
]

#: Entries with a reason (last field) are known, unfixed engine bugs: they run as
#: ``xfail(strict=False)`` and the seed sweeps leave those seeds to this file.
#: Found by the long soak at 0386843 (run 2712), fixed by the commit that added it: a
#: replica that started fresh at genesis, committed height 1 by catch-up without voting,
#: then saw votes at height 2 took "amnesiac" to mean "floor = committed + 1" and closed
#: height 2 to itself as well as the real amnesiac did: two passive replicas of four, no
#: quorum. The floor is now the tip stored at start + 1.
_FRESH_FLOOR = [
    (
        "pbft",
        4,
        2712,
        {"scenario": "lost-votes", "fault_ticks": 120, "tail_ticks": 40, "epoch_length": 4},
        None,
    ),
]

REGRESSIONS: list[Regression] = [
    *_SPLIT_VIEWS,
    *_COMMITTED_AHEAD,
    *_AMNESIAC_REENABLED,
    *_FRESH_FLOOR,
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
