"""Wire format, per-peer queues and backoff: the parts of the transport without sockets."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.net.errors import FrameTooLarge, ProtocolViolation
from node.net.frames import (
    HEADER,
    LENGTH,
    Envelope,
    ErrorBody,
    Hello,
    Kind,
    read_envelope,
)
from node.net.outbox import Backoff, Outbox

APP_KINDS = st.sampled_from([Kind.MESSAGE, Kind.REQUEST, Kind.RESPONSE, Kind.ERROR])


@given(APP_KINDS, st.integers(1, 255), st.integers(1, 2**64 - 1), st.binary(max_size=512))
def test_envelope_round_trips(kind: Kind, channel: int, request_id: int, payload: bytes) -> None:
    rid = 0 if kind is Kind.MESSAGE else request_id
    envelope = Envelope(kind, channel, rid, payload)
    frame = envelope.frame()
    (length,) = LENGTH.unpack_from(frame)
    assert length == len(frame) - LENGTH.size == HEADER.size + len(payload)
    assert Envelope.decode(frame[LENGTH.size :]) == envelope


@pytest.mark.parametrize(
    ("kind", "channel", "request_id"),
    [
        (Kind.MESSAGE, 0, 0),  # application frames never use the control channel
        (Kind.MESSAGE, 1, 5),  # messages carry no request id
        (Kind.REQUEST, 1, 0),  # requests must
        (Kind.PING, 1, 0),  # control frames live on channel 0
        (Kind.HELLO, 0, 1),
    ],
)
def test_envelope_shape_rules_are_enforced(kind: Kind, channel: int, request_id: int) -> None:
    with pytest.raises(ProtocolViolation):
        Envelope(kind, channel, request_id)
    body = HEADER.pack(kind, channel, request_id)
    with pytest.raises(ProtocolViolation):
        Envelope.decode(body)


def test_unknown_kind_and_short_envelope_are_protocol_violations() -> None:
    with pytest.raises(ProtocolViolation, match="unknown frame kind"):
        Envelope.decode(HEADER.pack(99, 1, 0))
    with pytest.raises(ProtocolViolation, match="shorter"):
        Envelope.decode(b"\x04\x01")


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def test_oversized_frame_is_refused_before_its_body_is_read() -> None:
    async def go() -> None:
        reader = _reader(LENGTH.pack(1000) + b"x" * 10)
        with pytest.raises(FrameTooLarge) as info:
            await read_envelope(reader, 999)
        assert (info.value.size, info.value.limit) == (1000, 999)
        assert await reader.read() == b"x" * 10  # body left unread

    asyncio.run(go())


def test_truncated_frame_raises_incomplete_read() -> None:
    async def go() -> None:
        frame = Envelope(Kind.MESSAGE, 1, 0, b"hello").frame()
        with pytest.raises(asyncio.IncompleteReadError):
            await read_envelope(_reader(frame[:-1]), 1 << 20)
        envelope, size = await read_envelope(_reader(frame), 1 << 20)
        assert envelope.payload == b"hello" and size == len(frame)

    asyncio.run(go())


def test_control_payloads_round_trip() -> None:
    assert Hello.decode(Hello(1, 65536).encode()) == Hello(1, 65536)
    with pytest.raises(ProtocolViolation):
        Hello.decode(b"\x00")
    body = ErrorBody("NotFound", "no such blob")
    assert ErrorBody.decode(body.encode()) == body
    with pytest.raises(ProtocolViolation):
        ErrorBody.decode(b"\x09abc")


# --------------------------------------------------------------------------- outbox


def test_full_outbox_drops_the_oldest_frames() -> None:
    outbox = Outbox(max_frames=3, max_bytes=1000)
    dropped = [outbox.put(bytes([i])) for i in range(5)]
    assert dropped == [0, 0, 0, 1, 1]
    assert [outbox.get_nowait() for _ in range(3)] == [b"\x02", b"\x03", b"\x04"]
    assert outbox.get_nowait() is None


def test_outbox_byte_bound_drops_as_many_old_frames_as_needed() -> None:
    outbox = Outbox(max_frames=100, max_bytes=10)
    outbox.put(b"aaaa")
    outbox.put(b"bbbb")
    assert outbox.put(b"cccccccc") == 2
    assert outbox.queued_bytes == 8
    with pytest.raises(ValueError):
        outbox.put(b"x" * 11)


def test_urgent_frames_jump_the_queue() -> None:
    async def go() -> None:
        outbox = Outbox(max_frames=10, max_bytes=100)
        outbox.put(b"data")
        outbox.put_urgent(b"ping")
        assert await outbox.get() == b"ping"
        assert await outbox.get() == b"data"
        waiter = asyncio.create_task(outbox.get())
        await asyncio.sleep(0)
        outbox.put(b"late")
        assert await waiter == b"late"

    asyncio.run(go())


def test_backoff_doubles_with_jitter_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(0.1, 1.0, random.Random(7))
    delays = [backoff.next_delay() for _ in range(8)]
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not lock-step
    backoff.reset()
    assert backoff.next_delay() <= 0.1
