"""The peer transport over real sockets on 127.0.0.1 with real mutual TLS 1.3."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import replace

import pytest

from node.consensus.types import Address
from node.errors import InvalidInput, NotFound
from node.net import Channel, PeerUnavailable, RemoteError, RequestTimeout, TlsIdentity
from node.net.frames import LENGTH, PROTOCOL_VERSION, Envelope, Hello, Kind, read_envelope
from tests.net.harness import FAST, Authority, cluster, eventually, run


def _refusals(caplog: pytest.LogCaptureFixture, reason: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "reason", None) == reason]


def test_two_miners_exchange_messages_both_ways(authority: Authority) -> None:
    async def go() -> None:
        async with cluster(authority) as c:
            a, b = c.add("a"), c.add("b")
            await c.start(a)
            await c.start(b, c.dial_map("a"))
            await a.t.wait_connected([b.address], 5)
            assert a.t.send(b.address, b"prepare", Channel.CONSENSUS)
            assert await b.inbox.next() == (a.address, Channel.CONSENSUS, b"prepare")
            assert b.t.send(a.address, b"blocks please", Channel.SYNC)
            assert await a.inbox.next() == (b.address, Channel.SYNC, b"blocks please")
            for i in range(50):  # order is kept per peer
                a.t.send(b.address, i.to_bytes(2, "big"), Channel.BLOBS)
            got = [await b.inbox.next() for _ in range(50)]
            assert [int.from_bytes(p, "big") for _, _, p in got] == list(range(50))
            stats = a.t.stats()
            assert stats["frames_out"] >= 52 and stats["bytes_out"] > 0
            assert b.t.stats()["frames_in"] >= 52
            assert a.t.connected_peers() == {b.address}

    run(go())


def test_three_miners_broadcast_reaches_every_other_miner(authority: Authority) -> None:
    async def go() -> None:
        async with cluster(authority) as c:
            a, b, d = c.add("a"), c.add("b"), c.add("d")
            await c.start(a)
            await c.start(b, c.dial_map("a"))
            await c.start(d, c.dial_map("a", "b"))
            for m in (a, b, d):
                others = [o.address for o in (a, b, d) if o is not m]
                await m.t.wait_connected(others, 5)
            assert d.t.broadcast(b"new view") == 2
            assert await a.inbox.next() == (d.address, Channel.CONSENSUS, b"new view")
            assert await b.inbox.next() == (d.address, Channel.CONSENSUS, b"new view")
            assert d.inbox.messages.empty()

    run(go())


def test_simultaneous_dials_settle_on_the_connection_dialed_by_the_lower_address(
    authority: Authority,
) -> None:
    async def go() -> None:
        async with cluster(authority) as c:
            a, b = c.add("a"), c.add("b")
            await c.start(a)
            await c.start(b)
            a.t.update_peers(c.dial_map("b"))  # both dial each other at once
            b.t.update_peers(c.dial_map("a"))
            await a.t.wait_connected([b.address], 5)
            await b.t.wait_connected([a.address], 5)
            await asyncio.sleep(0.3)  # let any duplicate be resolved
            lower = min(a.address, b.address)
            conn_a = a.t._connections[b.address]
            conn_b = b.t._connections[a.address]
            assert conn_a.dialer == conn_b.dialer == lower
            assert conn_a.outbound != conn_b.outbound
            a.t.send(b.address, b"after settling")
            assert (await b.inbox.next())[2] == b"after settling"

    run(go())


def test_peer_with_a_certificate_from_another_ca_is_refused(
    authority: Authority, caplog: pytest.LogCaptureFixture
) -> None:
    rogue_ca = Authority(authority.directory, name="rogue")

    async def go() -> None:
        async with cluster(authority) as c:
            a, b = c.add("a"), c.add("b")
            await c.start(a)
            # The rogue claims miner b's address with a certificate from its own CA; it
            # knows the consortium CA certificate (public), so it can verify a.
            forged = rogue_ca.identity("b", b.address)[1]
            rogue = TlsIdentity(authority.ca_path, forged.cert, forged.key)
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", a.t.listen_port, ssl=rogue.client_context()
            )
            with contextlib.suppress(ssl.SSLError, ConnectionError):
                assert await reader.read() == b""  # a hangs up without a word
            writer.close()
            await eventually(lambda: a.t.stats()["refused_unknown_ca"] == 1)
            # ...and a rogue listener posing as b is refused when a dials it.
            server = await asyncio.start_server(
                lambda r, w: None, "127.0.0.1", 0, ssl=rogue.server_context()
            )
            async with server:
                port = server.sockets[0].getsockname()[1]
                a.t.update_peers({b.address: ("127.0.0.1", port)})
                await eventually(lambda: a.t.stats()["refused_unknown_ca"] >= 2)
            assert a.t.connected_peers() == frozenset()
            assert a.t.stats()["refused_connections"] >= 2

    with caplog.at_level(logging.INFO, logger="node.net"):
        run(go())
    records = _refusals(caplog, "unknown_ca")
    assert {r.direction for r in records} == {"inbound", "outbound"}  # type: ignore[attr-defined]


def test_transports_of_different_consortia_never_connect(authority: Authority) -> None:
    other = Authority(authority.directory, name="other")

    async def go() -> None:
        async with cluster(authority) as c:
            a, b = c.add("a"), c.add("b")
            b.identity = other.identity("b", b.address)[1]  # b trusts only its own CA
            await c.start(a)
            await c.start(b, c.dial_map("a"))
            await eventually(lambda: b.t.stats()["refused_unknown_ca"] >= 1)
            await eventually(lambda: a.t.stats()["refused_handshake_failed"] >= 1)
            assert a.t.connected_peers() == b.t.connected_peers() == frozenset()

    run(go())


def test_consortium_peer_outside_the_miner_set_is_refused(
    authority: Authority, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        async with cluster(authority) as c:
            a = c.add("a")
            outsider = c.add("outsider", miner=False)  # valid consortium cert, not a miner
            await c.start(a)
            # The outsider's own view lists `a`, so only `a`'s check can stop it.
            c.miners.add(outsider.address)
            other_view = set(c.miners)
            c.miners.discard(outsider.address)
            await c.start(outsider, c.dial_map("a"))
            outsider.t._allowed = lambda: other_view
            await eventually(lambda: a.t.stats()["refused_not_a_miner"] >= 2)
            await eventually(lambda: outsider.t.stats()["refused_by_peer"] >= 1)
            assert a.t.connected_peers() == frozenset()
            assert outsider.t.connected_peers() == frozenset()

    with caplog.at_level(logging.INFO, logger="node.net"):
        run(go())
    assert _refusals(caplog, "not_a_miner")


def test_dialed_peer_presenting_another_address_is_refused(authority: Authority) -> None:
    async def go() -> None:
        async with cluster(authority) as c:
            a, b, d = c.add("a"), c.add("b"), c.add("d")
            await c.start(b)
            await c.start(d)
            # a believes b listens where d actually does.
            await c.start(a, {b.address: ("127.0.0.1", d.t.listen_port)})
            await eventually(lambda: a.t.stats()["refused_address_mismatch"] >= 1)
            assert a.t.connected_peers() == frozenset()
            assert d.t.stats()["refused_by_peer"] >= 1

    run(go())


def test_miner_removed_at_runtime_is_evicted_and_refused_on_reconnect(authority: Authority) -> None:
    async def go() -> None:
        async with cluster(authority) as c:
            a, b = c.add("a"), c.add("b")
            await c.start(a)
            await c.start(b, c.dial_map("a"))
            await a.t.wait_connected([b.address], 5)
            # Only a's view changes: b keeps believing it is a miner and keeps dialing.
            b_view = set(c.miners)
            b.t._allowed = lambda: b_view
            c.miners.discard(b.address)
            assert a.t.revalidate() == 1
            await eventually(lambda: a.t.stats()["refused_not_a_miner"] >= 1)
            assert a.t.connected_peers() == frozenset()
            assert a.t.stats()["connections_evicted"] == 1
            assert not a.t.send(b.address, b"not for you")
            # Readmitted: the next dial gets through again.
            c.miners.add(b.address)
            await a.t.wait_connected([b.address], 5)

    run(go())


def test_periodic_revalidation_evicts_without_being_asked(authority: Authority) -> None:
    async def go() -> None:
        async with cluster(authority) as c:
            a, b = c.add("a"), c.add("b")
            await c.start(a)
            await c.start(b, c.dial_map("a"))
            await a.t.wait_connected([b.address], 5)
            c.miners.discard(b.address)
            await eventually(lambda: a.t.stats()["connections_evicted"] == 1)
            assert b.address not in a.t.connected_peers()

    run(go())


def test_oversized_frame_closes_the_connection_and_is_counted(
    authority: Authority, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        async with cluster(authority) as c:
            a = c.add("a")
            rogue = c.add("rogue")  # a miner that misbehaves on the wire
            await c.start(a)
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", a.t.listen_port, ssl=rogue.identity.client_context()
            )
            hello, _ = await read_envelope(reader, 1 << 20)
            assert hello.kind is Kind.HELLO
            assert Hello.decode(hello.payload).max_frame_size == FAST.max_frame_size
            writer.write(
                Envelope(Kind.HELLO, payload=Hello(PROTOCOL_VERSION, 1 << 20).encode()).frame()
            )
            await a.t.wait_connected([rogue.address], 5)
            writer.write(LENGTH.pack(FAST.max_frame_size + 1) + b"\x04\x01" + b"\0" * 100)
            goodbye, _ = await read_envelope(reader, 1 << 20)
            assert goodbye.kind is Kind.GOODBYE
            assert b"frame too large" in goodbye.payload
            assert await reader.read() == b""  # then the connection is closed
            writer.close()
            await eventually(lambda: rogue.address not in a.t.connected_peers())
            assert a.t.stats()["oversized_frames"] == 1

    with caplog.at_level(logging.WARNING, logger="node.net"):
        run(go())
    assert any("frame too large" in r.getMessage() for r in caplog.records)


def test_silent_peer_is_disconnected_after_the_idle_timeout(authority: Authority) -> None:
    quick = replace(FAST, ping_interval=0.05, idle_timeout=0.3)

    async def go() -> None:
        async with cluster(authority, quick) as c:
            a, mute = c.add("a"), c.add("mute")
            await c.start(a)
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", a.t.listen_port, ssl=mute.identity.client_context()
            )
            await read_envelope(reader, 1 << 20)
            writer.write(
                Envelope(Kind.HELLO, payload=Hello(PROTOCOL_VERSION, 1 << 20).encode()).frame()
            )
            await a.t.wait_connected([mute.address], 5)
            # mute never answers a's pings: a link that is up but dead
            await eventually(lambda: mute.address not in a.t.connected_peers(), timeout=3)
            frames = []
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                while True:
                    frames.append((await read_envelope(reader, 1 << 20))[0])
            assert frames[-1].kind is Kind.GOODBYE and b"idle" in frames[-1].payload
            assert any(f.kind is Kind.PING for f in frames)
            writer.close()

    run(go())


def test_peer_speaking_another_protocol_version_is_refused(authority: Authority) -> None:
    async def go() -> None:
        async with cluster(authority) as c:
            a, future = c.add("a"), c.add("future")
            await c.start(a)
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", a.t.listen_port, ssl=future.identity.client_context()
            )
            assert (await read_envelope(reader, 1 << 20))[0].kind is Kind.HELLO
            writer.write(Envelope(Kind.HELLO, payload=Hello(99, 1 << 20).encode()).frame())
            goodbye, _ = await read_envelope(reader, 1 << 20)
            assert (goodbye.kind, goodbye.payload) == (Kind.GOODBYE, b"protocol_error")
            writer.close()
            assert a.t.stats()["refused_protocol_error"] == 1
            assert a.t.connected_peers() == frozenset()

    run(go())


def test_reconnects_after_the_peer_restarts(authority: Authority) -> None:
    async def go() -> None:
        async with cluster(authority) as c:
            a, b = c.add("a"), c.add("b")
            await c.start(a)
            await c.start(b, c.dial_map("a"))
            await a.t.wait_connected([b.address], 5)
            a.t.update_peers(c.dial_map("b"))
            port = b.t.listen_port
            await b.t.close()
            await eventually(lambda: b.address not in a.t.connected_peers())
            a.t.send(b.address, b"queued while b was down")
            await asyncio.sleep(0.3)  # a's dialer fails and backs off meanwhile
            assert a.t.stats()["dial_failures"] >= 1
            await c.start(b, port=port)  # b comes back knowing nobody: a must redial
            await a.t.wait_connected([b.address], 5)
            assert await b.inbox.next() == (
                a.address,
                Channel.CONSENSUS,
                b"queued while b was down",
            )
            b.t.send(a.address, b"back")
            assert (await a.inbox.next())[2] == b"back"

    run(go())


def test_request_gets_its_response_and_remote_errors_surface(authority: Authority) -> None:
    async def serve(peer: Address, channel: int, payload: bytes) -> bytes:
        if payload == b"missing":
            raise NotFound("no such blob")
        if payload == b"crash":
            raise RuntimeError("bug in handler")
        await asyncio.sleep(0.01 * (payload[0] % 3))  # answers out of order
        return payload[::-1]

    async def go() -> None:
        async with cluster(authority) as c:
            a, b = c.add("a"), c.add("b")
            await c.start(a)
            await c.start(b, c.dial_map("a"), on_request=serve)
            await a.t.wait_connected([b.address], 5)
            replies = await asyncio.gather(
                *(a.t.request(b.address, bytes([i, 1, 2]), Channel.BLOBS) for i in range(10))
            )
            assert replies == [bytes([2, 1, i]) for i in range(10)]
            with pytest.raises(RemoteError) as info:
                await a.t.request(b.address, b"missing")
            assert info.value.remote_type == "NotFound"
            with pytest.raises(RemoteError, match="InternalError"):
                await a.t.request(b.address, b"crash")
            with pytest.raises(RemoteError, match="NotFound"):  # a serves no requests
                await b.t.request(a.address, b"anything")
            stats = a.t.stats()
            assert stats["requests_sent"] == 12 and stats["requests_failed"] == 2
            assert stats["pending_requests"] == 0
            assert b.t.stats()["handler_errors"] == 1

    run(go())


def test_request_times_out_when_the_peer_does_not_answer(authority: Authority) -> None:
    async def slow(peer: Address, channel: int, payload: bytes) -> bytes:
        await asyncio.sleep(0.4)
        return b"too late"

    async def go() -> None:
        async with cluster(authority) as c:
            a, b = c.add("a"), c.add("b")
            await c.start(a)
            await c.start(b, c.dial_map("a"), on_request=slow)
            await a.t.wait_connected([b.address], 5)
            with pytest.raises(RequestTimeout):
                await a.t.request(b.address, b"q", timeout=0.2)
            assert isinstance(RequestTimeout("x"), TimeoutError)
            await eventually(lambda: a.t.stats()["responses_unmatched"] == 1, timeout=3)
            assert a.t.stats()["requests_timed_out"] == 1

    run(go())


def test_pending_request_fails_fast_when_the_connection_is_lost(authority: Authority) -> None:
    async def never(peer: Address, channel: int, payload: bytes) -> bytes:
        await asyncio.sleep(60)
        return b""

    async def go() -> None:
        async with cluster(authority) as c:
            a, b = c.add("a"), c.add("b")
            await c.start(a)
            await c.start(b, c.dial_map("a"), on_request=never)
            await a.t.wait_connected([b.address], 5)
            pending = asyncio.create_task(a.t.request(b.address, b"q", timeout=30))
            await asyncio.sleep(0.1)
            await b.t.close()
            with pytest.raises(PeerUnavailable):
                await asyncio.wait_for(pending, 5)

    run(go())


def test_sends_are_validated(authority: Authority) -> None:
    async def go() -> None:
        async with cluster(authority) as c:
            a, stranger = c.add("a"), c.add("stranger", miner=False)
            b = c.add("b")
            await c.start(a)
            with pytest.raises(InvalidInput):
                a.t.send(a.address, b"self")
            with pytest.raises(InvalidInput):
                a.t.send(b.address, b"x" * FAST.max_frame_size)
            with pytest.raises(InvalidInput):
                a.t.send(b.address, b"x", channel=0)
            with pytest.raises(InvalidInput):
                a.t.send(b"short", b"x")
            assert not a.t.send(stranger.address, b"x")
            assert a.t.stats()["frames_dropped_not_allowed"] == 1
            with pytest.raises(PeerUnavailable):
                await a.t.request(stranger.address, b"x")
            await a.t.close()
            with pytest.raises(PeerUnavailable):
                a.t.send(b.address, b"x")

    run(go())


def test_full_queue_drops_the_oldest_frames_while_the_peer_is_away(authority: Authority) -> None:
    small = replace(FAST, max_queue_frames=5)

    async def go() -> None:
        async with cluster(authority, small) as c:
            a, b = c.add("a"), c.add("b")
            await c.start(a)
            for i in range(12):
                assert a.t.send(b.address, bytes([i]))
            assert a.t.stats()["frames_dropped"] == 7
            assert a.t.stats()["queued_frames"] == 5
            await c.start(b, c.dial_map("a"))
            got = [(await b.inbox.next())[2] for _ in range(5)]
            assert got == [bytes([i]) for i in range(7, 12)]

    run(go())


def test_identity_must_match_the_configured_address(authority: Authority) -> None:
    address, identity = authority.identity("a")
    other, _ = authority.identity("b")
    from node.net import PeerTransport

    async def noop(peer: Address, channel: int, payload: bytes) -> None:
        return None

    with pytest.raises(InvalidInput, match="bound to"):
        PeerTransport(other, identity, "127.0.0.1", 0, {}, lambda: {address}, noop)


def test_close_stops_everything_it_started(authority: Authority) -> None:
    async def go() -> None:
        async with cluster(authority) as c:
            a, b = c.add("a"), c.add("b")
            await c.start(a)
            await c.start(b, c.dial_map("a"))
            await a.t.wait_connected([b.address], 5)
            before = asyncio.all_tasks()
            await a.t.close()
            await b.t.close()
            leftover = [t for t in asyncio.all_tasks() - {asyncio.current_task()} if not t.done()]
            assert not [t for t in leftover if t.get_name().startswith("net-")], before

    run(go())
