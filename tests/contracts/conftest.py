"""Shared fixtures: one predeployed, initialised test chain per session; every test runs
from a snapshot and the chain is rolled back after it, so tests stay independent and fast.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contracts.net import TestNet, build_testnet


@pytest.fixture(scope="session")
def session_net() -> TestNet:
    """The chain as genesis leaves it: contracts predeployed, initialised, roles granted."""
    return build_testnet()


@pytest.fixture
def net(session_net: TestNet) -> Iterator[TestNet]:
    """The session chain, rolled back to where it was when the test started."""
    with session_net.isolated():
        yield session_net
