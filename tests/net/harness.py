"""Test harness for the peer transport: a consortium on loopback with real TLS.

Everything runs on 127.0.0.1 with port 0 (the OS picks free ports); every transport a
test starts is closed by :class:`Cluster` even when the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node import pki
from node.consensus.types import Address
from node.net import PeerTransport, TlsIdentity, TransportConfig

FAST = TransportConfig(
    max_frame_size=64 * 1024,
    max_queue_frames=256,
    max_queue_bytes=1024 * 1024,
    connect_timeout=2.0,
    handshake_timeout=2.0,
    backoff_initial=0.02,
    backoff_max=0.2,
    ping_interval=0.1,
    idle_timeout=2.0,
    request_timeout=2.0,
    close_timeout=0.5,
)


def run(coro: Coroutine[Any, Any, None], timeout: float = 20.0) -> None:
    """Run ``coro`` in a fresh event loop, failing the test after ``timeout`` seconds."""
    asyncio.run(asyncio.wait_for(coro, timeout))


class Authority:
    """A consortium CA writing node identities into a directory."""

    def __init__(self, directory: Path, name: str = "consortium") -> None:
        self.directory = directory
        self.name = name
        self.key, self.cert = pki.create_ca(name)
        self.ca_path = directory / f"{name}-ca.pem"
        pki.write_certificate(self.ca_path, self.cert)

    def identity(self, node_name: str, address: bytes | None = None) -> tuple[Address, TlsIdentity]:
        """Issue a node certificate (for a random address unless given)."""
        address = Address(address if address is not None else os.urandom(20))
        key, cert = pki.issue_node_certificate(self.key, self.cert, node_name, address)
        cert_path = self.directory / f"{self.name}-{node_name}.pem"
        key_path = self.directory / f"{self.name}-{node_name}.key"
        pki.write_certificate(cert_path, cert)
        pki.write_private_key(key_path, key)
        return address, TlsIdentity(self.ca_path, cert_path, key_path)


@dataclass
class Inbox:
    """Collects ``on_message`` deliveries."""

    messages: asyncio.Queue[tuple[Address, int, bytes]] = field(default_factory=asyncio.Queue)

    async def __call__(self, peer: Address, channel: int, payload: bytes) -> None:
        await self.messages.put((peer, channel, payload))

    async def next(self, timeout: float = 5.0) -> tuple[Address, int, bytes]:
        return await asyncio.wait_for(self.messages.get(), timeout)


@dataclass
class Member:
    """One miner of a test cluster."""

    name: str
    address: Address
    identity: TlsIdentity
    inbox: Inbox
    transport: PeerTransport | None = None

    @property
    def t(self) -> PeerTransport:
        assert self.transport is not None
        return self.transport


class Cluster:
    """Miners sharing one CA and one (mutable) miner set."""

    def __init__(self, authority: Authority, config: TransportConfig = FAST) -> None:
        self.authority = authority
        self.config = config
        self.members: dict[str, Member] = {}
        self.miners: set[bytes] = set()
        self.started: list[PeerTransport] = []

    def add(self, name: str, *, miner: bool = True) -> Member:
        address, identity = self.authority.identity(name)
        member = Member(name, address, identity, Inbox())
        self.members[name] = member
        if miner:
            self.miners.add(address)
        return member

    async def start(
        self,
        member: Member,
        peers: dict[bytes, tuple[str, int]] | None = None,
        *,
        port: int = 0,
        **kwargs: Any,
    ) -> PeerTransport:
        transport = PeerTransport(
            member.address,
            member.identity,
            "127.0.0.1",
            port,
            peers or {},
            lambda: self.miners,
            member.inbox,
            config=kwargs.pop("config", self.config),
            **kwargs,
        )
        await transport.start()
        member.transport = transport
        self.started.append(transport)
        return transport

    def dial_map(self, *names: str) -> dict[bytes, tuple[str, int]]:
        return {
            self.members[n].address: ("127.0.0.1", self.members[n].t.listen_port) for n in names
        }

    async def close(self) -> None:
        for transport in self.started:
            await transport.close()


@contextlib.asynccontextmanager
async def cluster(authority: Authority, config: TransportConfig = FAST) -> AsyncIterator[Cluster]:
    """A :class:`Cluster` whose transports are all closed on exit."""
    c = Cluster(authority, config)
    try:
        yield c
    finally:
        await c.close()


async def eventually(predicate: Any, timeout: float = 5.0, interval: float = 0.01) -> None:
    """Poll ``predicate()`` until true; AssertionError after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
