"""A Byzantine miner for tests: a stolen identity that equivocates over the real transport.

The adversary is *outside* the product: it takes one miner's validator keystore and TLS
certificate (as an attacker who compromised that edge server would), opens the normal
mutual-TLS connections to the honest miners with :class:`node.net.PeerTransport` — the
same gates any miner passes (consortium CA, validator address in the certificate, miner
set, HELLO) — and broadcasts on the consensus channel, for one slot, two messages signed
by that validator over different digests. The honest miners' engines see two valid
signatures for one ``(engine, kind, height, round)`` and record evidence in their
``consensus.db``. No hook in the miners: stop the real miner first (its slot in the
network is taken over), then run :func:`equivocate`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eth_hash.auto import keccak

from node.config import split_host_port
from node.consensus.messages import EngineId, Kind, SignedMessage, Signer
from node.init import NetworkLayout
from node.net import PeerTransport, TlsIdentity
from node.net.frames import Channel
from node.pki import load_keystore, parse_address, read_password

__all__ = ["Equivocation", "equivocate", "private_key_of", "signer_of"]


@dataclass(frozen=True)
class Equivocation:
    """One offence the adversary committed: two messages for one slot."""

    first: SignedMessage
    second: SignedMessage


def private_key_of(layout: NetworkLayout, miner: int) -> bytes:
    """The validator (and account) key of ``miner``: what the attacker stole."""
    info = layout.miners[miner]
    return load_keystore(info.keystore, read_password(info.password_file, None))


def signer_of(layout: NetworkLayout, miner: int) -> Signer:
    """The stolen key as a consensus signer."""
    return Signer(private_key_of(layout, miner))


def conflicting(
    signer: Signer, chain_id: int, engine: EngineId, kind: Kind, height: int, round_: int
) -> Equivocation:
    """Two messages of ``kind`` for one slot, over two different (made-up) digests."""
    digests = [keccak(f"byzantine {tag} {height} {round_} {kind}".encode()) for tag in "ab"]
    a, b = (signer.sign(chain_id, engine, kind, height, round_, d) for d in digests)
    return Equivocation(a, b)


def equivocate(
    layout: NetworkLayout,
    byzantine: int,
    honest: Sequence[int],
    slots: Sequence[tuple[Kind, int, int]] | Callable[[], Sequence[tuple[Kind, int, int]]],
    until: Callable[[], bool],
    timeout: float = 60.0,
) -> list[Equivocation]:
    """Impersonate miner ``byzantine`` and equivocate in every ``(kind, height, round)``.

    Connects to the ``honest`` miners over mutual TLS with the stolen certificate,
    broadcasts both messages of every slot on the consensus channel, and keeps the
    connections open until ``until()`` holds (checked off the event loop) or ``timeout``
    seconds passed (then raises AssertionError). Returns what was sent.

    ``slots`` may be a callable, evaluated once the connections are up: a slot chosen from
    the chain's head before a slow TLS handshake can be out of the window by then.
    """
    signer = signer_of(layout, byzantine)
    engine = EngineId.PBFT if layout.engine == "pbft" else EngineId.DPOS
    sent: list[Equivocation] = []

    def offences() -> list[Equivocation]:
        chosen = slots() if callable(slots) else slots
        sent.extend(conflicting(signer, layout.chain_id, engine, k, h, r) for k, h, r in chosen)
        return sent

    asyncio.run(_run(layout, byzantine, honest, offences, until, timeout))
    return sent


async def _run(
    layout: NetworkLayout,
    byzantine: int,
    honest: Sequence[int],
    offences: Callable[[], Sequence[Equivocation]],
    until: Callable[[], bool],
    timeout: float,
) -> None:
    me = layout.miners[byzantine]
    address = parse_address(me.address)
    peers: dict[bytes, tuple[str, int]] = {
        bytes(parse_address(layout.miners[i].address)): split_host_port(layout.miners[i].p2p)
        for i in honest
    }
    members = frozenset(parse_address(m.address) for m in layout.miners)
    host, port = split_host_port(me.p2p)

    async def ignore(_peer: bytes, _channel: int, _payload: bytes) -> None:
        return None

    transport = PeerTransport(
        address,
        TlsIdentity(layout.ca_cert, me.tls_cert, me.tls_key),
        host,
        port,
        peers,
        lambda: members,
        ignore,
    )
    async with transport:
        await transport.wait_connected(peers, timeout=timeout)
        chosen = await asyncio.to_thread(offences)
        for offence in chosen:
            transport.broadcast(offence.first.encode(), channel=Channel.CONSENSUS)
            transport.broadcast(offence.second.encode(), channel=Channel.CONSENSUS)
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(until):
            if time.monotonic() > deadline:
                raise AssertionError(f"honest miners recorded no evidence within {timeout}s")
            await asyncio.sleep(0.2)
