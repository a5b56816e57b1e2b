"""Tunables of the peer transport."""

from __future__ import annotations

from dataclasses import dataclass

from node.errors import InvalidInput
from node.net.frames import frame_size


@dataclass(frozen=True)
class TransportConfig:
    """Tunables of a :class:`~node.net.transport.PeerTransport` (seconds and bytes).

    - ``max_frame_size``: largest envelope accepted or sent; a peer announcing a larger
      frame is disconnected (blob transfers must chunk below it).
    - ``max_queue_frames`` / ``max_queue_bytes``: per-peer outbound bound (drop-oldest).
    - ``connect_timeout`` / ``handshake_timeout``: TCP connect; TLS handshake and HELLO.
    - ``backoff_initial`` / ``backoff_max``: reconnect delays (exponential, jittered).
    - ``ping_interval`` / ``idle_timeout``: keep-alive and miner-set re-check period;
      a connection silent for ``idle_timeout`` is closed.
    - ``request_timeout``: default for :meth:`PeerTransport.request`.
    - ``max_concurrent_requests``: requests served at once per connection.
    - ``max_pending_handshakes``: unauthenticated connections held at once (flood bound).
    - ``close_timeout``: wait for a graceful TLS close before aborting the socket.
    """

    max_frame_size: int = 16 * 1024 * 1024
    max_queue_frames: int = 4096
    max_queue_bytes: int = 64 * 1024 * 1024
    connect_timeout: float = 5.0
    handshake_timeout: float = 5.0
    backoff_initial: float = 0.2
    backoff_max: float = 10.0
    ping_interval: float = 5.0
    idle_timeout: float = 20.0
    request_timeout: float = 10.0
    max_concurrent_requests: int = 32
    max_pending_handshakes: int = 64
    close_timeout: float = 1.0

    def __post_init__(self) -> None:
        if self.max_frame_size < frame_size(0) or self.max_frame_size > 2**32 - 1:
            raise InvalidInput(f"max_frame_size {self.max_frame_size} out of range")
        if self.max_queue_bytes < self.max_frame_size + 4 or self.max_queue_frames < 1:
            raise InvalidInput("a peer queue must hold at least one maximum-size frame")
        if self.idle_timeout <= self.ping_interval:
            raise InvalidInput("idle_timeout must exceed ping_interval")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise InvalidInput("need 0 < backoff_initial <= backoff_max")
