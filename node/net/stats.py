"""Transport counters, exported as a flat dict for the Prometheus exporter.

Every field is a monotonically increasing counter except the gauges that
:meth:`PeerTransport.stats` adds at read time (``connected_peers``, ``queued_frames``,
``queued_bytes``, ``pending_requests``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from node.net.tls import RefusalReason


@dataclass(slots=True)
class TransportStats:
    """Counters of one :class:`~node.net.transport.PeerTransport`."""

    bytes_in: int = 0
    bytes_out: int = 0
    frames_in: int = 0
    frames_out: int = 0
    #: frames discarded by the drop-oldest policy of a full per-peer queue
    frames_dropped: int = 0
    #: sends addressed to a peer outside the current miner set
    frames_dropped_not_allowed: int = 0
    #: frames larger than the receiving peer announced it accepts
    frames_dropped_too_large: int = 0
    #: inbound frames over our max frame size (each closed its connection)
    oversized_frames: int = 0
    protocol_errors: int = 0
    connections_accepted: int = 0
    connections_established: int = 0
    connections_closed: int = 0
    #: established connections closed because the peer left the miner set
    connections_evicted: int = 0
    dial_attempts: int = 0
    dial_failures: int = 0
    #: connections we refused, in total and by reason (``refused_<reason>``)
    refused_connections: int = 0
    refused_unknown_ca: int = 0
    refused_bad_certificate: int = 0
    refused_not_a_miner: int = 0
    refused_address_mismatch: int = 0
    refused_handshake_failed: int = 0
    refused_protocol_error: int = 0
    refused_overload: int = 0
    #: times a peer refused us (GOODBYE or close during the HELLO exchange)
    refused_by_peer: int = 0
    requests_sent: int = 0
    requests_timed_out: int = 0
    requests_failed: int = 0
    requests_served: int = 0
    responses_unmatched: int = 0
    handler_errors: int = 0

    def count_refusal(self, reason: RefusalReason) -> None:
        """Count one refused connection under its reason."""
        self.refused_connections += 1
        name = f"refused_{reason.value}"
        setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict[str, int]:
        """All counters by name."""
        return asdict(self)
