"""Fixtures for the chain tests: a fresh store + executor on the test genesis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.chain.executor import Executor
from node.chain.store import ChainStore
from tests.chain.helpers import genesis_state


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ChainStore]:
    """A new chain store on the test genesis (registry contracts predeployed)."""
    with ChainStore.open(tmp_path / "chain.db", genesis_state()) as opened:
        yield opened


@pytest.fixture
def executor(store: ChainStore) -> Executor:
    """An executor over :func:`store`."""
    return Executor(store)


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Executor]:
    """A second, independent node (own store) on the same genesis."""
    with ChainStore.open(tmp_path / "replica.db", genesis_state()) as opened:
        yield Executor(opened)
