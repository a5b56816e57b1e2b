"""Per-miner configuration: one TOML file per miner, written by ``twinchain init``.

Example (paths are relative to the file's own directory)::

    [node]
    name = "node-0"
    data_dir = "node-0/data"
    genesis = "genesis.json"
    tick_ms = 50                      # one consensus tick

    [keys]
    validator_keystore = "keys/node-0.json"
    password_file = "passwords/node-0.txt"   # or password_env = "TWINCHAIN_PASSWORD"

    [tls]
    ca_cert = "ca/ca.pem"
    cert = "node-0/tls.pem"
    key = "node-0/tls.key"

    [p2p]
    listen = "127.0.0.1:30300"
    max_frame_bytes = 16777216
    [p2p.peers]                       # validator address -> host:port
    "0x1234…" = "127.0.0.1:30301"

    [rpc]
    listen = "127.0.0.1:8545"
    auth_secret_file = "auth.secret"  # consortium-wide: tokens work at every miner
    max_body_bytes = 10485760

    [log]
    json = false
    level = "INFO"
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from node.errors import InvalidInput


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return value


HostPort = Annotated[str, Field(description="host:port")]


def split_host_port(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8545"`` -> ``("127.0.0.1", 8545)``."""
    host, _, port = value.rpartition(":")
    return host, int(port)


class NodeSection(_Section):
    """Identity and storage of the miner."""

    name: str
    data_dir: Path
    genesis: Path
    tick_ms: int = Field(default=50, ge=1, le=10_000)


class KeysSection(_Section):
    """Where the validator key is and how to unlock it."""

    validator_keystore: Path
    password_file: Path | None = None
    password_env: str | None = None


class TlsSection(_Section):
    """The miner's TLS identity and the consortium CA."""

    ca_cert: Path
    cert: Path
    key: Path


class P2pSection(_Section):
    """Peer transport."""

    listen: HostPort
    peers: dict[str, HostPort] = Field(default_factory=dict)
    max_frame_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)

    _check_listen = field_validator("listen")(_host_port)

    @field_validator("peers")
    @classmethod
    def _check_peers(cls, value: dict[str, str]) -> dict[str, str]:
        for address, endpoint in value.items():
            if not (address.startswith("0x") and len(address) == 42):
                raise ValueError(f"peer key must be a 0x-address, got {address!r}")
            _host_port(endpoint)
        return value


class RpcSection(_Section):
    """JSON-RPC / REST endpoint."""

    listen: HostPort
    auth_secret_file: Path
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)

    _check_listen = field_validator("listen")(_host_port)


class LogSection(_Section):
    """Logging."""

    json_format: bool = Field(default=False, alias="json")
    level: str = "INFO"


class NodeConfig(_Section):
    """A miner's whole configuration (paths already resolved against the file's dir)."""

    node: NodeSection
    keys: KeysSection
    tls: TlsSection
    p2p: P2pSection
    rpc: RpcSection
    log: LogSection = Field(default_factory=LogSection)
    source: Path | None = None

    def resolved(self, base: Path) -> NodeConfig:
        """Copy with every relative path made absolute against ``base``."""

        def fix(section: BaseModel) -> BaseModel:
            updates = {
                k: (base / v if isinstance(v, Path) and not v.is_absolute() else v)
                for k, v in section.__dict__.items()
            }
            return section.model_copy(update=updates)

        return self.model_copy(
            update={
                "node": fix(self.node),
                "keys": fix(self.keys),
                "tls": fix(self.tls),
                "rpc": fix(self.rpc),
            }
        )


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate a miner's TOML file; raises InvalidInput with the reason."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InvalidInput(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path}: not valid TOML: {exc}") from exc
    try:
        config = NodeConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{path}: {where}: {first['msg']}") from exc
    return config.resolved(path.parent.resolve()).model_copy(update={"source": path})
