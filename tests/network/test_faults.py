"""Faults on a real 4-miner network: partitions through a cutting proxy, and chaos
(SIGKILL of random miners, the proposer included, under a steady transaction load).

The default suite runs a short chaos; ``TWINCHAIN_LONG=1`` runs the long one.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.network.harness import Network
from tests.network.proxy import FaultProxy

pytestmark = pytest.mark.timeout(900)


def _route_through_proxies(net: Network) -> dict[tuple[int, int], FaultProxy]:
    """Rewrite every miner's peer list so that i -> j goes through its own proxy."""
    miners = net.layout.miners
    proxies: dict[tuple[int, int], FaultProxy] = {}
    for i, mi in enumerate(miners):
        text = mi.config.read_text()
        for j, mj in enumerate(miners):
            if i == j:
                continue
            host, port = mj.p2p.rsplit(":", 1)
            proxy = FaultProxy((host, int(port))).start()
            proxies[(i, j)] = proxy
            text = re.sub(
                rf'("{mj.address}"\s*=\s*)"127\.0\.0\.1:{port}"',
                rf'\1"127.0.0.1:{proxy.port}"',
                text,
                flags=re.IGNORECASE,
            )
        mi.config.write_text(text)
    return proxies


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Network, dict[tuple[int, int], FaultProxy]]]:
    net = Network.create(tmp_path / "net", nodes=4)
    proxies = _route_through_proxies(net)
    try:
        net.start_all()
        net.wait_height(2, timeout=90)
        yield net, proxies
    finally:
        net.stop_all()
        for p in proxies.values():
            p.close()


def test_split_two_two_commits_nothing_and_resumes_after_healing(
    proxied: tuple[Network, dict[tuple[int, int], FaultProxy]],
) -> None:
    net, proxies = proxied
    side = {0: "a", 1: "a", 2: "b", 3: "b"}
    for (i, j), proxy in proxies.items():
        if side[i] != side[j]:
            proxy.cut()
    time.sleep(2)  # in-flight commits settle
    frozen = net.heights()
    time.sleep(8)
    during = net.heights()
    # with 2 of 4 on each side neither side has a quorum of 3: nothing commits, no fork
    assert max(during.values()) <= max(frozen.values()) + 1, (frozen, during)
    top = min(during.values())
    hashes = {net.web3(i).eth.get_block(top).hash for i in range(4)}
    assert len(hashes) == 1
    for proxy in proxies.values():
        proxy.heal()
    net.wait_height(max(during.values()) + 3, timeout=120)
    common = min(net.heights().values())
    assert len({net.web3(i).eth.get_block(common).hash for i in range(4)}) == 1


def _load(net: Network, rounds: int, seed: int, kill_every: int) -> dict[str, Any]:
    """Send registry transactions round by round; between rounds SIGKILL a random miner
    (sometimes the proposer) and restart the previous victim. Returns what clients saw."""
    rng = random.Random(seed)
    sender = net.account("publisher-0")
    receipts: dict[bytes, int] = {}
    nonce = 0
    down: int | None = None
    for r in range(rounds):
        live = [i for i in range(4) if i != down]
        answering = [i for i in live if net.status(i) is not None]  # a restart takes seconds
        target = rng.choice(answering or live)
        w3 = net.web3(target, "publisher-0")
        registry = net.registry(w3)
        sent = []
        for _ in range(3):
            data = b"chaos %d-%d" % (seed, nonce)
            try:
                digest = net.upload(target, data)
            except Exception:
                break  # the miner went away under us
            fn = registry.functions.registerDataset(
                f"chaos-{seed}-{nonce}",
                digest,
                len(data),
                "application/octet-stream",
                b"\x00" * 32,
            )
            tx = fn.build_transaction(
                {
                    "from": sender.address,
                    "nonce": nonce,
                    "gas": 1_000_000,
                    "maxFeePerGas": 0,
                    "maxPriorityFeePerGas": 0,
                    "chainId": net.layout.chain_id,
                }
            )
            try:
                sent.append(
                    w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
                )
                nonce += 1
            except Exception:
                break
        for h in sent:
            try:
                rec = w3.eth.wait_for_transaction_receipt(h, timeout=60, poll_latency=0.2)
                receipts[bytes(h)] = rec.blockNumber
            except Exception:
                pass  # the client saw no receipt: no promise was made
        if r % kill_every == kill_every - 1:
            if down is not None:
                net.start(down)
            status = net.status(live[0]) or {}
            proposer = str(status.get("proposer", "")).lower()
            candidates = [i for i in range(4) if i in net.procs]
            by_addr = {net.layout.miners[i].address.lower(): i for i in candidates}
            down = (
                by_addr.get(proposer)
                if rng.random() < 0.5 and proposer in by_addr
                else rng.choice(candidates)
            )
            net.kill(down)
    if down is not None:
        net.start(down)
    return {"receipts": receipts, "sent": nonce}


@pytest.mark.parametrize(
    "rounds",
    [
        pytest.param(12, id="short"),
        pytest.param(
            120,
            id="long",
            marks=pytest.mark.skipif(
                os.environ.get("TWINCHAIN_LONG") != "1", reason="long chaos: TWINCHAIN_LONG=1"
            ),
        ),
    ],
)
def test_chaos_kills_lose_no_receipted_transaction_and_miners_converge(
    tmp_path: Path, rounds: int
) -> None:
    net = Network.create(tmp_path / "net", nodes=4)
    try:
        net.start_all()
        net.wait_height(1, timeout=90)
        seen = _load(net, rounds, seed=rounds, kill_every=3)
        assert seen["receipts"], "the load produced no receipts at all"
        net.wait_for("all miners up", lambda: len(net.heights()) == 4, 60)
        target = max(net.heights().values()) + 2
        net.wait_height(target, timeout=180)
        common = min(net.heights().values())
        blocks = [net.web3(i).eth.get_block(common) for i in range(4)]
        assert len({b.hash for b in blocks}) == 1
        assert len({b.stateRoot for b in blocks}) == 1
        w3 = net.web3(0)
        for tx_hash, height in seen["receipts"].items():
            receipt = w3.eth.get_transaction_receipt(tx_hash)
            assert receipt.blockNumber == height and receipt.status == 1
        for i in range(4):
            evidence = net.web3(i).provider.make_request("twin_getEvidence", [])  # type: ignore[arg-type]
            assert evidence.get("result") == [], f"honest miner equivocated: {evidence}"
    finally:
        net.stop_all()
