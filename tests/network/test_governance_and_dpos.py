"""Validator-set changes through governance, and a DPoS network of real processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from contracts import MEMBERSHIP_ADDRESS, ProposalAction, Role, load_artifact
from node import pki
from node.consensus.certificate import CommitCertificate
from node.consensus.types import ValidatorSet
from tests.network.harness import Network, free_port_block, rpc, running_network

pytestmark = pytest.mark.timeout(900)
EPOCH = 10


def _set_epoch_length(net: Network, length: int) -> None:
    genesis = json.loads(net.layout.genesis.read_text())
    genesis["consensus"]["epoch_length"] = length
    net.layout.genesis.write_text(json.dumps(genesis, indent=2))


def _add_miner_identity(net: Network) -> tuple[str, Path]:
    """Key, TLS certificate and config of a fifth miner (not in genesis)."""
    root = net.layout.root
    address, keystore = pki.new_account_keystore("test-password", kdf="pbkdf2", iterations=2)
    pki.write_keystore(root / "keys" / "node-4.json", keystore)
    (root / "passwords" / "node-4.txt").write_text("test-password")
    ca_key = pki.read_private_key(root / "ca" / "ca.key")
    ca = pki.read_certificate(net.layout.ca_cert)
    key, cert = pki.issue_node_certificate(ca_key, ca, "node-4", address)
    (root / "node-4" / "data").mkdir(parents=True)
    pki.write_private_key(root / "node-4" / "tls.key", key)
    pki.write_certificate(root / "node-4" / "tls.pem", cert)
    base = free_port_block(2)
    peers = "\n".join(f'"{m.address}" = "{m.p2p}"' for m in net.layout.miners)
    config = root / "node-4.toml"
    config.write_text(
        f"""[node]
name = "node-4"
data_dir = "node-4/data"
genesis = "genesis.json"
tick_ms = 50
[keys]
validator_keystore = "keys/node-4.json"
password_file = "passwords/node-4.txt"
[tls]
ca_cert = "ca/ca.pem"
cert = "node-4/tls.pem"
key = "node-4/tls.key"
[p2p]
listen = "127.0.0.1:{base}"
[p2p.peers]
{peers}
[rpc]
listen = "127.0.0.1:{base + 1}"
auth_secret_file = "auth.secret"
"""
    )
    return "0x" + bytes(address).hex(), config


def _transact(net: Network, i: int, sender: str, contract: Any, fn: str, *args: Any) -> Any:
    acct = net.account(sender)
    w3 = net.web3(i, sender)
    c = w3.eth.contract(address=contract.address, abi=contract.abi)
    tx = getattr(c.functions, fn)(*args).build_transaction(
        {
            "from": acct.address,
            "nonce": w3.eth.get_transaction_count(acct.address),
            "gas": 2_000_000,
            "maxFeePerGas": 0,
            "maxPriorityFeePerGas": 0,
            "chainId": net.layout.chain_id,
        }
    )
    h = w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(h, timeout=60, poll_latency=0.2)
    assert receipt.status == 1, f"{fn} reverted"
    return receipt


def test_miner_added_by_admin_proposal_joins_at_an_epoch_boundary(tmp_path: Path) -> None:
    net = Network.create(tmp_path / "net", nodes=4)
    _set_epoch_length(net, EPOCH)
    new_address, new_config = _add_miner_identity(net)
    try:
        net.start_all()
        net.wait_height(1, timeout=90)
        w3 = net.web3(0)
        membership = w3.eth.contract(
            address=Web3.to_checksum_address(MEMBERSHIP_ADDRESS),
            abi=load_artifact("Membership").abi,
        )
        receipt = _transact(
            net,
            0,
            "admin-0",
            membership,
            "propose",
            int(ProposalAction.GRANT_ROLE),
            Web3.to_checksum_address(new_address),
            int(Role.MINER),
        )
        proposal_id = (
            membership.events.ProposalCreated().process_receipt(receipt)[0].args.proposal_id
        )
        granted = _transact(net, 1, "admin-1", membership, "approve", proposal_id)
        assert membership.functions.hasRole(
            Web3.to_checksum_address(new_address), int(Role.MINER)
        ).call()
        # the set that includes it is read at the first boundary after the grant
        effective_epoch = granted.blockNumber // EPOCH + 2
        # start the new miner: it is refused until the set is final, then catches up
        from node.config import load_config

        net.layout = net.layout  # (layout unchanged; the fifth miner is managed by hand)
        import subprocess
        import sys

        log = open(tmp_path / "node-4.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "registry.cli", "node", "start", "--config", str(new_config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            rpc_url = "http://" + load_config(new_config).rpc.listen
            net.wait_height(effective_epoch * EPOCH + 3, timeout=180)
            token = net.token(0, "auditor-0")
            vset = rpc(net.url(0), "twin_getValidatorSet", [hex(effective_epoch)], token)["result"]
            assert new_address in [m.lower() for m in vset["members"]]
            before = rpc(net.url(0), "twin_getValidatorSet", [hex(effective_epoch - 1)], token)[
                "result"
            ]
            assert new_address not in [m.lower() for m in before["members"]]
            # blocks of the new epoch carry certificates valid for the five-member set
            cert = rpc(
                net.url(0), "twin_getCommitCertificate", [hex(effective_epoch * EPOCH + 1)], token
            )["result"]
            members = tuple(bytes.fromhex(m[2:]) for m in vset["members"])
            CommitCertificate.decode(bytes.fromhex(cert["seal"][2:])).verify(
                net.layout.chain_id,
                ValidatorSet(effective_epoch, members),  # type: ignore[arg-type]
            )
            # the new miner caught up and agrees
            import httpx

            target = max(net.heights().values())
            net.wait_for(
                "new miner caught up",
                lambda: int(httpx.get(rpc_url + "/status", timeout=3).json()["height"]) >= target,
                120,
            )
            h = target
            new_hash = rpc(rpc_url, "eth_getBlockByNumber", [hex(h), False], token)["result"][
                "hash"
            ]
            assert (
                new_hash
                == rpc(net.url(0), "eth_getBlockByNumber", [hex(h), False], token)["result"]["hash"]
            )
        finally:
            proc.terminate()
            proc.wait(20)
    finally:
        net.stop_all()


def test_dpos_network_commits_registry_transactions_and_survives_a_killed_producer(
    tmp_path: Path,
) -> None:
    with running_network(tmp_path / "net", nodes=4, engine="dpos") as net:
        w3 = net.web3(2, "publisher-0")
        registry = net.registry(w3)
        acct = net.account("publisher-0")
        data = b"dpos dataset"
        digest = net.upload(2, data)
        fn = registry.functions.registerDataset(
            "dpos-ds", digest, len(data), "application/octet-stream", b"\x00" * 32
        )
        tx = fn.build_transaction(
            {
                "from": acct.address,
                "nonce": 0,
                "gas": 1_000_000,
                "maxFeePerGas": 0,
                "maxPriorityFeePerGas": 0,
                "chainId": net.layout.chain_id,
            }
        )
        h = w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(h, timeout=60, poll_latency=0.2)
        assert receipt.status == 1
        status = net.status(0)
        assert status is not None and status["engine"] == "dpos"
        net.kill(1)
        before = max(net.heights([0, 2, 3]).values())
        net.wait_height(before + 4, [0, 2, 3], timeout=120)
        net.start(1)
        net.wait_height(max(net.heights([0, 2, 3]).values()) + 1, timeout=120)
        common = min(net.heights().values())
        assert len({net.web3(i).eth.get_block(common).hash for i in range(4)}) == 1
