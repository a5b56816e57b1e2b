"""Authenticated transport between miners: mutual TLS 1.3, framing, peers.

The daemon builds one :class:`PeerTransport` from its :class:`TlsIdentity` (issued by the
consortium CA, see :mod:`node.pki`), the dial addresses of the other miners and a callable
returning the current miner set, then uses :meth:`~PeerTransport.send`,
:meth:`~PeerTransport.broadcast` and :meth:`~PeerTransport.request`.
"""

from node.net.config import TransportConfig
from node.net.errors import (
    FrameTooLarge,
    PeerUnavailable,
    ProtocolViolation,
    RemoteError,
    RequestTimeout,
    TransportError,
)
from node.net.frames import PROTOCOL_VERSION, Channel, Envelope, Kind
from node.net.tls import RefusalReason, TlsIdentity
from node.net.transport import OnMessage, OnRequest, PeerTransport

__all__ = [
    "PROTOCOL_VERSION",
    "Channel",
    "Envelope",
    "FrameTooLarge",
    "Kind",
    "OnMessage",
    "OnRequest",
    "PeerTransport",
    "PeerUnavailable",
    "ProtocolViolation",
    "RefusalReason",
    "RemoteError",
    "RequestTimeout",
    "TlsIdentity",
    "TransportConfig",
    "TransportError",
]
