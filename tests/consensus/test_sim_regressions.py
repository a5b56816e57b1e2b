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

REGRESSIONS: list[Regression] = []


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
