"""The whole demo flow on real miner processes (smaller numbers than `twinchain demo`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.demo import run_demo

pytestmark = pytest.mark.timeout(900)


def test_demo_federates_on_chain_and_the_audit_traces_every_twin(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_demo(tmp_path, twins=3, rounds=2, samples=300, say=lines.append)
    assert [v for v, _ in result.accuracies] == ["v1", "v2", "v3"]
    assert all(0.5 < acc <= 1.0 for _, acc in result.accuracies)
    assert result.lineage_twins >= {"twin-0", "twin-1", "twin-2"} or result.production == 1
    assert result.lineage_datasets == ["channel-measurements@1"]
    assert result.certificate_ok and result.heads_agree
    assert any("sparse top-8" in line for line in lines)
