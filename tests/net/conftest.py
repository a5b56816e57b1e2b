from __future__ import annotations

from pathlib import Path

import pytest

from tests.net.harness import Authority


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    """A fresh consortium CA (P-256 keys are cheap; no need to share across tests)."""
    return Authority(tmp_path)
