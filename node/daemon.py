"""The miner daemon: the asyncio shell around a :class:`~node.replica.Replica`.

Theory of operation
-------------------
One event loop, one thread driving the replica (the engines are single-threaded):

- a *ticker* turns the wall clock into consensus ticks (``[node].tick_ms``);
- the *transport* (mutual TLS 1.3, :mod:`node.net`) puts peer frames into a bounded
  inbox: consensus messages (channel 1), gossiped client transactions (channel 4);
  catch-up requests (channel 2) are answered from the store right away;
- the *consumer* feeds the inbox to the replica;
- after every input the replica drains its ``Ready`` — the hard state is fsynced inside
  :meth:`Replica.drain` — and only then does :meth:`Miner._dispatch` send the messages
  (the persistence contract) and start catch-up fetches;
- the JSON-RPC/REST server (uvicorn) runs in the same loop; its handlers run in worker
  threads and reach the replica only through :class:`~node.view.MinerView`.

SIGTERM/SIGINT stop the loops, close the transport and the stores: a stopped miner
restarts from its store and hard state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import rlp
import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse

from node import pki
from node.artifacts import ArtifactPolicy
from node.auth import AuthService
from node.blobs import ArtifactDigest
from node.chain.block import Block
from node.chain.genesis import load_genesis
from node.chain.tx import decode_transaction
from node.config import NodeConfig, split_host_port
from node.consensus.certificate import CommitCertificate
from node.consensus.engine import CommittedBlock, SyncRequest
from node.consensus.messages import Kind, SignedMessage, Signer
from node.consensus.types import Address, Hash32
from node.errors import InvalidInput, InvalidTransaction, TwinChainError
from node.metrics import MinerMetrics
from node.net import PeerTransport, TlsIdentity
from node.net.frames import Channel
from node.replica import DrainOutput, Replica
from node.rpc.server import create_rpc_app
from node.view import MinerView

log = logging.getLogger("twinchain.daemon")

#: Gossip of client transactions between miners (full mesh: one hop).
TX_CHANNEL = 4
INBOX_LIMIT = 20_000
#: Inbox tags that are never wire channels: catch-up blocks fetched by this miner, and
#: a proposal whose artifacts were fetched before it is stepped.
_DELIVERED = -1
_PREFETCHED = -2
SYNC_TIMEOUT = 10.0

#: Largest piece of a blob one transfer request carries.
BLOB_CHUNK = 4 * 1024 * 1024
#: How long a miner tries to obtain the artifacts of a proposal before voting on it.
ARTIFACT_DEADLINE = 30.0

RouteHook = Callable[[FastAPI, MinerView, AuthService], None]


class JsonFormatter(logging.Formatter):
    """One JSON object per log line (``[log] json = true``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("event", "peer", "reason", "remote", "direction", "detail"):
            if key in record.__dict__:
                entry[key] = str(record.__dict__[key])
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(json_format: bool, level: str) -> None:
    """Root logging for a miner process."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter()
        if json_format
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def encode_blocks(blocks: list[CommittedBlock]) -> bytes:
    """Catch-up answer: RLP ``[[height, hash, payload, certificate], ...]``."""
    return bytes(
        rlp.encode([[b.height, b.block_hash, b.payload, b.certificate.encode()] for b in blocks])
    )


def decode_blocks(data: bytes) -> list[CommittedBlock]:
    """Inverse of :func:`encode_blocks`; raises InvalidInput when malformed."""
    try:
        items = rlp.decode(data)
        return [
            CommittedBlock(
                int.from_bytes(h, "big"), Hash32(bh), bytes(p), CommitCertificate.decode(c)
            )
            for h, bh, p, c in items
        ]
    except (rlp.exceptions.RLPException, ValueError, TypeError) as exc:
        raise InvalidInput(f"malformed catch-up answer: {exc}") from exc


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the miner owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Miner:
    """One miner process's runtime."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        routes: RouteHook | None = None,
        policy: ArtifactPolicy | None = None,
    ) -> None:
        self.config = config
        self.genesis = load_genesis(config.node.genesis)
        password = pki.read_password(config.keys.password_file, config.keys.password_env)
        self.signer = Signer(pki.load_keystore(config.keys.validator_keystore, password))
        self.address = self.signer.address
        self.replica = Replica(self.genesis, config.node.data_dir, self.signer, policy=policy)
        self.metrics = MinerMetrics()
        self._allowed: frozenset[bytes] = frozenset()
        self._refresh_allowed()
        host, port = split_host_port(config.p2p.listen)
        peers: dict[bytes, tuple[str, int]] = {
            pki.parse_address(a): split_host_port(endpoint)
            for a, endpoint in config.p2p.peers.items()
        }
        self.inbox: asyncio.Queue[tuple[int, Any]] = asyncio.Queue(INBOX_LIMIT)
        self.inbox_dropped = 0
        self.transport = PeerTransport(
            self.address,
            TlsIdentity(config.tls.ca_cert, config.tls.cert, config.tls.key),
            host,
            port,
            peers,
            lambda: self._allowed,
            self._on_message,
            on_request=self._on_request,
        )
        self.view = MinerView(
            self.replica,
            config.node.name,
            on_submit=self._on_submit,
            peer_count=lambda: len(self.transport.connected_peers()),
        )
        secret = bytes.fromhex(Path(config.rpc.auth_secret_file).read_text().strip())
        self.auth = AuthService(
            secret,
            lambda a: self.replica.executor.roles_of(a),
            chain_id=self.genesis.chain_id,
            node_name=config.node.name,
        )
        self.app = self._build_app(routes)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._syncing = False
        self._fetching = False
        self._highest_seen = 0
        self.replica.on_commit(self._on_commit)

    # ------------------------------------------------------------------ HTTP

    def _build_app(self, routes: RouteHook | None) -> FastAPI:
        app = create_rpc_app(self.view, self.auth, max_body_bytes=self.config.rpc.max_body_bytes)

        async def status() -> JSONResponse:
            return JSONResponse(self.status())

        async def metrics() -> Response:
            return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")

        app.add_api_route("/status", status, methods=["GET"], include_in_schema=False)
        app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
        if routes is not None:
            routes(app, self.view, self.auth)
        return app

    def status(self) -> dict[str, Any]:
        """What `twinchain node status` shows."""
        s = self.view.consensus_status()
        head = self.replica.store.head()
        return {
            "name": self.config.node.name,
            "address": "0x" + self.address.hex(),
            "engine": s.engine,
            "height": head.height,
            "head_hash": "0x" + head.hash().hex(),
            "round": s.round,
            "epoch": s.epoch,
            "proposer": None if s.proposer is None else "0x" + s.proposer.hex(),
            "round_changes": s.round_changes,
            "finality_lag": s.finality_lag,
            "peers": len(self.transport.connected_peers()),
            "mempool": len(self.replica.mempool),
            "evidence": s.evidence,
            "dropped": dict(s.dropped),
        }

    # ------------------------------------------------------------------ transport

    async def _on_message(self, peer: Address, channel: int, payload: bytes) -> None:
        try:
            self.inbox.put_nowait((channel, payload))
        except asyncio.QueueFull:
            self.inbox_dropped += 1

    async def _on_request(self, peer: Address, channel: int, payload: bytes) -> bytes:
        if channel == Channel.SYNC and len(payload) == 8:
            return encode_blocks(self.replica.committed_blocks(int.from_bytes(payload, "big")))
        if channel == Channel.BLOBS and len(payload) == 40:
            digest, offset = ArtifactDigest(payload[:32]), int.from_bytes(payload[32:], "big")
            size = self.replica.blobs.size(digest)
            if size is None:
                raise InvalidInput(f"blob {digest} not held")
            end = min(size, offset + BLOB_CHUNK)
            return b"".join(self.replica.blobs.read_range(digest, offset, end))
        raise InvalidInput("unknown request")

    async def fetch_artifacts(
        self, wanted: list[tuple[ArtifactDigest, int]], first: Address | None = None
    ) -> bool:
        """Obtain blobs from peers (``first`` first), verified against their digest.

        True when every one is held. Bounded by :data:`ARTIFACT_DEADLINE` per blob."""
        ok = True
        for digest, size in wanted:
            if self.replica.blobs.has(digest):
                continue
            peers = sorted(self.transport.connected_peers())
            if first in peers:
                peers.remove(first)
                peers.insert(0, first)
            try:
                got = await asyncio.wait_for(
                    self._fetch_blob(digest, size, peers), ARTIFACT_DEADLINE
                )
            except TimeoutError:
                got = False
            if got:
                self.replica.wanted.pop(digest, None)
            else:
                log.info("could not obtain artifact %s from peers", digest)
            ok = ok and got
        return ok

    async def _fetch_blob(self, digest: ArtifactDigest, size: int, peers: list[Address]) -> bool:
        for peer in peers:
            try:
                with self.replica.blobs.writer(digest, size) as writer:
                    offset = 0
                    while offset < size:
                        chunk = await self.transport.request(
                            peer, digest.raw + offset.to_bytes(8, "big"), channel=Channel.BLOBS
                        )
                        if not chunk:
                            raise InvalidInput("empty blob chunk")
                        writer.write(chunk)
                        offset += len(chunk)
                    writer.commit()
                return True
            except (TwinChainError, TimeoutError) as exc:
                log.info("blob %s from 0x%s failed: %s", digest, peer.hex(), exc)
        return False

    def _on_submit(self, raw: bytes) -> None:
        """A client transaction was admitted (called from an RPC worker thread)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._gossip, raw)

    def _gossip(self, raw: bytes) -> None:
        self.transport.broadcast(raw, channel=TX_CHANNEL)
        self._dispatch(self.replica.wake())

    # ------------------------------------------------------------------ loops

    async def _ticker(self) -> None:
        interval = self.config.node.tick_ms / 1000
        next_at = time.monotonic()
        while True:
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if time.monotonic() - next_at > 5 * interval:
                next_at = time.monotonic()  # we were stalled: don't burst ticks
            self._dispatch(self.replica.tick())

    async def _consumer(self) -> None:
        while True:
            channel, item = await self.inbox.get()
            try:
                self._dispatch(self._handle(channel, item))
            except TwinChainError as exc:
                log.info("dropped input on channel %d: %s", channel, exc)
            except Exception:
                log.exception("input on channel %d crashed the handler", channel)

    def _handle(self, channel: int, item: Any) -> DrainOutput:
        if channel in (Channel.CONSENSUS, _PREFETCHED):
            try:
                message = SignedMessage.decode(item)
            except ValueError as exc:
                raise InvalidInput(str(exc)) from exc
            self._highest_seen = max(self._highest_seen, message.height)
            if channel == Channel.CONSENSUS and self._needs_prefetch(message):
                asyncio.get_running_loop().create_task(self._prefetch(message, item))
                return DrainOutput()
            return self.replica.step(message)
        if channel == TX_CHANNEL:
            try:
                tx_hash = self.replica.mempool.add(item)
                tx = self.replica.mempool.get(tx_hash)
                missing = [] if tx is None else self.replica.missing_artifacts(tx)
                if missing:
                    asyncio.get_running_loop().create_task(self.fetch_artifacts(missing))
            except InvalidTransaction as exc:
                log.debug("gossiped transaction refused: %s", exc)
            return self.replica.wake()
        if channel == _DELIVERED:  # catch-up blocks fetched by _fetch
            return self.replica.deliver(item)
        raise InvalidInput(f"unexpected channel {channel}")

    def _needs_prefetch(self, message: SignedMessage) -> bool:
        """A proposal whose transactions register artifacts this miner lacks."""
        if self.replica.policy is None or message.kind not in (Kind.PRE_PREPARE, Kind.BLOCK):
            return False
        return bool(self._missing_in(message.payload))

    def _missing_in(self, payload: bytes) -> list[tuple[ArtifactDigest, int]]:
        try:
            block = Block.decode(payload)
        except TwinChainError:
            return []
        missing: list[tuple[ArtifactDigest, int]] = []
        for raw in block.transactions:
            try:
                tx = decode_transaction(raw, self.genesis.chain_id)
            except TwinChainError:
                continue
            missing.extend(self.replica.missing_artifacts(tx))
        return missing

    async def _prefetch(self, message: SignedMessage, raw: bytes) -> None:
        """Fetch a proposal's artifacts (from its proposer first), then step it."""
        await self.fetch_artifacts(self._missing_in(message.payload), first=message.signer)
        await self.inbox.put((_PREFETCHED, raw))

    def _dispatch(self, out: DrainOutput) -> None:
        """Send what a drain produced (its hard state is already durable)."""
        for outbound in out.messages:
            data = outbound.message.encode()
            if outbound.to is None:
                self.transport.broadcast(data, channel=Channel.CONSENSUS)
            elif outbound.to != self.address:
                self.transport.send(outbound.to, data, channel=Channel.CONSENSUS)
        if self.replica.wanted and not self._fetching:
            self._fetching = True
            wanted = list(self.replica.wanted.items())
            task = asyncio.get_running_loop().create_task(self.fetch_artifacts(wanted))
            task.add_done_callback(lambda _: setattr(self, "_fetching", False))
        if out.sync and not self._syncing:
            self._syncing = True
            asyncio.get_running_loop().create_task(self._fetch(out.sync[0]))
        self._publish()

    async def _fetch(self, request: SyncRequest) -> None:
        try:
            connected = sorted(self.transport.connected_peers())
            peers = [request.peer] if request.peer in connected else connected
            for peer in peers:
                assert peer is not None
                try:
                    answer = await self.transport.request(
                        peer,
                        request.from_height.to_bytes(8, "big"),
                        channel=Channel.SYNC,
                        timeout=SYNC_TIMEOUT,
                    )
                    blocks = decode_blocks(answer)
                except (TwinChainError, TimeoutError) as exc:
                    log.info("catch-up from 0x%s failed: %s", peer.hex(), exc)
                    continue
                if blocks:
                    await self.inbox.put((_DELIVERED, blocks))
                    return
        finally:
            self._syncing = False

    def _on_commit(self, block: Block) -> None:
        self.metrics.blocks.inc()
        self.metrics.transactions.inc(len(block.transactions))
        now = time.monotonic()
        for tx_hash in block.tx_hashes:
            admitted = self.view.admitted_at.pop(bytes(tx_hash), None)
            if admitted is not None:
                self.metrics.commit_latency.observe(now - admitted)
        if block.height % self.replica.epoch_length == 0:
            self._refresh_allowed()

    def _refresh_allowed(self) -> None:
        head = self.replica.store.head().height
        epoch = self.replica.epoch_of(head + 1)
        members: set[bytes] = set()
        for e in (epoch, epoch + 1):
            vset = self.replica.validator_set(e)
            if vset is not None:
                members.update(vset.members)
        self._allowed = frozenset(members)

    def _publish(self) -> None:
        status = self.replica.engine.status()
        self.view.publish_status(status, self._highest_seen)
        self.metrics.update(
            status,
            self.replica.store.head().height,
            len(self.replica.mempool),
            len(self.transport.connected_peers()),
            self.transport.stats(),
        )

    # ------------------------------------------------------------------ lifecycle

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set (or SIGTERM/SIGINT), then shut down cleanly."""
        self._loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self._loop.add_signal_handler(sig, stop.set)
        rpc_host, rpc_port = split_host_port(self.config.rpc.listen)
        server = _Server(
            uvicorn.Config(
                self.app,
                host=rpc_host,
                port=rpc_port,
                log_level="warning",
                lifespan="off",
                access_log=False,
            )
        )
        await self.transport.start()
        tasks = [
            asyncio.create_task(self._ticker(), name="ticker"),
            asyncio.create_task(self._consumer(), name="consumer"),
            asyncio.create_task(server.serve(), name="rpc"),
        ]
        log.info(
            "miner %s (0x%s) up: p2p %s, rpc %s, height %d",
            self.config.node.name,
            self.address.hex(),
            self.config.p2p.listen,
            self.config.rpc.listen,
            self.replica.store.head().height,
        )
        try:
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            log.info("miner %s stopping", self.config.node.name)
            server.should_exit = True
            for task in tasks[:2]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.transport.close()
            self.replica.close()
            log.info("miner %s stopped", self.config.node.name)


def run_miner(
    config: NodeConfig,
    *,
    routes: RouteHook | None = None,
    policy: ArtifactPolicy | None = None,
) -> None:
    """Blocking entry point for `twinchain node start`."""
    configure_logging(config.log.json_format, config.log.level)

    async def main() -> None:
        await Miner(config, routes=routes, policy=policy).run()

    asyncio.run(main())
