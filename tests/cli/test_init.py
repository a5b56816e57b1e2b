"""`twinchain init`: the layout a network starts from, and the options it refuses."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from eth_account import Account

from node import pki
from node.chain.genesis import build_genesis, load_genesis
from node.config import load_config
from node.errors import InvalidInput
from node.init import (
    NETWORK_FILE,
    AccountInfo,
    MinerInfo,
    NetworkLayout,
    init_network,
    load_network,
)
from tests.cli.conftest import CHAIN_ID, twinchain


def test_every_miner_config_loads_and_names_every_other_miner_as_a_peer(
    network: NetworkLayout,
) -> None:
    assert [m.name for m in network.miners] == ["node-0", "node-1", "node-2", "node-3"]
    for miner in network.miners:
        config = load_config(miner.config)
        assert config.node.name == miner.name
        assert config.node.genesis == network.genesis
        assert config.node.data_dir == miner.data_dir and miner.data_dir.is_dir()
        assert config.keys.validator_keystore == miner.keystore
        assert config.keys.password_file == miner.password_file
        assert config.tls.ca_cert == network.ca_cert
        assert (config.tls.cert, config.tls.key) == (miner.tls_cert, miner.tls_key)
        assert config.rpc.auth_secret_file == network.auth_secret
        assert (config.p2p.listen, config.rpc.listen) == (miner.p2p, miner.rpc)
        others = {m.address.lower(): m.p2p for m in network.miners if m is not miner}
        assert {a.lower(): e for a, e in config.p2p.peers.items()} == others


def test_ports_are_sequential_and_distinct(network: NetworkLayout) -> None:
    p2p = [int(m.p2p.rpartition(":")[2]) for m in network.miners]
    rpc = [int(m.rpc.rpartition(":")[2]) for m in network.miners]
    assert p2p == list(range(p2p[0], p2p[0] + 4))
    assert rpc == list(range(rpc[0], rpc[0] + 4))
    assert not set(p2p) & set(rpc)


def test_genesis_lists_validators_admins_roles_and_funds_everybody(
    network: NetworkLayout,
) -> None:
    genesis = load_genesis(network.genesis)
    assert genesis.chain_id == CHAIN_ID == network.chain_id
    assert genesis.consensus.engine == "pbft"
    assert genesis.consensus.committee_size == 4
    assert [_hex(v) for v in genesis.validators] == [m.address.lower() for m in network.miners]
    admins = network.accounts_with_role("ADMIN")
    assert [_hex(a) for a in genesis.admins] == [a.address.lower() for a in admins]
    assert genesis.admin_threshold == 2 and len(admins) == 3
    roles = {_hex(a): bits for a, bits in genesis.roles}
    expected_roles = {"TWIN": 4, "PUBLISHER": 8, "AUDITOR": 16}
    assert roles == {
        a.address.lower(): expected_roles[a.role] for a in network.accounts if a.role != "ADMIN"
    }
    assert [a.name for a in network.accounts_with_role("TWIN")] == ["twin-0", "twin-1"]
    funded = {_hex(a) for a, wei in genesis.balances if wei > 0}
    everybody = {m.address.lower() for m in network.miners}
    everybody |= {a.address.lower() for a in network.accounts}
    assert funded == everybody


def test_genesis_builds_with_the_predeployed_contracts(network: NetworkLayout) -> None:
    state = build_genesis(load_genesis(network.genesis))
    assert state.header.height == 0 and state.header.chain_id == CHAIN_ID


def test_tls_certificates_are_signed_by_the_ca_and_bound_to_their_validator(
    network: NetworkLayout,
) -> None:
    ca = pki.read_certificate(network.ca_cert)
    ca_key = pki.read_private_key(network.ca_cert.with_name("ca.key"))
    assert ca_key.public_key() == ca.public_key()
    for miner in network.miners:
        cert = pki.read_certificate(miner.tls_cert)
        cert.verify_directly_issued_by(ca)
        assert pki.validator_address_of(cert) == pki.parse_address(miner.address)
        key = pki.read_private_key(miner.tls_key)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.public_key() == cert.public_key()


def test_keystores_unlock_with_their_password_files_and_match_genesis(
    network: NetworkLayout,
) -> None:
    genesis = load_genesis(network.genesis)
    entries: list[MinerInfo | AccountInfo] = [*network.miners, *network.accounts]
    for entry in entries:
        password = pki.read_password(entry.password_file, None)
        key = pki.load_keystore(entry.keystore, password)
        assert Account.from_key(key).address == entry.address
    assert {_hex(v) for v in genesis.validators} == {m.address.lower() for m in network.miners}
    passwords = {pki.read_password(m.password_file, None) for m in network.miners}
    assert len(passwords) == 4  # random, one per key


def test_secrets_are_readable_by_the_owner_only(network: NetworkLayout) -> None:
    secret_files = [network.auth_secret, network.ca_cert.with_name("ca.key")]
    for miner in network.miners:
        secret_files += [miner.keystore, miner.password_file, miner.tls_key]
    for account in network.accounts:
        secret_files += [account.keystore, account.password_file]
    for path in secret_files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert len(bytes.fromhex(network.auth_secret.read_text().strip())) == 32


def test_network_json_is_relative_and_loads_back(network: NetworkLayout) -> None:
    doc = json.loads((network.root / NETWORK_FILE).read_text())
    assert doc["chain_id"] == CHAIN_ID and doc["engine"] == "pbft"
    assert doc["miners"][0]["config"] == "node-0.toml"
    assert doc["miners"][0]["rpc_url"] == network.miners[0].rpc_url
    assert {a["role"] for a in doc["accounts"]} == {"ADMIN", "TWIN", "PUBLISHER", "AUDITOR"}
    assert load_network(network.root) == network


def test_dpos_network_with_a_shared_password(tmp_path: Path) -> None:
    password_file = tmp_path / "pw.txt"
    password_file.write_text("correct horse\n")
    code, output = twinchain(
        "init", "--out", tmp_path / "net", "--nodes", "3", "--consensus", "dpos",
        "--twins", "0", "--publishers", "0", "--auditors", "0", "--admins", "1/1",
        "--password-file", password_file, "--fast-keys", "--json",
    )  # fmt: skip
    assert code == 0, output
    summary = json.loads(output)
    assert summary["engine"] == "dpos" and len(summary["miners"]) == 3
    layout = load_network(tmp_path / "net")
    genesis = load_genesis(layout.genesis)
    assert genesis.consensus.engine == "dpos" and genesis.consensus.committee_size == 3
    # A producer must propose its heartbeat block before its slot ends.
    assert genesis.consensus.timeout("empty_block", 0) < genesis.consensus.timeout("slot", 0)
    assert genesis.admin_threshold == 1 and not genesis.roles
    entries: list[MinerInfo | AccountInfo] = [*layout.miners, *layout.accounts]
    for entry in entries:
        assert pki.read_password(entry.password_file, None) == "correct horse"


def test_base_port_fixes_p2p_and_rpc_ports(tmp_path: Path) -> None:
    code, output = twinchain(
        "init", "--out", tmp_path / "net", "--nodes", "2", "--twins", "0",
        "--base-port", "47000", "--fast-keys",
    )  # fmt: skip
    assert code == 0, output
    layout = load_network(tmp_path / "net")
    assert [m.p2p for m in layout.miners] == ["127.0.0.1:47000", "127.0.0.1:47001"]
    assert [m.rpc_url for m in layout.miners] == [
        "http://127.0.0.1:47100",
        "http://127.0.0.1:47101",
    ]


def test_init_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    code, output = twinchain("init", "--out", tmp_path, "--nodes", "1", "--fast-keys")
    assert code == 2
    assert "is not empty" in output
    assert [p.name for p in tmp_path.iterdir()] == ["precious.txt"]


def test_init_fills_an_existing_empty_directory(tmp_path: Path) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    code, output = twinchain("init", "--out", target, "--nodes", "1", "--twins", "0", "--fast-keys")
    assert code == 0, output
    assert (target / NETWORK_FILE).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]  # no staging left


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "0"], "'--nodes': Input should be greater than or equal to 1"),
        (["--nodes", "65"], "'--nodes': Input should be less than or equal to 64"),
        (["--admins", "3/2"], "need 1 <= K <= M, got 3/2"),
        (["--admins", "0/2"], "need 1 <= K <= M, got 0/2"),
        (["--admins", "two"], "expected K/M (e.g. 2/3), got 'two'"),
        (["--consensus", "foo"], "'foo' is not one of 'pbft', 'dpos'"),
        (["--twins", "-1"], "'--twins': Input should be greater than or equal to 0"),
        (["--base-port", "65534"], "are not all valid ports"),
        (["--password-env", "TWINCHAIN_TEST_UNSET_VARIABLE"], "is not set"),
    ],
)
def test_bad_options_exit_2_with_a_precise_message_and_write_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "net"
    code, output = twinchain("init", "--out", out, "--fast-keys", *args)
    assert code == 2, output
    assert message in " ".join(output.replace("│", " ").split())
    assert list(tmp_path.iterdir()) == []


def test_a_failure_midway_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise InvalidInput("simulated failure")

    monkeypatch.setattr(pki, "issue_node_certificate", refuse)
    with pytest.raises(InvalidInput, match="simulated failure"):
        init_network(tmp_path / "net", nodes=2, twins=0, scrypt_n=2**4)
    assert list(tmp_path.iterdir()) == []


def test_automatic_ports_skip_a_busy_one(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        layout = init_network(
            tmp_path / "net", nodes=2, twins=0, scrypt_n=2**4, base_p2p_port=None,
            base_rpc_port=None, chain_id=7,
        )  # fmt: skip
        used = {int(e.rpartition(":")[2]) for m in layout.miners for e in (m.p2p, m.rpc)}
        assert port not in used


def _hex(address: bytes) -> str:
    return "0x" + address.hex()
