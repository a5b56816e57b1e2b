"""Shared fixtures of the audit tests.

``audit_history`` (session scope): a running 4-miner PBFT network (real processes, TLS,
SQLite; epoch length 8) driven through the history of :mod:`tests.audit.history`, with
the record of what happened. One network serves every audit query test; it is stopped
at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass

import pytest

from tests.audit.history import EPOCH, Expected, build_history, set_epoch_length
from tests.network.harness import Network


@dataclass(frozen=True)
class AuditHistory:
    """The running network and what was done on it."""

    net: Network
    expected: Expected


@pytest.fixture(scope="session")
def audit_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditHistory]:
    """A running network holding a known history (see :mod:`tests.audit.history`)."""
    root = tmp_path_factory.mktemp("audit-history")
    net = Network.create(root / "net", nodes=4)
    set_epoch_length(net, EPOCH)
    try:
        net.start_all()
        net.wait_height(1, timeout=150)
        yield AuditHistory(net, build_history(net, root / "work"))
    finally:
        for i in list(net.procs):
            with suppress(Exception):
                net.stop(i)
