"""The miner's :class:`~node.rpc.backend.NodeView`: its replica seen from RPC threads.

The JSON-RPC server calls the view from worker threads while the daemon's event-loop
thread drives the replica. Reads go to the store and executor (both safe for concurrent
readers); the mempool is thread-safe; everything that touches the consensus engine is
either a snapshot the loop publishes (:attr:`MinerView.status`) or handed to the loop
(``on_submit``), never called from here.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from node.chain.types import Hash32
from node.consensus.engine import EngineStatus
from node.consensus.evidence import EquivocationEvidence
from node.consensus.types import ValidatorSet
from node.replica import Replica
from node.rpc.backend import SyncProgress
from node.rpc.local import ChainView, client_version_string


class MinerView(ChainView):
    """NodeView over a running :class:`Replica`."""

    def __init__(
        self,
        replica: Replica,
        name: str,
        *,
        on_submit: Callable[[bytes], None],
        peer_count: Callable[[], int],
    ) -> None:
        self.replica = replica
        self.store = replica.store
        self.executor = replica.executor
        self.mempool = replica.mempool
        #: The miner's artifact store (the registry API streams through it).
        self.blobs = replica.blobs
        self._client_version = client_version_string(name)
        self._on_submit = on_submit
        self._peer_count = peer_count
        self._lock = threading.Lock()
        self._status = replica.engine.status()
        self._highest_seen = 0
        #: admission time of transactions not yet committed (commit-latency metric)
        self.admitted_at: dict[bytes, float] = {}

    @property
    def chain_id(self) -> int:
        """EIP-155 chain id."""
        return self.replica.chain_id

    @property
    def client_version(self) -> str:
        """``TwinChain/v<version>/<name>/python<x.y>``."""
        return self._client_version

    def publish_status(self, status: EngineStatus, highest_seen: int) -> None:
        """Called by the loop thread after it drained the replica."""
        with self._lock:
            self._status = status
            self._highest_seen = max(self._highest_seen, highest_seen)

    def submit_transaction(self, raw: bytes) -> Hash32:
        """Admit to the mempool (raises InvalidTransaction), then let the loop gossip it
        to the other miners and wake a waiting proposer."""
        tx_hash = self.mempool.add(raw)
        with self._lock:
            self.admitted_at.setdefault(bytes(tx_hash), time.monotonic())
        self._on_submit(raw)
        return tx_hash

    def consensus_status(self) -> EngineStatus:
        """The status snapshot the loop published last."""
        with self._lock:
            return self._status

    def validator_set(self, epoch: int) -> ValidatorSet | None:
        """The validator set of ``epoch`` (None until its boundary block is final)."""
        return self.replica.validator_set(epoch)

    def evidence(self) -> Sequence[EquivocationEvidence]:
        """Equivocation evidence this miner recorded."""
        return self.replica.evidence()

    def sync_progress(self) -> SyncProgress | None:
        """Catch-up progress while a peer is known to be ahead."""
        head = self.store.head().height
        with self._lock:
            highest = self._highest_seen
        if highest <= head + 1:
            return None
        return SyncProgress(starting_block=head, current_block=head, highest_block=highest)

    def peer_count(self) -> int:
        """Connected miners."""
        return self._peer_count()
