"""`twinchain demo`: the whole story on a local 4-miner network, end to end.

1. a consortium is initialised (CA, keys, genesis) and four miners start as processes;
2. a publisher registers a dataset of channel measurements and a link-quality model
   pre-trained on it, and points the ``production`` alias at it;
3. for each round: a round opens on ``production``; every twin warm-starts from it
   (downloaded once, verified against the chain), trains on the measurements of its own
   cell (non-IID) and pushes its update — dense, or sparse top-k for every other twin;
   a miner aggregates (FedAvg) and records the result, which every miner recomputes
   before accepting the block; the new global model's accuracy is measured;
4. ``production`` moves to each better version (so the next round starts from it) and
   ends on the best one; an audit summary traces the final
   model back to the dataset and every contributing twin, checks the commit certificate
   of its block, and compares every miner's head.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from node.consensus.certificate import CommitCertificate
from node.consensus.types import ValidatorSet
from node.init import NetworkLayout, init_network
from node.pki import load_keystore, read_password
from registry.client import TwinClient
from registry.fl import save_model
from registry.twin_task import (
    CELLS,
    accuracy,
    global_test_set,
    initial_model,
    measurements,
    train,
)

MODEL = "link-quality"
DATASET = "channel-measurements"
Say = Callable[[str], None]


@dataclass
class DemoResult:
    """What the demo measured (also printed)."""

    accuracies: list[tuple[str, float]] = field(default_factory=list)  # (version, acc)
    production: int = 0  # global version id the alias ends on
    lineage_twins: set[str] = field(default_factory=set)
    lineage_datasets: list[str] = field(default_factory=list)
    heads_agree: bool = False
    certificate_ok: bool = False


@contextmanager
def _network(layout: NetworkLayout, say: Say) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        for miner in layout.miners:
            log = open(miner.dir / "node.log", "ab")  # noqa: SIM115 - owned by the child
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "registry.cli",
                        "node",
                        "start",
                        "--config",
                        str(miner.config),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 180
        for miner in layout.miners:
            while True:
                try:
                    if httpx.get(f"http://{miner.rpc}/status", timeout=2).json()["height"] >= 1:
                        break
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{miner.name} did not start; see {miner.dir}/node.log")
                time.sleep(0.3)
        say(f"[bold]network up[/]: {len(procs)} miners ({layout.engine}), chain {layout.chain_id}")
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def _client(layout: NetworkLayout, name: str, miner: int, cache: Path) -> TwinClient:
    if name.startswith("node-"):
        info: Any = next(m for m in layout.miners if m.name == name)
    else:
        info = next(a for a in layout.accounts if a.name == name)
    key = load_keystore(info.keystore, read_password(info.password_file, None))
    return TwinClient.from_key(f"http://{layout.miners[miner].rpc}", key, cache_dir=cache / name)


def run_demo(
    directory: Path | None = None,
    *,
    twins: int = 5,
    rounds: int = 3,
    samples: int = 600,
    say: Say = print,
) -> DemoResult:
    """Run the demo (in ``directory``, or a temporary one) and return what it measured."""
    if directory is None:
        with tempfile.TemporaryDirectory(prefix="twinchain-demo-") as tmp:
            return run_demo(Path(tmp), twins=twins, rounds=rounds, samples=samples, say=say)
    layout = init_network(
        directory / "network",
        nodes=4,
        consensus="pbft",
        twins=twins,
        password="twinchain-demo",
        scrypt_n=2**10,
    )
    cache = directory / "cache"
    with _network(layout, say):
        return _story(layout, cache, twins, rounds, samples, say)


def _story(
    layout: NetworkLayout, cache: Path, twins: int, rounds: int, samples: int, say: Say
) -> DemoResult:
    result = DemoResult()
    x_test, y_test = global_test_set()
    publisher = _client(layout, "publisher-0", 0, cache)
    aggregator = _client(layout, "node-0", 1, cache)  # a miner closes the rounds
    # -- the publisher's dataset and pre-trained model
    x, y = measurements(CELLS[3], 3000, seed=1)
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    data_path = cache / "pretrain.npz"
    data_path.parent.mkdir(parents=True, exist_ok=True)
    data_path.write_bytes(buf.getvalue())
    dataset = publisher.register_dataset(DATASET, data_path, "application/x-npz")
    say(f"dataset [cyan]{DATASET}[/] v{dataset.version} registered ({dataset.digest})")
    model = train(initial_model(), x, y, epochs=5)
    model_path = cache / "pretrained.safetensors"
    model_path.write_bytes(save_model(model))
    v1 = publisher.register_model(MODEL, model_path, datasets=[f"{DATASET}@1"], alias="production")
    acc = accuracy(model, x_test, y_test)
    result.accuracies.append((f"v{v1.version}", acc))
    say(
        f"model [cyan]{MODEL}[/] v{v1.version} registered, alias production; "
        f"accuracy on all cells {acc:.3f}"
    )
    clients = [_client(layout, f"twin-{i}", i % len(layout.miners), cache) for i in range(twins)]
    best = (acc, v1.id, v1.version)
    for r in range(rounds):
        opened = publisher.open_round(MODEL, "production", min_updates=twins, deadline_blocks=400)
        for i, twin in enumerate(clients):
            base = twin.load_tensors(twin.warm_start(MODEL, "production"))
            cell = CELLS[i % len(CELLS)]
            xi, yi = measurements(cell, samples, seed=100 + 10 * r + i)
            trained = train(base, xi, yi, epochs=2, seed=r)
            sparse = 8 if i % 2 else None
            twin.push_update(opened.id, trained, len(xi), base=base, sparse_k=sparse)
            say(
                f"  round {opened.id}: twin-{i} ({cell.name}) pushed a "
                f"{'sparse top-8' if sparse else 'dense'} update"
            )
        version = aggregator.close_round(opened.id, "fedavg")
        weights = publisher.load_tensors(publisher.warm_start(MODEL, version.version))
        acc = accuracy(weights, x_test, y_test)
        result.accuracies.append((f"v{version.version}", acc))
        say(
            f"round {opened.id} closed on chain: {MODEL} v{version.version} "
            f"(fedavg of {twins} updates), accuracy {acc:.3f}"
        )
        if acc > best[0]:
            best = (acc, version.id, version.version)
            publisher.set_alias(MODEL, "production", version.id)
            say(f"  production -> {MODEL} v{version.version}: the next round warm-starts here")
    # production already follows every improvement, so it ends on the best version
    result.production = publisher.resolve_version(MODEL, "production")
    assert result.production == best[1]
    say(f"production stays on the best version, {MODEL} v{best[2]} (accuracy {best[0]:.3f})")
    _audit(layout, publisher, result.production, result, say)
    return result


def _audit(
    layout: NetworkLayout, client: TwinClient, version_id: int, result: DemoResult, say: Say
) -> None:
    lineage = client.get_json(f"/v1/models/{MODEL}/lineage", ref=str(version_id))
    twins_by_address = {a.address.lower(): a.name for a in layout.accounts}
    result.lineage_twins = {
        twins_by_address.get(str(u["twin"]).lower(), str(u["twin"])) for u in lineage["updates"]
    }
    result.lineage_datasets = [f"{d['name']}@{d['version']}" for d in lineage["datasets"]]
    chain = " <- ".join(
        f"v{v['version']}" for v in sorted(lineage["versions"], key=lambda v: -v["version"])
    )
    say(
        "[bold]audit[/]: lineage " + chain + f" <- datasets {result.lineage_datasets}; "
        f"{len(lineage['rounds'])} rounds, {len(lineage['updates'])} updates from "
        f"{sorted(result.lineage_twins)}"
    )
    record = client.version(version_id)
    height = record.proof.block_height if record.proof else 0
    rpc = f"http://{layout.miners[2].rpc}"
    token = client.sign_in()

    def call(method: str, params: list[Any]) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        return httpx.post(
            rpc, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()["result"]

    cert = call("twin_getCommitCertificate", [hex(height)])
    header = bytes.fromhex(cert["header"][2:])
    epoch = int(cert["epoch"], 16)
    vset = call("twin_getValidatorSet", [hex(epoch)])
    members = tuple(bytes.fromhex(m[2:]) for m in vset["members"])
    certificate = CommitCertificate.decode(bytes.fromhex(cert["seal"][2:]))
    certificate.verify(layout.chain_id, ValidatorSet(epoch, members))  # type: ignore[arg-type]
    from eth_hash.auto import keccak

    result.certificate_ok = keccak(header) == certificate.block_hash
    say(
        f"  block {height} of the production record: commit certificate with "
        f"{len(certificate.signatures)}/{len(members)} signatures verified "
        f"(header hash {'matches' if result.certificate_ok else 'DOES NOT match'})"
    )
    heads = set()
    top = min(
        int(httpx.get(f"http://{m.rpc}/status", timeout=5).json()["height"]) for m in layout.miners
    )
    for m in layout.miners:
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getBlockByNumber",
            "params": [hex(top), False],
        }
        r = httpx.post(
            f"http://{m.rpc}", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).json()
        heads.add(r["result"]["hash"])
    result.heads_agree = len(heads) == 1
    say(f"  all {len(layout.miners)} miners agree on block {top}: {result.heads_agree}")
    say(json.dumps({"accuracy": result.accuracies, "production_version_id": result.production}))
