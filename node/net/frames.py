"""Wire format between miners: length-prefixed frames carrying a small envelope.

Inside the mutual-TLS stream every unit is a *frame*::

    frame    := length:u32be  envelope            1 + 1 + 8 <= length <= max_frame_size
    envelope := kind:u8  channel:u8  request_id:u64be  payload:bytes

``length`` counts the envelope only (not its own four bytes). A receiver reads the four
length bytes first and closes the connection, without reading further, if ``length``
exceeds its ``max_frame_size``: so a peer can never make us buffer more than that.

``kind`` says what the frame is; :data:`KIND_RULES` (a table, not scattered ifs) says which
``channel`` and ``request_id`` each kind may carry:

=========  =======  ==========  ====================================================
kind       channel  request_id  payload
=========  =======  ==========  ====================================================
HELLO      0        0           :class:`Hello` (protocol version, max frame size)
GOODBYE    0        0           UTF-8 reason, then the sender closes
PING       0        0           empty; keeps the connection alive
MESSAGE    1..255   0           application bytes (consensus message, sync, blob...)
REQUEST    1..255   >= 1        application bytes; the peer answers with the same id
RESPONSE   1..255   >= 1        the answer to REQUEST ``request_id``
ERROR      1..255   >= 1        :class:`ErrorBody` — the peer's handler failed
=========  =======  ==========  ====================================================

``channel`` lets the daemon multiplex independent streams over one connection;
:class:`Channel` names the ones TwinChain uses, any value 1..255 is legal. Channel 0 is
reserved for the transport's own control frames.

Each side opens with HELLO and waits for the other's HELLO before anything else; a side
that refuses the peer sends GOODBYE with the reason instead and closes.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from enum import IntEnum

from node.net.errors import FrameTooLarge, ProtocolViolation

PROTOCOL_VERSION = 1
"""Bumped on any incompatible change of the envelope or of the control frames."""

LENGTH = struct.Struct(">I")
HEADER = struct.Struct(">BBQ")
MIN_ENVELOPE = HEADER.size
MAX_REQUEST_ID = 2**64 - 1


class Kind(IntEnum):
    """What a frame is (first envelope byte)."""

    HELLO = 1
    GOODBYE = 2
    PING = 3
    MESSAGE = 4
    REQUEST = 5
    RESPONSE = 6
    ERROR = 7


class Channel(IntEnum):
    """Channels TwinChain multiplexes over one peer connection."""

    CONTROL = 0
    CONSENSUS = 1
    SYNC = 2
    BLOBS = 3


@dataclass(frozen=True)
class _Rule:
    control: bool  # channel must be 0 (else 1..255)
    request: bool  # request_id must be >= 1 (else 0)


KIND_RULES: dict[Kind, _Rule] = {
    Kind.HELLO: _Rule(control=True, request=False),
    Kind.GOODBYE: _Rule(control=True, request=False),
    Kind.PING: _Rule(control=True, request=False),
    Kind.MESSAGE: _Rule(control=False, request=False),
    Kind.REQUEST: _Rule(control=False, request=True),
    Kind.RESPONSE: _Rule(control=False, request=True),
    Kind.ERROR: _Rule(control=False, request=True),
}


@dataclass(frozen=True)
class Envelope:
    """One decoded frame. Construction validates it against :data:`KIND_RULES`."""

    kind: Kind
    channel: int = 0
    request_id: int = 0
    payload: bytes = b""

    def __post_init__(self) -> None:
        rule = KIND_RULES[self.kind]
        if rule.control != (self.channel == Channel.CONTROL) or not 0 <= self.channel <= 255:
            raise ProtocolViolation(f"{self.kind.name} frame on channel {self.channel}")
        if rule.request != (self.request_id != 0) or not 0 <= self.request_id <= MAX_REQUEST_ID:
            raise ProtocolViolation(f"{self.kind.name} frame with request id {self.request_id}")

    def encode(self) -> bytes:
        """The envelope bytes (without the length prefix)."""
        return HEADER.pack(self.kind, self.channel, self.request_id) + self.payload

    def frame(self) -> bytes:
        """The complete frame: length prefix and envelope."""
        body = self.encode()
        return LENGTH.pack(len(body)) + body

    @classmethod
    def decode(cls, body: bytes) -> Envelope:
        """Parse envelope bytes; raises :class:`ProtocolViolation` if malformed."""
        if len(body) < MIN_ENVELOPE:
            raise ProtocolViolation(f"envelope of {len(body)} bytes is shorter than its header")
        kind_raw, channel, request_id = HEADER.unpack_from(body)
        try:
            kind = Kind(kind_raw)
        except ValueError as exc:
            raise ProtocolViolation(f"unknown frame kind {kind_raw}") from exc
        return cls(kind, channel, request_id, bytes(body[MIN_ENVELOPE:]))


def frame_size(payload_len: int) -> int:
    """Envelope length (what ``max_frame_size`` bounds) for a payload of ``payload_len``."""
    return MIN_ENVELOPE + payload_len


async def read_envelope(reader: asyncio.StreamReader, max_frame_size: int) -> tuple[Envelope, int]:
    """Read one frame; return the envelope and the number of bytes consumed.

    Raises :class:`FrameTooLarge` before reading the body if the declared length exceeds
    ``max_frame_size``, :class:`ProtocolViolation` on a malformed envelope, and
    :class:`asyncio.IncompleteReadError` if the stream ends mid-frame.
    """
    (length,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
    if length > max_frame_size:
        raise FrameTooLarge(length, max_frame_size)
    body = await reader.readexactly(length)
    return Envelope.decode(body), LENGTH.size + length


# ---------------------------------------------------------------------------
# Control payloads

_HELLO = struct.Struct(">HI")


@dataclass(frozen=True)
class Hello:
    """First frame each side sends after the TLS handshake."""

    version: int
    max_frame_size: int

    def encode(self) -> bytes:
        """``version:u16be max_frame_size:u32be``."""
        return _HELLO.pack(self.version, self.max_frame_size)

    @classmethod
    def decode(cls, payload: bytes) -> Hello:
        """Inverse of :meth:`encode`; :class:`ProtocolViolation` if malformed."""
        if len(payload) != _HELLO.size:
            raise ProtocolViolation(f"HELLO payload of {len(payload)} bytes")
        version, max_frame = _HELLO.unpack(payload)
        if max_frame < MIN_ENVELOPE:
            raise ProtocolViolation(f"HELLO announces max frame size {max_frame}")
        return cls(version, max_frame)


_ERROR_TYPE = struct.Struct(">B")


@dataclass(frozen=True)
class ErrorBody:
    """Payload of an ERROR frame: ``type_len:u8 type:utf8 message:utf8``."""

    error_type: str
    message: str

    def encode(self) -> bytes:
        """Serialise, truncating the type name to 255 bytes."""
        name = self.error_type.encode()[:255]
        return _ERROR_TYPE.pack(len(name)) + name + self.message.encode()

    @classmethod
    def decode(cls, payload: bytes) -> ErrorBody:
        """Inverse of :meth:`encode`; undecodable text is replaced, never fatal."""
        if not payload:
            raise ProtocolViolation("empty ERROR payload")
        n = payload[0]
        if len(payload) < 1 + n:
            raise ProtocolViolation("truncated ERROR payload")
        name = payload[1 : 1 + n].decode(errors="replace")
        return cls(name, payload[1 + n :].decode(errors="replace"))
