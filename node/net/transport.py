"""The peer transport: authenticated, multiplexed links between the miners.

Theory of operation
-------------------

Every miner listens on one TCP port and dials every peer it knows an address for. A new
TCP connection, in either direction, goes through three gates before it carries data:

1. **TLS 1.3 with mutual authentication.** Both certificates must chain to the consortium
   CA, the only trust root (:mod:`node.net.tls`). Failure: *unknown CA* / *bad certificate*.
2. **Identity.** The validator address in the peer's certificate must be in the current
   miner set (``allowed()``, re-read on every connection) — *not a miner* — and, when we
   dialed, must be the address we meant to reach, and never our own — *address mismatch*.
3. **HELLO exchange** (:mod:`node.net.frames`): protocol version and maximum frame size.
   A side that refused the peer at gate 2 sends GOODBYE with the reason instead.

Refusals are counted (``refused_<reason>``) and logged with the reason. The inbound TLS
handshake is run by us (``start_tls``), not by the server, precisely so that a failed
handshake is seen, counted and logged rather than silently dropped by asyncio.

**One connection per pair.** When both miners dial at once, both end up with two
connections; each side keeps the one *dialed by the lower address* and closes the other,
so both make the same choice without talking. Two connections dialed by the same side
mean the old one is stale: the newer wins.

**Queues.** Outgoing frames go into a bounded per-peer :class:`~node.net.outbox.Outbox`
(drop-oldest, counted) that outlives connections: frames queued while a peer is away go
out when it is back. Delivery is at most once.

**Liveness.** Every ``ping_interval`` each side sends PING, closes connections silent for
``idle_timeout``, and evicts peers that left the miner set (:meth:`PeerTransport.revalidate`,
which the daemon may also call as soon as the set changes). Dialers reconnect with capped
exponential backoff and jitter.

**Requests** carry a request id; the peer's ``on_request`` handler answers with RESPONSE or
ERROR on the same channel and id. A request fails with :class:`RequestTimeout` after its
timeout, or with :class:`PeerUnavailable` as soon as the connection it may have used is lost.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from types import TracebackType
from typing import Any

from node.consensus.types import Address
from node.errors import InvalidInput, TwinChainError
from node.net.admission import Admission, Refusal
from node.net.admission import fmt_address as _fmt
from node.net.config import TransportConfig
from node.net.connection import PeerConnection
from node.net.errors import (
    PeerUnavailable,
    ProtocolViolation,
    RemoteError,
    RequestTimeout,
)
from node.net.frames import (
    Channel,
    Envelope,
    ErrorBody,
    Kind,
    frame_size,
)
from node.net.outbox import Backoff, Outbox
from node.net.stats import TransportStats
from node.net.tls import RefusalReason, TlsIdentity

logger = logging.getLogger("node.net")

OnMessage = Callable[[Address, int, bytes], Awaitable[None]]
"""``on_message(peer, channel, payload)``: one MESSAGE frame from an authenticated miner."""

OnRequest = Callable[[Address, int, bytes], Awaitable[bytes]]
"""``on_request(peer, channel, payload) -> response``; raise a TwinChainError to refuse."""

AllowedPeers = Callable[[], Collection[bytes]]
"""Returns the current miner set; called on every connection and send, so keep it cheap."""

_PING = Envelope(Kind.PING).frame()


class PeerTransport:
    """Mutual-TLS transport between the miners of one consortium.

    ``peers`` maps validator addresses to the ``(host, port)`` we dial; peers not in it
    may still connect to us. ``allowed`` returns the current miner set. ``on_message``
    receives every MESSAGE frame in order per peer; it runs inside the peer's read loop,
    so it should hand the message over (to the daemon's inbox) rather than do slow work.
    ``on_request`` answers REQUEST frames (concurrently, up to
    ``config.max_concurrent_requests``).
    """

    def __init__(
        self,
        my_address: bytes,
        tls: TlsIdentity,
        host: str,
        port: int,
        peers: Mapping[bytes, tuple[str, int]],
        allowed: AllowedPeers,
        on_message: OnMessage,
        *,
        on_request: OnRequest | None = None,
        config: TransportConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if len(my_address) != 20:
            raise InvalidInput("my_address must be a 20-byte validator address")
        certified = tls.check()
        if certified != my_address:
            raise InvalidInput(
                f"TLS certificate is bound to {_fmt(certified)}, not to {_fmt(my_address)}"
            )
        self.address = Address(bytes(my_address))
        self.config = config or TransportConfig()
        self._host = host
        self._port = port
        self._peers: dict[Address, tuple[str, int]] = {}
        self._allowed = allowed
        self._on_message = on_message
        self._on_request = on_request
        self._rng = rng or random.Random()
        self._server_ctx = tls.server_context()
        self._client_ctx = tls.client_context()
        self._stats = TransportStats()
        self._server: asyncio.Server | None = None
        self._listen_port: int | None = None
        self._started = False
        self._closed = False
        self._connections: dict[Address, PeerConnection] = {}
        self._outboxes: dict[Address, Outbox] = {}
        self._dialers: dict[Address, asyncio.Task[None]] = {}
        self._handshakes: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._background: set[asyncio.Task[None]] = set()  # request handlers, old dialers
        self._closers: set[asyncio.Task[None]] = set()  # graceful closes, never cancelled
        self._maintenance: asyncio.Task[None] | None = None
        self._pending: dict[int, tuple[Address, asyncio.Future[bytes]]] = {}
        self._request_ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._admission = Admission(self.address, allowed, self.config, self._stats)
        self.update_peers(peers)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Listen, and start dialing peers and the keep-alive/eviction timer."""
        if self._started:
            raise InvalidInput("transport already started")
        self._started = True
        self._server = await asyncio.start_server(self._accept, self._host, self._port)
        self._listen_port = self._server.sockets[0].getsockname()[1]
        self._maintenance = asyncio.create_task(self._maintain(), name="net-maintenance")
        for peer, (host, port) in self._peers.items():
            self._start_dialer(peer, host, port)
        logger.info(
            "peer transport of %s listening on %s:%d",
            _fmt(self.address),
            self._host,
            self._listen_port,
            extra={"event": "transport_started", "port": self._listen_port},
        )

    @property
    def listen_port(self) -> int:
        """The bound port (useful when started with port 0)."""
        if self._listen_port is None:
            raise InvalidInput("transport not started")
        return self._listen_port

    async def close(self) -> None:
        """Stop listening and dialing, close every connection, fail pending requests."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        tasks: list[asyncio.Task[Any]] = [*self._dialers.values(), *self._background]
        if self._maintenance is not None:
            tasks.append(self._maintenance)
        for task in tasks:
            task.cancel()
        # Accept tasks belong to asyncio's server: abort their sockets instead of
        # cancelling them, and they finish on their own.
        for writer in self._handshakes.values():
            writer.transport.abort()
        for conn in list(self._connections.values()):
            conn.close("shutting down")
        await asyncio.gather(*tasks, *self._handshakes, return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)
        while self._closers:  # closing one connection may start closing another
            await asyncio.gather(*self._closers, return_exceptions=True)
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), self.config.close_timeout)
            except TimeoutError:
                logger.warning("listener did not close within %.1fs", self.config.close_timeout)
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(PeerUnavailable("transport closed"))
        logger.info("peer transport of %s closed", _fmt(self.address))

    async def __aenter__(self) -> PeerTransport:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ------------------------------------------------------------------ sending

    def send(self, peer: bytes, data: bytes, channel: int = Channel.CONSENSUS) -> bool:
        """Queue ``data`` for ``peer`` as one MESSAGE on ``channel``.

        Returns False (and counts ``frames_dropped_not_allowed``) if ``peer`` is not in
        the miner set. Raises :class:`InvalidInput` for a frame over ``max_frame_size``,
        a bad channel, or our own address, and :class:`PeerUnavailable` once closed.
        """
        target = self._check_outgoing(peer, data, channel)
        if target not in self._allowed():
            self._stats.frames_dropped_not_allowed += 1
            logger.debug("not sending to %s: not in the miner set", _fmt(target))
            return False
        self._enqueue(target, Envelope(Kind.MESSAGE, channel, 0, bytes(data)).frame())
        return True

    def broadcast(self, data: bytes, channel: int = Channel.CONSENSUS) -> int:
        """Queue ``data`` for every other miner in the current set; returns how many."""
        self._check_payload(data, channel)
        frame = Envelope(Kind.MESSAGE, channel, 0, bytes(data)).frame()
        targets = {Address(bytes(p)) for p in self._allowed()} - {self.address}
        for peer in targets:
            self._enqueue(peer, frame)
        return len(targets)

    async def request(
        self,
        peer: bytes,
        data: bytes,
        channel: int = Channel.SYNC,
        timeout: float | None = None,
    ) -> bytes:
        """Send a REQUEST to ``peer`` and wait for its RESPONSE payload.

        Raises :class:`RequestTimeout` after ``timeout`` (default
        ``config.request_timeout``), :class:`RemoteError` if the peer's handler failed,
        :class:`PeerUnavailable` if the peer is not a miner or the connection is lost.
        """
        target = self._check_outgoing(peer, data, channel)
        if target not in self._allowed():
            raise PeerUnavailable(f"{_fmt(target)} is not in the miner set")
        request_id = next(self._request_ids)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (target, future)
        self._enqueue(target, Envelope(Kind.REQUEST, channel, request_id, bytes(data)).frame())
        self._stats.requests_sent += 1
        wait = self.config.request_timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(future, wait)
        except TimeoutError as exc:
            self._stats.requests_timed_out += 1
            raise RequestTimeout(
                f"no response from {_fmt(target)} to request {request_id} within {wait}s"
            ) from exc
        except (RemoteError, PeerUnavailable):
            self._stats.requests_failed += 1
            raise
        finally:
            self._pending.pop(request_id, None)

    # ------------------------------------------------------------------ state

    def connected_peers(self) -> frozenset[Address]:
        """Miners with an established connection right now."""
        return frozenset(p for p, c in self._connections.items() if not c.is_closing)

    async def wait_connected(self, peers: Iterable[bytes], timeout: float) -> None:
        """Wait until all ``peers`` are connected; :class:`RequestTimeout` otherwise."""
        wanted = {Address(bytes(p)) for p in peers}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not wanted <= self.connected_peers():
            remaining = deadline - loop.time()
            if remaining <= 0:
                missing = ", ".join(_fmt(p) for p in wanted - self.connected_peers())
                raise RequestTimeout(f"not connected to {missing} after {timeout}s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                continue

    def stats(self) -> dict[str, int]:
        """Counters (see :class:`TransportStats`) plus current gauges."""
        out = self._stats.as_dict()
        out["connected_peers"] = len(self.connected_peers())
        out["queued_frames"] = sum(len(o) for o in self._outboxes.values())
        out["queued_bytes"] = sum(o.queued_bytes for o in self._outboxes.values())
        out["pending_requests"] = len(self._pending)
        return out

    def update_peers(self, peers: Mapping[bytes, tuple[str, int]]) -> None:
        """Replace the dial list; dialers start, stop or move as needed."""
        new = {Address(bytes(a)): (h, p) for a, (h, p) in peers.items() if a != self.address}
        for peer in list(self._peers):
            if new.get(peer) != self._peers[peer]:
                task = self._dialers.pop(peer, None)
                if task is not None:
                    task.cancel()
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
        old, self._peers = self._peers, new
        if self._started and not self._closed:
            for peer, (host, port) in new.items():
                if old.get(peer) != (host, port):
                    self._start_dialer(peer, host, port)

    def revalidate(self) -> int:
        """Close connections to, and drop queues for, peers no longer in the miner set.

        Returns the number of connections evicted. Also runs every ``ping_interval``.
        """
        allowed = {bytes(p) for p in self._allowed()}
        evicted = 0
        for peer, conn in list(self._connections.items()):
            if peer not in allowed and not conn.is_closing:
                logger.warning(
                    "evicting %s (%s): no longer in the miner set",
                    _fmt(peer),
                    conn.remote,
                    extra={"event": "peer_evicted", "peer": _fmt(peer), "reason": "not_a_miner"},
                )
                conn.close(f"{RefusalReason.NOT_A_MINER.value}: removed from the miner set")
                self._stats.connections_evicted += 1
                evicted += 1
        for peer in [p for p in self._outboxes if p not in allowed]:
            self._stats.frames_dropped_not_allowed += len(self._outboxes.pop(peer))
        return evicted

    # ------------------------------------------------------------------ inbound

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Nothing may be awaited before start_tls: bytes read into the plaintext
        # StreamReader would be lost to TLS (cpython#142352). Every exception is handled
        # here because asyncio would only log it as "unhandled in client_connected_cb".
        remote = _remote(writer)
        self._stats.connections_accepted += 1
        if self._closed or len(self._handshakes) >= self.config.max_pending_handshakes:
            self._admission.record_failure(
                Refusal(RefusalReason.OVERLOAD, "too many pending handshakes"), "inbound", remote
            )
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._handshakes[task] = writer
        try:
            await writer.start_tls(
                self._server_ctx, ssl_handshake_timeout=self.config.handshake_timeout
            )
            conn = await self._admission.admit(reader, writer, remote, expected=None)
        except (Refusal, ssl.SSLError, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            self._admission.record_failure(exc, "inbound", remote)
            await self._admission.reject(writer, exc)
            return
        finally:
            self._handshakes.pop(task, None)
        if not self._register(conn):
            await conn.wait_closed()

    # ------------------------------------------------------------------ outbound

    def _start_dialer(self, peer: Address, host: str, port: int) -> None:
        self._dialers[peer] = asyncio.create_task(
            self._dial_loop(peer, host, port), name=f"net-dial-{host}:{port}"
        )

    async def _dial_loop(self, peer: Address, host: str, port: int) -> None:
        backoff = Backoff(self.config.backoff_initial, self.config.backoff_max, self._rng)
        failures = 0
        while not self._closed:
            conn = self._connections.get(peer)
            if conn is not None:
                await conn.wait_closed()
                # A peer that just went away is probably restarting: a short jittered
                # pause keeps both sides from redialing in lock-step.
                await asyncio.sleep(backoff.next_delay())
                continue
            if peer not in self._allowed():
                await asyncio.sleep(backoff.next_delay())
                continue
            try:
                await self._dial(peer, host, port)
            except (
                Refusal,
                ssl.SSLError,
                OSError,
                TimeoutError,
                asyncio.IncompleteReadError,
            ) as exc:
                failures += 1
                self._admission.record_failure(
                    exc, "outbound", f"{host}:{port}", expected=peer, quiet=failures > 1
                )
                await asyncio.sleep(backoff.next_delay())
            else:
                failures = 0
                backoff.reset()

    async def _dial(self, peer: Address, host: str, port: int) -> None:
        self._stats.dial_attempts += 1
        remote = f"{host}:{port}"
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host,
                port,
                ssl=self._client_ctx,
                ssl_handshake_timeout=self.config.handshake_timeout,
            ),
            self.config.connect_timeout + self.config.handshake_timeout,
        )
        try:
            conn = await self._admission.admit(reader, writer, remote, expected=peer)
        except BaseException as exc:
            await self._admission.reject(writer, exc)
            raise
        if not self._register(conn):
            await conn.wait_closed()

    # ------------------------------------------------------------------ connections

    def _register(self, conn: PeerConnection) -> bool:
        """Make ``conn`` the peer's connection unless an existing one wins the tie-break."""
        existing = self._connections.get(conn.peer)
        if self._closed:
            conn.close("shutting down")
            return False
        if existing is not None and not existing.is_closing:
            if self._preferred(existing, conn) is existing:
                conn.close("duplicate connection")
                return False
            # Register the winner first, so the loser's close does not look like a loss
            # of the peer (which would fail its pending requests).
            self._connections[conn.peer] = conn
            existing.close("duplicate connection")
        else:
            self._connections[conn.peer] = conn
        conn.start(self._outbox(conn.peer), self._on_envelope, self._on_connection_closed)
        self._stats.connections_established += 1
        self._changed.set()
        logger.info(
            "connected to %s (%s, %s)",
            _fmt(conn.peer),
            conn.remote,
            "outbound" if conn.outbound else "inbound",
            extra={"event": "peer_connected", "peer": _fmt(conn.peer), "remote": conn.remote},
        )
        return True

    def _preferred(self, a: PeerConnection, b: PeerConnection) -> PeerConnection:
        if a.dialer != b.dialer:
            lower = min(self.address, a.peer)
            return a if a.dialer == lower else b
        return b  # the same side dialed again: it considers the older link dead

    def _on_connection_closed(self, conn: PeerConnection, reason: str) -> None:
        self._stats.connections_closed += 1
        task = asyncio.create_task(conn.wait_closed(), name=f"net-close-{conn.remote}")
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)
        if self._connections.get(conn.peer) is not conn:
            return
        del self._connections[conn.peer]
        self._changed.set()
        logger.info(
            "disconnected from %s (%s): %s",
            _fmt(conn.peer),
            conn.remote,
            reason,
            extra={"event": "peer_disconnected", "peer": _fmt(conn.peer), "reason": reason},
        )
        lost = PeerUnavailable(f"connection to {_fmt(conn.peer)} lost: {reason}")
        for peer, future in self._pending.values():
            if peer == conn.peer and not future.done():
                future.set_exception(lost)

    def _outbox(self, peer: Address) -> Outbox:
        outbox = self._outboxes.get(peer)
        if outbox is None:
            outbox = Outbox(self.config.max_queue_frames, self.config.max_queue_bytes)
            self._outboxes[peer] = outbox
        return outbox

    def _enqueue(self, peer: Address, frame: bytes) -> None:
        dropped = self._outbox(peer).put(frame)
        if dropped:
            self._stats.frames_dropped += dropped
            logger.debug("queue for %s full: dropped %d oldest frame(s)", _fmt(peer), dropped)

    def _check_outgoing(self, peer: bytes, data: bytes, channel: int) -> Address:
        if not isinstance(peer, bytes) or len(peer) != 20:
            raise InvalidInput("peer must be a 20-byte validator address")
        if peer == self.address:
            raise InvalidInput("cannot send to ourselves; loop back in the daemon")
        self._check_payload(data, channel)
        return Address(bytes(peer))

    def _check_payload(self, data: bytes, channel: int) -> None:
        if self._closed:
            raise PeerUnavailable("transport closed")
        if not 1 <= channel <= 255:
            raise InvalidInput(f"channel must be 1..255, got {channel}")
        if frame_size(len(data)) > self.config.max_frame_size:
            raise InvalidInput(
                f"payload of {len(data)} bytes exceeds max frame size {self.config.max_frame_size}"
            )

    # ------------------------------------------------------------------ dispatch

    async def _on_envelope(self, conn: PeerConnection, envelope: Envelope) -> None:
        kind = envelope.kind
        if kind is Kind.PING:
            return
        if kind is Kind.GOODBYE:
            reason = envelope.payload.decode(errors="replace")
            conn.close(f"peer closed: {reason}", goodbye=False)
        elif kind is Kind.HELLO:
            raise ProtocolViolation("HELLO after the handshake")
        elif kind is Kind.MESSAGE:
            await self._deliver(conn.peer, envelope)
        elif kind is Kind.REQUEST:
            await conn.request_slots.acquire()  # backpressure: stop reading when busy
            task = asyncio.create_task(self._serve(conn, envelope))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        else:  # RESPONSE or ERROR
            self._resolve(conn.peer, envelope)

    async def _deliver(self, peer: Address, envelope: Envelope) -> None:
        try:
            await self._on_message(peer, envelope.channel, envelope.payload)
        except TwinChainError as exc:
            self._stats.handler_errors += 1
            logger.warning(
                "message from %s on channel %d rejected: %r",
                _fmt(peer),
                envelope.channel,
                exc,
                extra={"event": "message_rejected", "peer": _fmt(peer)},
            )
        except Exception:
            self._stats.handler_errors += 1
            logger.exception("message handler failed on a message from %s", _fmt(peer))

    async def _serve(self, conn: PeerConnection, envelope: Envelope) -> None:
        peer = conn.peer
        try:
            kind, payload = Kind.RESPONSE, b""
            if self._on_request is None:
                kind, payload = Kind.ERROR, ErrorBody("NotFound", "no request handler").encode()
            else:
                try:
                    payload = bytes(
                        await self._on_request(peer, envelope.channel, envelope.payload)
                    )
                except TwinChainError as exc:
                    kind, payload = Kind.ERROR, ErrorBody(type(exc).__name__, str(exc)).encode()
                except Exception:
                    self._stats.handler_errors += 1
                    logger.exception("request handler failed on a request from %s", _fmt(peer))
                    kind, payload = (
                        Kind.ERROR,
                        ErrorBody("InternalError", "internal error").encode(),
                    )
            if frame_size(len(payload)) > self.config.max_frame_size:
                kind = Kind.ERROR
                payload = ErrorBody("InvalidInput", "response exceeds the max frame size").encode()
            self._stats.requests_served += 1
            if not self._closed:
                self._enqueue(
                    peer, Envelope(kind, envelope.channel, envelope.request_id, payload).frame()
                )
        finally:
            conn.request_slots.release()

    def _resolve(self, peer: Address, envelope: Envelope) -> None:
        entry = self._pending.get(envelope.request_id)
        if entry is None or entry[0] != peer or entry[1].done():
            self._stats.responses_unmatched += 1
            logger.debug("unmatched response %d from %s", envelope.request_id, _fmt(peer))
            return
        future = entry[1]
        if envelope.kind is Kind.RESPONSE:
            future.set_result(envelope.payload)
        else:
            body = ErrorBody.decode(envelope.payload)
            future.set_exception(RemoteError(body.error_type, body.message))

    # ------------------------------------------------------------------ timers

    async def _maintain(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.ping_interval)
            self.revalidate()
            now = loop.time()
            for conn in list(self._connections.values()):
                if now - conn.last_received > self.config.idle_timeout:
                    conn.close(f"idle for more than {self.config.idle_timeout}s")
                else:
                    self._outbox(conn.peer).put_urgent(_PING)


def _remote(writer: asyncio.StreamWriter) -> str:
    peername = writer.get_extra_info("peername")
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return str(peername)
