"""Prometheus metrics of one miner (a registry per miner, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from node.consensus.engine import EngineStatus


class MinerMetrics:
    """The gauges, counters and histograms ``/metrics`` exposes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.height = Gauge("twinchain_height", "Committed chain height", registry=r)
        self.round = Gauge("twinchain_round", "PBFT view / DPoS slot", registry=r)
        self.epoch = Gauge("twinchain_epoch", "Current epoch", registry=r)
        self.round_changes = Gauge(
            "twinchain_round_changes", "View changes (PBFT) / skipped slots (DPoS)", registry=r
        )
        self.finality_lag = Gauge("twinchain_finality_lag", "Heights not yet final", registry=r)
        self.mempool = Gauge("twinchain_mempool_transactions", "Mempool size", registry=r)
        self.peers = Gauge("twinchain_peers", "Connected miners", registry=r)
        self.equivocations = Gauge(
            "twinchain_equivocations", "Equivocation evidence records seen", registry=r
        )
        self.dropped = Gauge(
            "twinchain_consensus_dropped", "Dropped consensus messages", ["reason"], registry=r
        )
        self.net = Gauge("twinchain_net", "Transport counters", ["counter"], registry=r)
        self.blocks = Counter("twinchain_blocks_committed", "Blocks committed", registry=r)
        self.transactions = Counter(
            "twinchain_transactions_committed", "Transactions committed", registry=r
        )
        self.commit_latency = Histogram(
            "twinchain_commit_latency_seconds",
            "From mempool admission at this miner to commit",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )

    def update(
        self, status: EngineStatus, height: int, mempool: int, peers: int, net: dict[str, int]
    ) -> None:
        """Refresh the gauges from a status snapshot."""
        self.height.set(height)
        self.round.set(status.round)
        self.epoch.set(status.epoch)
        self.round_changes.set(status.round_changes)
        self.finality_lag.set(status.finality_lag)
        self.mempool.set(mempool)
        self.peers.set(peers)
        self.equivocations.set(status.evidence)
        for reason, count in status.dropped.items():
            self.dropped.labels(reason=reason).set(count)
        for name, value in net.items():
            self.net.labels(counter=name).set(value)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
