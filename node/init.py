"""``twinchain init``: lay out a whole consortium network in one directory.

Theory of operation
-------------------
:func:`init_network` validates every option first, then builds the network in a
temporary sibling directory and renames it into place, so a failure leaves nothing
behind and a half-written network never exists. The layout (``N`` miners, here 2)::

    DIR/
      network.json          machine-readable summary (read by ``twinchain up``, the demo)
      genesis.json          chain id, consensus, validators, admins, roles, balances
      auth.secret           0600, 32 random bytes (hex): the consortium's token secret
      node-0.toml           one config per miner (node.config.NodeConfig)
      node-1.toml
      ca/ca.pem  ca/ca.key  the consortium CA (key 0600)
      node-0/tls.pem        TLS certificate bound to node-0's validator address
      node-0/tls.key        0600
      node-0/data/          the miner's data directory
      keys/node-0.json      encrypted Ethereum keystores (0600): miners, admin-j,
      keys/admin-0.json     twin-j, publisher-j, auditor-j
      passwords/node-0.txt  0600, one per keystore

Every path written into the TOML files and ``network.json`` is relative to ``DIR``, so
the directory can be moved or copied to the edge servers as a whole.

Password files are a convenience for local networks: they sit next to the keystores
they unlock. A production operator deletes ``passwords/`` after distributing the keys
and sets ``password_env = "TWINCHAIN_PASSWORD"`` in each miner's ``[keys]`` section
instead of ``password_file``.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, Literal

from eth_utils.address import to_checksum_address

from node import pki
from node.chain.genesis import MAX_ADMINS, MAX_MEMBERS, MAX_VALIDATORS, parse_genesis
from node.config import load_config, split_host_port
from node.errors import Conflict, InvalidInput, NotFound

__all__ = [
    "DEFAULT_P2P_PORT",
    "DEFAULT_RPC_PORT",
    "FAST_SCRYPT_N",
    "MEMBER_ROLES",
    "NETWORK_FILE",
    "AccountInfo",
    "MinerInfo",
    "NetworkLayout",
    "add_member_key",
    "endpoint_in_use",
    "init_network",
    "load_network",
]

NETWORK_FILE: Final = "network.json"
DEFAULT_P2P_PORT: Final = 30300
DEFAULT_RPC_PORT: Final = 8545
#: scrypt cost for throwaway local networks: ~20x cheaper than eth-account's 2**18.
FAST_SCRYPT_N: Final = 2**14
#: Roles a non-miner account may be created for (MINER needs a TLS identity as well).
MEMBER_ROLES: Final = ("ADMIN", "TWIN", "PUBLISHER", "AUDITOR")
#: Wei every genesis account starts with (validators too: DPoS delegates stake it).
GENESIS_BALANCE: Final = 10**6 * 10**18
#: Genesis consensus timeouts, in ticks (names read by node.replica).
GENESIS_TIMEOUTS: Final = {"request": 20, "max": 320, "slot": 10, "confirm": 40}
#: Ticks a proposer waits for transactions before an empty (heartbeat) block. Under DPoS
#: it must be well inside a slot: at the replica's default (request // 2 = one whole
#: slot) the producer's slot ends first and a network without transactions never
#: leaves height 0.
EMPTY_BLOCK_TICKS: Final = {"pbft": 10, "dpos": 4}
EPOCH_LENGTH: Final = 100
CHECKPOINT_INTERVAL: Final = 10

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_PRIVATE_FILE: Final = 0o600
_PRIVATE_DIR: Final = 0o700
_LAYOUT_VERSION: Final = 1

Progress = Callable[[str], None]
"""Called with a short description before each slow step (keystore encryption)."""


# ---------------------------------------------------------------------------
# The layout


@dataclass(frozen=True)
class MinerInfo:
    """One miner of the network; paths are absolute."""

    name: str
    address: str  # EIP-55
    p2p: str  # host:port
    rpc: str  # host:port
    config: Path
    keystore: Path
    password_file: Path
    tls_cert: Path
    tls_key: Path
    data_dir: Path
    dir: Path  # node-i/: also holds node.log and node.pid under `twinchain up`

    @property
    def rpc_url(self) -> str:
        """The miner's JSON-RPC/REST base URL."""
        return f"http://{self.rpc}"


@dataclass(frozen=True)
class AccountInfo:
    """A member account (not a miner); paths are absolute.

    ``in_genesis`` is False for keys added after ``init``: their role still has to be
    granted on chain by k-of-n admins.
    """

    role: str
    name: str
    address: str  # EIP-55
    keystore: Path
    password_file: Path
    in_genesis: bool = True


@dataclass(frozen=True)
class NetworkLayout:
    """What :func:`init_network` wrote; ``network.json`` is its JSON form."""

    root: Path
    chain_id: int
    engine: str
    genesis: Path
    ca_cert: Path
    auth_secret: Path
    miners: tuple[MinerInfo, ...]
    accounts: tuple[AccountInfo, ...]

    def accounts_with_role(self, role: str) -> list[AccountInfo]:
        """The accounts created for ``role`` (``"TWIN"``, ``"ADMIN"``, ...)."""
        return [a for a in self.accounts if a.role == role.upper()]

    def to_json(self) -> dict[str, Any]:
        """The ``network.json`` document; paths relative to :attr:`root`."""

        def rel(path: Path) -> str:
            return path.relative_to(self.root).as_posix()

        return {
            "version": _LAYOUT_VERSION,
            "chain_id": self.chain_id,
            "engine": self.engine,
            "genesis": rel(self.genesis),
            "ca_cert": rel(self.ca_cert),
            "auth_secret": rel(self.auth_secret),
            "miners": [
                {
                    "name": m.name,
                    "address": m.address,
                    "p2p": m.p2p,
                    "rpc": m.rpc,
                    "rpc_url": m.rpc_url,
                    "config": rel(m.config),
                    "keystore": rel(m.keystore),
                    "password_file": rel(m.password_file),
                    "tls_cert": rel(m.tls_cert),
                    "tls_key": rel(m.tls_key),
                    "data_dir": rel(m.data_dir),
                    "dir": rel(m.dir),
                }
                for m in self.miners
            ],
            "accounts": [
                {
                    "role": a.role,
                    "name": a.name,
                    "address": a.address,
                    "keystore": rel(a.keystore),
                    "password_file": rel(a.password_file),
                    "in_genesis": a.in_genesis,
                }
                for a in self.accounts
            ],
        }


def load_network(directory: str | Path) -> NetworkLayout:
    """Read ``DIR/network.json`` back into a :class:`NetworkLayout` with absolute paths.

    Raises :class:`NotFound` when the directory holds no network, :class:`InvalidInput`
    when the summary is malformed.
    """
    root = Path(directory).resolve()
    path = root / NETWORK_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFound(f"{path}: no such file (run `twinchain init` first)") from None
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{path}: cannot read the network summary: {exc}") from exc
    try:
        if doc["version"] != _LAYOUT_VERSION:
            raise InvalidInput(f"{path}: unsupported layout version {doc['version']!r}")
        miners = tuple(
            MinerInfo(
                name=m["name"],
                address=m["address"],
                p2p=m["p2p"],
                rpc=m["rpc"],
                config=root / m["config"],
                keystore=root / m["keystore"],
                password_file=root / m["password_file"],
                tls_cert=root / m["tls_cert"],
                tls_key=root / m["tls_key"],
                data_dir=root / m["data_dir"],
                dir=root / m["dir"],
            )
            for m in doc["miners"]
        )
        accounts = tuple(
            AccountInfo(
                role=a["role"],
                name=a["name"],
                address=a["address"],
                keystore=root / a["keystore"],
                password_file=root / a["password_file"],
                in_genesis=bool(a.get("in_genesis", True)),
            )
            for a in doc["accounts"]
        )
        return NetworkLayout(
            root=root,
            chain_id=int(doc["chain_id"]),
            engine=str(doc["engine"]),
            genesis=root / doc["genesis"],
            ca_cert=root / doc["ca_cert"],
            auth_secret=root / doc["auth_secret"],
            miners=miners,
            accounts=accounts,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"{path}: malformed network summary: {exc!r}") from exc


# ---------------------------------------------------------------------------
# init


@dataclass(frozen=True)
class _Plan:
    """Validated options of one init run."""

    nodes: int
    engine: str
    members: tuple[tuple[str, str], ...]  # (role, name), admins first
    admin_threshold: int
    chain_id: int
    timestamp: int
    p2p_ports: tuple[int, ...]
    rpc_ports: tuple[int, ...]
    host: str
    password: str | None
    scrypt_n: int | None


def init_network(
    out_dir: str | Path,
    *,
    nodes: int = 4,
    consensus: Literal["pbft", "dpos"] | str = "pbft",
    twins: int = 5,
    publishers: int = 1,
    auditors: int = 1,
    admins: tuple[int, int] = (2, 3),
    chain_id: int | None = None,
    base_p2p_port: int | None = None,
    base_rpc_port: int | None = None,
    host: str = "127.0.0.1",
    password: str | None = None,
    scrypt_n: int | None = None,
    timestamp: int | None = None,
    progress: Progress | None = None,
) -> NetworkLayout:
    """Create a complete network in ``out_dir`` (which must be missing or empty).

    ``admins`` is ``(k, m)``: ``m`` admin accounts, ``k`` approvals per admin action.
    ``chain_id`` defaults to a random id in 100000..2**31 (pass one for reproducible
    layouts). Miner ``i`` listens for peers on ``base_p2p_port + i`` and serves RPC on
    ``base_rpc_port + i``; without a base, the first block of free ports on ``host`` at
    or above 30300 (P2P) and 8545 (RPC) is taken. ``password`` is used for every
    keystore (random per key otherwise); ``scrypt_n`` lowers the keystore KDF cost
    (:data:`FAST_SCRYPT_N` for throwaway networks; eth-account's 2**18 by default).

    Raises :class:`InvalidInput` on a bad option or a non-empty ``out_dir``; nothing is
    written then.
    """
    root = Path(out_dir).absolute()
    _check_target(root)
    plan = _plan(
        nodes=nodes,
        engine=consensus,
        counts={"TWIN": twins, "PUBLISHER": publishers, "AUDITOR": auditors},
        admins=admins,
        chain_id=chain_id,
        base_p2p_port=base_p2p_port,
        base_rpc_port=base_rpc_port,
        host=host,
        password=password,
        scrypt_n=scrypt_n,
        timestamp=timestamp,
    )
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.init-{secrets.token_hex(4)}"
    staging.mkdir(mode=_PRIVATE_DIR)
    try:
        _write_network(staging, plan, progress or (lambda _: None))
        _check_target(root)  # someone may have written there meanwhile
        try:
            os.rename(staging, root)  # replaces an empty directory atomically
        except OSError as exc:
            raise InvalidInput(f"{root}: cannot move the new network into place: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_network(root)  # the summary as written, with its final paths


def _check_target(root: Path) -> None:
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        raise InvalidInput(f"{root} exists and is not a directory")
    if root.is_dir() and any(root.iterdir()):
        raise InvalidInput(f"{root} is not empty; choose a new or empty directory")


def _plan(
    *,
    nodes: int,
    engine: str,
    counts: dict[str, int],
    admins: tuple[int, int],
    chain_id: int | None,
    base_p2p_port: int | None,
    base_rpc_port: int | None,
    host: str,
    password: str | None,
    scrypt_n: int | None,
    timestamp: int | None,
) -> _Plan:
    """Check every option; nothing touches the disk before this passes."""
    if not 1 <= nodes <= MAX_VALIDATORS:
        raise InvalidInput(f"--nodes must be between 1 and {MAX_VALIDATORS}, got {nodes}")
    if engine not in ("pbft", "dpos"):
        raise InvalidInput(f"--consensus must be 'pbft' or 'dpos', got {engine!r}")
    k, m = admins
    if not 1 <= m <= MAX_ADMINS:
        raise InvalidInput(f"--admins K/M: M must be between 1 and {MAX_ADMINS}, got {m}")
    if not 1 <= k <= m:
        raise InvalidInput(f"--admins K/M: need 1 <= K <= M, got {k}/{m}")
    for role, count in counts.items():
        if count < 0:
            raise InvalidInput(f"--{role.lower()}s must be >= 0, got {count}")
    total = nodes + m + sum(counts.values())
    if total > MAX_MEMBERS:
        raise InvalidInput(f"{total} accounts in genesis, at most {MAX_MEMBERS}")
    if chain_id is not None and not 1 <= chain_id < 2**63:
        raise InvalidInput(f"--chain-id must be between 1 and 2**63-1, got {chain_id}")
    if password is not None and not password:
        raise InvalidInput("the keystore password must not be empty")
    if scrypt_n is not None and (scrypt_n < 2 or scrypt_n & (scrypt_n - 1)):
        raise InvalidInput(f"scrypt n must be a power of two >= 2, got {scrypt_n}")
    if not host or any(c.isspace() or c in "/[]\"'" for c in host):
        raise InvalidInput(f"not a host name or IPv4 address: {host!r}")
    p2p = _ports(host, base_p2p_port, DEFAULT_P2P_PORT, nodes, "P2P", avoid=())
    rpc = _ports(host, base_rpc_port, DEFAULT_RPC_PORT, nodes, "RPC", avoid=p2p)
    if set(p2p) & set(rpc):
        raise InvalidInput(f"P2P ports {_span(p2p)} overlap RPC ports {_span(rpc)}")
    members = [("ADMIN", f"admin-{j}") for j in range(m)]
    for role, count in counts.items():
        members += [(role, f"{role.lower()}-{j}") for j in range(count)]
    return _Plan(
        nodes=nodes,
        engine=engine,
        members=tuple(members),
        admin_threshold=k,
        chain_id=chain_id if chain_id is not None else 100_000 + secrets.randbelow(2**31),
        timestamp=int(time.time()) if timestamp is None else timestamp,
        p2p_ports=p2p,
        rpc_ports=rpc,
        host=host,
        password=password,
        scrypt_n=scrypt_n,
    )


def _ports(
    host: str, base: int | None, default: int, count: int, what: str, avoid: Sequence[int]
) -> tuple[int, ...]:
    if base is not None:
        if base < 1 or base + count - 1 > 65535:
            raise InvalidInput(f"{what} ports {base}..{base + count - 1} are not all valid ports")
        return tuple(range(base, base + count))
    start = default
    while start + count - 1 <= 65535:
        block = range(start, start + count)
        busy = [p for p in block if p in avoid or not _port_free(host, p)]
        if not busy:
            return tuple(block)
        start = busy[-1] + 1
    raise InvalidInput(f"no {count} consecutive free {what} ports on {host} above {default}")


def endpoint_in_use(endpoint: str) -> bool:
    """Whether ``host:port`` is known to be taken by a listening socket on this machine."""
    host, port = split_host_port(endpoint)
    return not _port_free(host, port)


def _port_free(host: str, port: int) -> bool:
    """False only when the port is known to be taken on ``host``."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # As the miners' servers do: a port left in TIME_WAIT by a stopped miner is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        return exc.errno != errno.EADDRINUSE  # a non-local host: we cannot tell
    return True


def _span(ports: Sequence[int]) -> str:
    return f"{ports[0]}..{ports[-1]}"


def _write_network(root: Path, plan: _Plan, progress: Progress) -> NetworkLayout:
    """Write every file of the layout under ``root`` (the staging directory)."""
    for sub in ("ca", "keys", "passwords"):
        (root / sub).mkdir(mode=_PRIVATE_DIR)
    ca_key, ca_cert = pki.create_ca(f"TwinChain consortium CA {plan.chain_id}")
    pki.write_private_key(root / "ca" / "ca.key", ca_key)
    pki.write_certificate(root / "ca" / "ca.pem", ca_cert)
    pki.write_file_atomic(
        root / "auth.secret", (secrets.token_bytes(32).hex() + "\n").encode(), _PRIVATE_FILE
    )

    validators: list[tuple[str, str]] = []  # (name, EIP-55 address)
    for i in range(plan.nodes):
        name = f"node-{i}"
        progress(f"validator key {name}")
        address = _new_key(root, name, plan.password, plan.scrypt_n)
        validators.append((name, address))
        node_dir = root / name
        node_dir.mkdir(mode=_PRIVATE_DIR)
        (node_dir / "data").mkdir(mode=_PRIVATE_DIR)
        dns, ips = _certificate_names(plan.host)
        tls_key, tls_cert = pki.issue_node_certificate(
            ca_key, ca_cert, name, address, dns_names=dns, ip_addresses=ips
        )
        pki.write_private_key(node_dir / "tls.key", tls_key)
        pki.write_certificate(node_dir / "tls.pem", tls_cert)

    accounts: list[AccountInfo] = []
    for role, name in plan.members:
        progress(f"{role.lower()} key {name}")
        address = _new_key(root, name, plan.password, plan.scrypt_n)
        accounts.append(
            AccountInfo(role, name, address, _keystore(root, name), _password_file(root, name))
        )

    genesis = _genesis_document(plan, [a for _, a in validators], accounts)
    parse_genesis(genesis)  # refuse to write a founding document the nodes would refuse
    pki.write_file_atomic(
        root / "genesis.json", (json.dumps(genesis, indent=2) + "\n").encode(), 0o644
    )

    miners: list[MinerInfo] = []
    for i, (name, address) in enumerate(validators):
        peers = {
            a: f"{plan.host}:{plan.p2p_ports[j]}" for j, (_, a) in enumerate(validators) if j != i
        }
        miner = MinerInfo(
            name=name,
            address=address,
            p2p=f"{plan.host}:{plan.p2p_ports[i]}",
            rpc=f"{plan.host}:{plan.rpc_ports[i]}",
            config=root / f"{name}.toml",
            keystore=_keystore(root, name),
            password_file=_password_file(root, name),
            tls_cert=root / name / "tls.pem",
            tls_key=root / name / "tls.key",
            data_dir=root / name / "data",
            dir=root / name,
        )
        miner.config.write_text(_node_toml(miner, root, peers), encoding="utf-8")
        load_config(miner.config)  # the daemon must accept what we wrote
        miners.append(miner)

    layout = NetworkLayout(
        root=root,
        chain_id=plan.chain_id,
        engine=plan.engine,
        genesis=root / "genesis.json",
        ca_cert=root / "ca" / "ca.pem",
        auth_secret=root / "auth.secret",
        miners=tuple(miners),
        accounts=tuple(accounts),
    )
    _write_summary(layout)
    return layout


def _certificate_names(host: str) -> tuple[list[str], list[str]]:
    dns, ips = ["localhost"], ["127.0.0.1"]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            dns.append(host)
    else:
        if str(ip) not in ips:
            ips.append(str(ip))
    return dns, ips


def _keystore(root: Path, name: str) -> Path:
    return root / "keys" / f"{name}.json"


def _password_file(root: Path, name: str) -> Path:
    return root / "passwords" / f"{name}.txt"


def _new_key(root: Path, name: str, password: str | None, scrypt_n: int | None) -> str:
    """Create keystore + password file for ``name``; return the EIP-55 address."""
    secret = password if password is not None else secrets.token_urlsafe(24)
    address, keystore = pki.new_account_keystore(secret, iterations=scrypt_n)
    pki.write_file_atomic(_password_file(root, name), (secret + "\n").encode(), _PRIVATE_FILE)
    pki.write_keystore(_keystore(root, name), keystore)
    return to_checksum_address(address)


def _genesis_document(
    plan: _Plan, validators: list[str], accounts: list[AccountInfo]
) -> dict[str, Any]:
    admins = [a.address for a in accounts if a.role == "ADMIN"]
    roles = {a.address: [a.role] for a in accounts if a.role != "ADMIN"}
    funded = [*validators, *(a.address for a in accounts)]
    return {
        "chain_id": plan.chain_id,
        "timestamp": plan.timestamp,
        "gas_limit": 30_000_000,
        "consensus": {
            "engine": plan.engine,
            "epoch_length": EPOCH_LENGTH,
            "checkpoint_interval": CHECKPOINT_INTERVAL,
            "committee_size": plan.nodes,
            "max_votes": plan.nodes,
            "unstake_delay": EPOCH_LENGTH,
            "timeouts": {**GENESIS_TIMEOUTS, "empty_block": EMPTY_BLOCK_TICKS[plan.engine]},
        },
        "validators": validators,
        "admins": admins,
        "admin_threshold": plan.admin_threshold,
        "roles": roles,
        "balances": {address: str(GENESIS_BALANCE) for address in funded},
    }


def _toml_str(value: str) -> str:
    # A JSON string literal is a valid TOML basic string.
    return json.dumps(value)


def _node_toml(miner: MinerInfo, root: Path, peers: dict[str, str]) -> str:
    def rel(path: Path) -> str:
        return _toml_str(path.relative_to(root).as_posix())

    lines = [
        f"# TwinChain miner {miner.name} (validator {miner.address}).",
        "# Paths are relative to this file's directory. Start with:",
        f"#   twinchain node start --config {miner.config.name}",
        "",
        "[node]",
        f"name = {_toml_str(miner.name)}",
        f"data_dir = {rel(miner.data_dir)}",
        'genesis = "genesis.json"',
        "tick_ms = 50",
        "",
        "[keys]",
        f"validator_keystore = {rel(miner.keystore)}",
        "# Production: delete the password file and use an environment variable instead:",
        '#   password_env = "TWINCHAIN_PASSWORD"',
        f"password_file = {rel(miner.password_file)}",
        "",
        "[tls]",
        'ca_cert = "ca/ca.pem"',
        f"cert = {rel(miner.tls_cert)}",
        f"key = {rel(miner.tls_key)}",
        "",
        "[p2p]",
        f"listen = {_toml_str(miner.p2p)}",
        "",
        "[p2p.peers]  # validator address -> host:port",
        *(f"{_toml_str(a)} = {_toml_str(endpoint)}" for a, endpoint in peers.items()),
        "",
        "[rpc]",
        f"listen = {_toml_str(miner.rpc)}",
        'auth_secret_file = "auth.secret"  # consortium-wide: tokens work at every miner',
        "",
        "[log]",
        "json = false",
        'level = "INFO"',
        "",
    ]
    return "\n".join(lines)


def _write_summary(layout: NetworkLayout) -> None:
    text = json.dumps(layout.to_json(), indent=2) + "\n"
    pki.write_file_atomic(layout.root / NETWORK_FILE, text.encode(), 0o644)


# ---------------------------------------------------------------------------
# Adding a member key to an existing network


def add_member_key(
    directory: str | Path,
    name: str,
    role: str,
    *,
    password: str | None = None,
    scrypt_n: int | None = None,
) -> AccountInfo:
    """Create ``keys/<name>.json`` and ``passwords/<name>.txt`` in a network directory.

    The account is recorded in ``network.json`` with ``in_genesis: false``: it holds no
    role on chain until k-of-n admins grant ``role`` (one of :data:`MEMBER_ROLES`).
    Raises :class:`InvalidInput` on a bad name or role, :class:`Conflict` when the name
    is taken, :class:`NotFound` when ``directory`` holds no network.
    """
    layout = load_network(directory)
    role = role.upper()
    if role not in MEMBER_ROLES:
        raise InvalidInput(f"role must be one of {', '.join(MEMBER_ROLES)}, got {role!r}")
    if not _NAME.match(name):
        raise InvalidInput(
            f"bad key name {name!r}: use lower-case letters, digits, '.', '_' or '-'"
        )
    taken = {m.name for m in layout.miners} | {a.name for a in layout.accounts}
    if name in taken or _keystore(layout.root, name).exists():
        raise Conflict(f"a key named {name!r} already exists in {layout.root}")
    if password is not None and not password:
        raise InvalidInput("the keystore password must not be empty")
    address = _new_key(layout.root, name, password, scrypt_n)
    account = AccountInfo(
        role,
        name,
        address,
        _keystore(layout.root, name),
        _password_file(layout.root, name),
        in_genesis=False,
    )
    _write_summary(replace(layout, accounts=(*layout.accounts, account)))
    return account
