"""One authenticated connection to one peer: a read loop, a write loop, and closing.

A :class:`PeerConnection` exists only after the TLS handshake, the certificate checks and
the HELLO exchange succeeded (see :mod:`node.net.transport`). It reads frames and hands
each envelope to the transport, in order; it writes frames taken from the peer's
:class:`~node.net.outbox.Outbox`. Closing is idempotent and may be triggered from either
loop, from the transport, or by the peer.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

from node.consensus.types import Address
from node.net.errors import FrameTooLarge, ProtocolViolation
from node.net.frames import LENGTH, Envelope, Kind, read_envelope
from node.net.outbox import Outbox
from node.net.stats import TransportStats

logger = logging.getLogger("node.net")

EnvelopeHandler = Callable[["PeerConnection", Envelope], Awaitable[None]]
ClosedHandler = Callable[["PeerConnection", str], None]


class PeerConnection:
    """An established, authenticated link to ``peer``."""

    def __init__(
        self,
        *,
        peer: Address,
        dialer: Address,
        outbound: bool,
        remote: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame_size: int,
        peer_max_frame_size: int,
        close_timeout: float,
        max_concurrent_requests: int,
        stats: TransportStats,
    ) -> None:
        self.peer = peer
        #: which side opened the TCP connection (the tie-break between duplicates)
        self.dialer = dialer
        self.outbound = outbound
        self.remote = remote
        self.max_frame_size = max_frame_size
        self.peer_max_frame_size = peer_max_frame_size
        self.last_received = asyncio.get_running_loop().time()
        self.close_reason: str | None = None
        #: bounds the peer's requests being served at once; per connection, so one busy
        #: peer cannot stall another's read loop
        self.request_slots = asyncio.Semaphore(max_concurrent_requests)
        self._reader = reader
        self._writer = writer
        self._close_timeout = close_timeout
        self._stats = stats
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = asyncio.Event()
        self._on_closed: ClosedHandler | None = None

    @property
    def is_closing(self) -> bool:
        """True once :meth:`close` has been called (or the link failed)."""
        return self.close_reason is not None

    def start(self, outbox: Outbox, on_envelope: EnvelopeHandler, on_closed: ClosedHandler) -> None:
        """Start reading (into ``on_envelope``) and writing (from ``outbox``)."""
        self._on_closed = on_closed
        self._tasks = [
            asyncio.create_task(self._read_loop(on_envelope), name=f"net-read-{self.remote}"),
            asyncio.create_task(self._write_loop(outbox), name=f"net-write-{self.remote}"),
        ]

    def close(self, reason: str, *, goodbye: bool = True) -> None:
        """Close the link (idempotent). With ``goodbye`` the peer is told ``reason`` first.

        Frames already taken from the outbox but not yet on the wire are lost: delivery is
        at most once, and the protocols above (consensus retransmission, request timeouts)
        tolerate that.
        """
        if self.close_reason is not None:
            return
        self.close_reason = reason
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        if goodbye and not self._writer.is_closing():
            frame = Envelope(Kind.GOODBYE, payload=reason.encode()[:1024]).frame()
            self._writer.write(frame)
            self._stats.frames_out += 1
            self._stats.bytes_out += len(frame)
        self._writer.close()
        self._closed.set()
        if self._on_closed is not None:
            self._on_closed(self, reason)

    async def wait_closed(self) -> None:
        """Wait until both loops have ended and the socket is closed (bounded wait)."""
        await self._closed.wait()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await close_stream(self._writer, self._close_timeout)

    async def _read_loop(self, on_envelope: EnvelopeHandler) -> None:
        reason = "connection lost"
        try:
            while self.close_reason is None:
                envelope, size = await read_envelope(self._reader, self.max_frame_size)
                self.last_received = asyncio.get_running_loop().time()
                self._stats.frames_in += 1
                self._stats.bytes_in += size
                await on_envelope(self, envelope)
        except FrameTooLarge as exc:
            self._stats.oversized_frames += 1
            reason = f"frame too large: {exc}"
            _log_violation(self, reason)
        except ProtocolViolation as exc:
            self._stats.protocol_errors += 1
            reason = f"protocol violation: {exc}"
            _log_violation(self, reason)
        except asyncio.IncompleteReadError:
            reason = "closed by peer"
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            reason = f"connection lost: {exc!r}"
        except Exception:
            # A bug on our side, not the peer's: say so loudly, and do not leave a
            # half-dead connection registered.
            logger.exception("internal error while reading from %s", self.remote)
            reason = "internal error"
        self.close(reason, goodbye=not reason.startswith(("closed", "connection")))

    async def _write_loop(self, outbox: Outbox) -> None:
        try:
            while True:
                frame = await outbox.get()
                if len(frame) - LENGTH.size > self.peer_max_frame_size:
                    self._stats.frames_dropped_too_large += 1
                    logger.warning(
                        "dropped %d-byte frame for %s: peer accepts at most %d",
                        len(frame),
                        self.peer.hex(),
                        self.peer_max_frame_size,
                        extra={"event": "frame_dropped", "peer": "0x" + self.peer.hex()},
                    )
                    continue
                self._writer.write(frame)
                self._stats.frames_out += 1
                self._stats.bytes_out += len(frame)
                await self._writer.drain()
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            self.close(f"write failed: {exc!r}", goodbye=False)


async def close_stream(writer: asyncio.StreamWriter, timeout: float) -> None:
    """Close ``writer`` gracefully (TLS close_notify), aborting after ``timeout``.

    The socket is aborted too if this coroutine is cancelled midway, so no path leaves
    a file descriptor open.
    """
    writer.close()
    closed = False
    try:
        await asyncio.wait_for(writer.wait_closed(), timeout)
        closed = True
    except (ConnectionError, ssl.SSLError, OSError):
        closed = True  # the link failed while closing; the socket is gone either way
    except TimeoutError:
        logger.debug("TLS shutdown timed out after %.1fs; aborting", timeout)
    finally:
        if not closed:
            writer.transport.abort()


def _log_violation(conn: PeerConnection, reason: str) -> None:
    logger.warning(
        "closing connection to %s (%s): %s",
        "0x" + conn.peer.hex(),
        conn.remote,
        reason,
        extra={
            "event": "peer_protocol_violation",
            "peer": "0x" + conn.peer.hex(),
            "remote": conn.remote,
            "reason": reason,
        },
    )
