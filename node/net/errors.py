"""Errors raised by the peer transport, placed in the TwinChain hierarchy.

Whose fault:

- :class:`ProtocolViolation` (and :class:`FrameTooLarge`) — the *peer* sent bytes that
  break the wire protocol; the connection is closed. Subclasses :class:`InvalidInput`.
- :class:`PeerUnavailable`, :class:`RequestTimeout` — nobody's fault in particular: the
  network or the peer is down or slow. ``caller_fault`` is False.
- :class:`RemoteError` — the peer understood a request and answered with an error.
"""

from __future__ import annotations

from node.errors import InvalidInput, TwinChainError


class ProtocolViolation(InvalidInput):
    """A peer sent a frame that breaks the wire protocol (the peer's fault)."""


class FrameTooLarge(ProtocolViolation):
    """A frame's declared length exceeds the configured maximum frame size."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the {limit}-byte limit")
        self.size = size
        self.limit = limit


class TransportError(TwinChainError):
    """Base of failures to reach or hear from a peer."""

    caller_fault = False


class PeerUnavailable(TransportError):
    """The peer is not connected, the connection was lost, or the transport is closed."""


class RequestTimeout(TransportError, TimeoutError):
    """A request got no response within its timeout."""


class RemoteError(TransportError):
    """The peer answered a request with an error.

    ``remote_type`` is the name of the error class the peer's handler raised (or
    ``"InternalError"`` when the peer hid an unexpected failure).
    """

    def __init__(self, remote_type: str, message: str) -> None:
        super().__init__(f"{remote_type}: {message}")
        self.remote_type = remote_type
        self.remote_message = message
