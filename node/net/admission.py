"""Admission of new connections, and the accounting of those that do not make it.

Gate 1 (TLS 1.3, certificates chaining to the consortium CA) is OpenSSL's job, configured
in :mod:`node.net.tls`. :class:`Admission` runs gates 2 and 3 once TLS is up:

2. the validator address in the peer's certificate must not be ours, must be the one we
   dialed (outbound), and must be in the current miner set;
3. HELLO exchange: protocol version and maximum frame size.

When we refuse at gate 2 or 3, the peer gets a GOODBYE carrying the reason before we
close. Every failed attempt is counted under its reason and logged once, with structured
``extra`` fields (``event``, ``direction``, ``remote``, ``peer``, ``reason``, ``detail``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Collection

from eth_utils.address import to_checksum_address

from node.consensus.types import Address
from node.errors import InvalidInput
from node.net.config import TransportConfig
from node.net.connection import PeerConnection, close_stream
from node.net.errors import ProtocolViolation
from node.net.frames import PROTOCOL_VERSION, Envelope, Hello, Kind, read_envelope
from node.net.stats import TransportStats
from node.net.tls import RefusalReason, classify_handshake_error, peer_address

logger = logging.getLogger("node.net")


class Refusal(Exception):
    """A connection attempt ended before it could carry data.

    ``reason`` is set when *we* refused (counted as ``refused_<reason>``); ``by_peer``
    when the peer refused us or hung up during the HELLO exchange.
    """

    def __init__(
        self,
        reason: RefusalReason | None,
        detail: str,
        *,
        peer: Address | None = None,
        by_peer: bool = False,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.peer = peer
        self.by_peer = by_peer


def fmt_address(address: bytes | None) -> str:
    """EIP-55 form of an address for logs ("?" when unknown)."""
    return to_checksum_address(address) if address is not None else "?"


class Admission:
    """Decides whether a freshly handshaken connection becomes a peer connection."""

    def __init__(
        self,
        address: Address,
        allowed: Callable[[], Collection[bytes]],
        config: TransportConfig,
        stats: TransportStats,
    ) -> None:
        self.address = address
        self.allowed = allowed
        self.config = config
        self._stats = stats

    async def admit(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        remote: str,
        *,
        expected: Address | None,
    ) -> PeerConnection:
        """Gates 2 and 3 for a connection whose TLS handshake succeeded.

        Checks the certificate's validator address (ours? the one we dialed? in the
        miner set?), then exchanges HELLO. Returns the connection, not yet registered;
        raises :class:`Refusal` (or a socket/TLS error) otherwise.
        """
        try:
            peer = peer_address(writer.get_extra_info("ssl_object"))
        except InvalidInput as exc:
            raise Refusal(RefusalReason.BAD_CERTIFICATE, str(exc)) from exc
        if peer == self.address:
            raise Refusal(
                RefusalReason.ADDRESS_MISMATCH, "peer presents our own address", peer=peer
            )
        if expected is not None and peer != expected:
            raise Refusal(
                RefusalReason.ADDRESS_MISMATCH,
                f"dialed {fmt_address(expected)}, certificate is bound to {fmt_address(peer)}",
                peer=peer,
            )
        if peer not in self.allowed():
            raise Refusal(RefusalReason.NOT_A_MINER, "not in the current miner set", peer=peer)
        hello = Envelope(
            Kind.HELLO, payload=Hello(PROTOCOL_VERSION, self.config.max_frame_size).encode()
        )
        frame = hello.frame()
        writer.write(frame)
        self._stats.frames_out += 1
        self._stats.bytes_out += len(frame)
        try:
            envelope, size = await asyncio.wait_for(
                read_envelope(reader, self.config.max_frame_size), self.config.handshake_timeout
            )
            self._stats.frames_in += 1
            self._stats.bytes_in += size
            if envelope.kind is Kind.GOODBYE:
                reason = envelope.payload.decode(errors="replace")
                raise Refusal(None, f"peer refused us: {reason}", peer=peer, by_peer=True)
            if envelope.kind is not Kind.HELLO:
                raise ProtocolViolation(f"expected HELLO, got {envelope.kind.name}")
            theirs = Hello.decode(envelope.payload)
        except TimeoutError as exc:
            raise Refusal(RefusalReason.HANDSHAKE_FAILED, "no HELLO in time", peer=peer) from exc
        except asyncio.IncompleteReadError as exc:
            raise Refusal(
                None,
                "peer hung up before HELLO (did it refuse our certificate?)",
                peer=peer,
                by_peer=True,
            ) from exc
        except ProtocolViolation as exc:
            raise Refusal(RefusalReason.PROTOCOL_ERROR, str(exc), peer=peer) from exc
        if theirs.version != PROTOCOL_VERSION:
            raise Refusal(
                RefusalReason.PROTOCOL_ERROR,
                f"peer speaks protocol {theirs.version}, we speak {PROTOCOL_VERSION}",
                peer=peer,
            )
        return PeerConnection(
            peer=peer,
            dialer=self.address if expected is not None else peer,
            outbound=expected is not None,
            remote=remote,
            reader=reader,
            writer=writer,
            max_frame_size=self.config.max_frame_size,
            peer_max_frame_size=theirs.max_frame_size,
            close_timeout=self.config.close_timeout,
            max_concurrent_requests=self.config.max_concurrent_requests,
            stats=self._stats,
        )

    async def reject(self, writer: asyncio.StreamWriter, exc: BaseException) -> None:
        """Tell a refused peer why (if TLS is up and the refusal is ours), then close."""
        if (
            isinstance(exc, Refusal)
            and exc.reason is not None
            and not writer.is_closing()
            and writer.get_extra_info("ssl_object") is not None
        ):
            writer.write(Envelope(Kind.GOODBYE, payload=exc.reason.value.encode()).frame())
        await close_stream(writer, self.config.close_timeout)

    def record_failure(
        self,
        exc: BaseException,
        direction: str,
        remote: str,
        *,
        expected: Address | None = None,
        quiet: bool = False,
    ) -> None:
        """Count and log a connection attempt that did not produce a connection.

        ``quiet`` lowers repeated failures of one dialer to DEBUG.
        """
        refusal = as_refusal(exc, inbound=direction == "inbound")
        if refusal is None:  # outbound: unreachable, reset, timed out; not a refusal
            self._stats.dial_failures += 1
            logger.log(
                logging.DEBUG if quiet else logging.INFO,
                "cannot reach %s at %s: %r",
                fmt_address(expected),
                remote,
                exc,
                extra={"event": "dial_failed", "peer": fmt_address(expected), "remote": remote},
            )
            return
        peer = refusal.peer or expected
        reason = refusal.reason
        extra = {
            "event": "refused_by_peer" if reason is None else "peer_refused",
            "direction": direction,
            "remote": remote,
            "peer": fmt_address(peer),
            "reason": "refused_by_peer" if reason is None else reason.value,
            "detail": refusal.detail,
        }
        if direction == "outbound":
            self._stats.dial_failures += 1
        if reason is None:
            self._stats.refused_by_peer += 1
            level = logging.DEBUG if quiet else logging.WARNING
            message = "%s connection with %s (%s) refused by the peer: %s"
            logger.log(
                level, message, direction, fmt_address(peer), remote, refusal.detail, extra=extra
            )
            return
        self._stats.count_refusal(reason)
        routine = reason in (RefusalReason.HANDSHAKE_FAILED, RefusalReason.OVERLOAD)
        level = logging.DEBUG if quiet else logging.INFO if routine else logging.WARNING
        message = "refused %s connection with %s (%s): %s: %s"
        logger.log(
            level,
            message,
            direction,
            fmt_address(peer),
            remote,
            reason.value,
            refusal.detail,
            extra=extra,
        )


def as_refusal(exc: BaseException, *, inbound: bool) -> Refusal | None:
    """Normalise a failed connection attempt; None means "could not reach" (outbound)."""
    if isinstance(exc, Refusal):
        return exc
    if isinstance(exc, ssl.SSLError):
        reason, detail = classify_handshake_error(exc)
        return Refusal(reason, detail, by_peer=reason is None)
    if inbound:
        reason, detail = classify_handshake_error(exc)
        return Refusal(reason, detail)
    return None
