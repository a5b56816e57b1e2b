"""The twin SDK: sign in, upload artifacts, sign transactions locally, warm-start verified.

Theory of operation
-------------------
A :class:`TwinClient` talks to one miner: the registry REST API under ``/v1`` and the
Ethereum JSON-RPC on ``/`` of the same base URL. The member's key never leaves the
process: the client signs the sign-in challenge (EIP-191) and every transaction itself
(EIP-1559, zero fees, the chain id and nonce asked of the node), and the node only
ever sees signatures.

Writes are *upload, then transaction*: the artifact goes to ``PUT /v1/blobs/{digest}``
(the server checks the SHA-256 while streaming), then the registering transaction to
``POST /v1/transactions?wait=true``; the server's preflight answers a refused one with a
precise status, mapped here to the :mod:`node.errors` classes.

Reads that matter are checked against the chain, not the REST server's word:
:meth:`TwinClient.warm_start` resolves ``name@ref`` and reads the version's digest and
size with ``eth_call`` on the ModelRegistry contract, downloads into a cache keyed by
digest (``<cache>/sha256/<hex>``; partial downloads resume with ``Range`` + ``If-Range``),
re-hashes the bytes, and refuses (:class:`ArtifactMismatch`) anything that does not hash
to the on-chain digest. A cached file is re-hashed before its first use in a process; a
tampered one is discarded and fetched again. After that the client trusts the file while
its fingerprint ``(dev, inode, size, mtime, ctime)`` is the one it verified (kept in
memory only: any write to the file moves its ctime, which no one can set back).

"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import numpy as np
from eth_account import Account
from eth_account.messages import encode_defunct

from contracts import MODEL_REGISTRY_ADDRESS, UpdateKind
from node.blobs import ArtifactDigest, parse_digest
from node.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    TwinChainError,
    Unauthorized,
)
from registry.api.contract import ContractReverted, RegistryReader, encode_call, revert_reason
from registry.fl import aggregate_bytes, encode_dense, encode_sparse, load_model

__all__ = [
    "ArtifactMismatch",
    "Dataset",
    "ModelVersion",
    "Proof",
    "RemoteError",
    "Round",
    "TransactionResult",
    "TwinClient",
    "Update",
    "default_cache_dir",
    "stream_into",
]

log = logging.getLogger("twinchain.client")

CHUNK: Final = 1 << 20
DEFAULT_GAS: Final = 5_000_000
CLOSE_GAS: Final = 12_000_000

#: ``progress(label, done_bytes, total_bytes)`` for uploads and downloads.
Progress = Callable[[str, int, int], None]


class RemoteError(TwinChainError):
    """The node failed on its side (5xx), or could not be reached."""

    caller_fault = False


class ArtifactMismatch(TwinChainError):
    """Downloaded bytes do not hash to the digest recorded on chain: refused."""

    caller_fault = False


def default_cache_dir() -> Path:
    """``$TWINCHAIN_CACHE`` or ``~/.cache/twinchain``."""
    env = os.environ.get("TWINCHAIN_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "twinchain"


# ---------------------------------------------------------------- typed results


@dataclass(frozen=True)
class Proof:
    """Where a record was written on chain."""

    tx_hash: str
    block_height: int
    block_hash: str
    registrant: str

    @classmethod
    def of(cls, data: Mapping[str, Any] | None) -> Proof | None:
        """From the API's ``proof`` object."""
        return None if data is None else cls(**data)


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version (``id`` is the global version id)."""

    id: int
    name: str
    version: int
    digest: ArtifactDigest
    size: int
    format: str
    parents: tuple[int, ...]
    datasets: tuple[int, ...]
    status: str
    aliases: tuple[str, ...]
    round_id: int | None
    registrant: str
    proof: Proof | None

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> ModelVersion:
        """From ``ModelVersionPublic`` JSON."""
        return cls(
            d["id"],
            d["name"],
            d["version"],
            parse_digest(d["digest"]),
            d["size"],
            d["format"],
            tuple(d["parents"]),
            tuple(d["datasets"]),
            d["status"],
            tuple(d["aliases"]),
            d["round_id"],
            d["registrant"],
            Proof.of(d["proof"]),
        )


@dataclass(frozen=True)
class Dataset:
    """A registered dataset version."""

    id: int
    name: str
    version: int
    digest: ArtifactDigest
    size: int
    media_type: str
    registrant: str
    proof: Proof | None

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> Dataset:
        """From ``DatasetPublic`` JSON."""
        return cls(
            d["id"],
            d["name"],
            d["version"],
            parse_digest(d["digest"]),
            d["size"],
            d["media_type"],
            d["registrant"],
            Proof.of(d["proof"]),
        )


@dataclass(frozen=True)
class Update:
    """A twin's training update in a round."""

    id: int
    round_id: int
    twin: str
    digest: ArtifactDigest
    size: int
    samples: int
    kind: str
    proof: Proof | None

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> Update:
        """From ``UpdatePublic`` JSON."""
        return cls(
            d["id"],
            d["round_id"],
            d["twin"],
            parse_digest(d["digest"]),
            d["size"],
            d["samples"],
            d["kind"],
            Proof.of(d["proof"]),
        )


@dataclass(frozen=True)
class Round:
    """A federated round and the updates pushed to it so far."""

    id: int
    model: str
    base_version: int
    min_updates: int
    deadline: int
    status: str
    update_ids: tuple[int, ...]
    strategy: str | None
    included_update_ids: tuple[int, ...]
    result_version: int | None
    proof: Proof | None

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> Round:
        """From ``RoundPublic`` JSON."""
        return cls(
            d["id"],
            d["model"],
            d["base_version"],
            d["min_updates"],
            d["deadline"],
            d["status"],
            tuple(d["update_ids"]),
            d["strategy"],
            tuple(d["included_update_ids"]),
            d["result_version"],
            Proof.of(d["proof"]),
        )


@dataclass(frozen=True)
class TransactionResult:
    """A committed transaction and the registry events it emitted."""

    tx_hash: str
    status: str
    block_height: int | None
    block_hash: str | None
    events: tuple[tuple[str, Mapping[str, Any]], ...]

    def event(self, name: str) -> Mapping[str, Any]:
        """The arguments of the first event called ``name``."""
        for event_name, args in self.events:
            if event_name == name:
                return args
        raise RemoteError(f"transaction {self.tx_hash} emitted no {name} event")


_STATUS_ERRORS: Final[dict[int, type[TwinChainError]]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidInput,
    416: InvalidInput,
    422: InvalidInput,
}


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        message = response.json()["error"]["message"]
    except Exception:  # not our error shape (a proxy, a crash): show the status
        message = f"HTTP {response.status_code} from {response.request.url}"
    cls = _STATUS_ERRORS.get(response.status_code, RemoteError)
    raise cls(str(message))


def stream_into(
    response: httpx.Response,
    out: Any,
    h: Any,
    *,
    limit: int,
    done: int = 0,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write a streamed body to ``out`` and feed it to the hash ``h``, as it arrives
    (no re-chunking); refuse more than ``limit`` bytes in total. Returns the bytes
    written counting ``done`` (already there). The SDK's download loop; the download
    benchmark runs this same function against nginx."""
    for chunk in response.iter_bytes():
        done += len(chunk)
        if done > limit:
            raise ArtifactMismatch(f"the server sent more than the {limit} bytes expected")
        out.write(chunk)
        h.update(chunk)
        if progress is not None:
            progress(done)
    return done


def _fingerprint(path: Path) -> tuple[int, ...] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _file_digest(path: Path) -> ArtifactDigest:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return ArtifactDigest(h.digest())


class TwinClient:
    """A member's session with one miner (see the module docstring). Not thread-safe."""

    def __init__(
        self,
        url: str,
        keystore_path: str | Path | None = None,
        password: str | None = None,
        *,
        private_key: bytes | str | None = None,
        cache_dir: str | Path | None = None,
        progress: Progress | None = None,
        timeout: float = 120.0,
        http: httpx.Client | None = None,
    ) -> None:
        """Connect to the miner at ``url`` (``http://host:port``) as the keystore's
        account (or ``private_key``). Nothing is sent until the first call."""
        if private_key is None:
            if keystore_path is None or password is None:
                raise InvalidInput("give a keystore and its password, or a private key")
            from node.pki import load_keystore

            private_key = load_keystore(Path(keystore_path), password)
        self._account = Account.from_key(private_key)
        self.url = url.rstrip("/")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.progress = progress
        self._http = http or httpx.Client(timeout=timeout)
        self._token: str | None = None
        self._chain_id: int | None = None
        # cached files this client has hashed: digest -> fingerprint when verified
        self._verified: dict[ArtifactDigest, tuple[int, ...]] = {}

    @classmethod
    def from_key(cls, url: str, private_key: bytes | str, **kwargs: Any) -> TwinClient:
        """A client signing with a raw private key."""
        return cls(url, private_key=private_key, **kwargs)

    @property
    def address(self) -> str:
        """The member's EIP-55 address."""
        return str(self._account.address)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def __enter__(self) -> TwinClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ HTTP plumbing

    def sign_in(self) -> str:
        """Challenge, sign, token: a fresh bearer token."""
        reply = self._send("POST", "/v1/auth/challenge", json={"address": self.address})
        message = reply.json()["message"]
        signed = self._account.sign_message(encode_defunct(text=message))
        reply = self._send(
            "POST",
            "/v1/auth/token",
            json={"address": self.address, "signature": "0x" + bytes(signed.signature).hex()},
        )
        self._token = str(reply.json()["token"])
        return self._token

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, self.url + path, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach {self.url}: {exc}") from exc
        _raise_for(response)
        return response

    def _headers(self) -> dict[str, str]:
        if self._token is None:
            self.sign_in()
        return {"Authorization": f"Bearer {self._token}"}

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """An authenticated API request; signs in again once if the token expired."""
        headers = {**kwargs.pop("headers", {}), **self._headers()}
        try:
            return self._send(method, path, headers=headers, **kwargs)
        except Unauthorized:
            self.sign_in()
            headers.update(self._headers())
            return self._send(method, path, headers=headers, **kwargs)

    def get_json(self, path: str, **params: Any) -> Any:
        """GET an API path and decode the JSON answer."""
        return self.request("GET", path, params=params or None).json()

    # ------------------------------------------------------------ chain access

    def _eth_call(self, data: bytes) -> bytes:
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_call",
            "params": [{"to": MODEL_REGISTRY_ADDRESS, "data": "0x" + data.hex()}, "latest"],
        }
        reply = self.request("POST", "/", json=body).json()
        if "error" in reply:
            error = reply["error"]
            data_hex = error.get("data")
            reason = None
            if isinstance(data_hex, str) and data_hex.startswith("0x"):
                reason = revert_reason(bytes.fromhex(data_hex[2:]))
            raise ContractReverted(
                reason or str(error.get("message", "")).removeprefix("execution reverted: ")
            )
        return bytes.fromhex(str(reply["result"])[2:])

    @property
    def chain(self) -> RegistryReader:
        """ModelRegistry views read with ``eth_call`` at the head (JSON-RPC)."""
        return RegistryReader(self._eth_call)

    @property
    def chain_id(self) -> int:
        """The network's chain id (asked once)."""
        if self._chain_id is None:
            self._chain_id = int(self.get_json("/v1/chain")["chain_id"])
        return self._chain_id

    def head(self) -> int:
        """Height of the committed head."""
        return int(self.get_json("/v1/chain")["height"])

    def send(self, function: str, *args: Any, gas: int = DEFAULT_GAS) -> TransactionResult:
        """Sign ``ModelRegistry.<function>(*args)`` locally, submit it, wait for it."""
        nonce = int(self.get_json(f"/v1/accounts/{self.address}")["nonce"])
        tx = {
            "to": MODEL_REGISTRY_ADDRESS,
            "data": encode_call(function, *args),
            "gas": gas,
            "maxFeePerGas": 0,
            "maxPriorityFeePerGas": 0,
            "nonce": nonce,
            "chainId": self.chain_id,
            "type": 2,
        }
        signed = self._account.sign_transaction(tx)
        reply = self.request(
            "POST",
            "/v1/transactions",
            params={"wait": "true"},
            json={"raw": "0x" + bytes(signed.raw_transaction).hex()},
        ).json()
        result = TransactionResult(
            reply["tx_hash"],
            reply["status"],
            reply.get("block_height"),
            reply.get("block_hash"),
            tuple((e["name"], e["args"]) for e in reply.get("events", [])),
        )
        if result.status == "pending":
            raise RemoteError(f"transaction {result.tx_hash} is not committed yet")
        if result.status == "reverted":
            raise Conflict(f"transaction {result.tx_hash} reverted in block {result.block_height}")
        return result

    # ------------------------------------------------------------ artifacts

    def upload(self, source: Path | bytes, label: str = "upload") -> ArtifactDigest:
        """Store a file or bytes on the miner; returns its digest (no transaction)."""
        if isinstance(source, bytes):
            digest, size = ArtifactDigest.of(source), len(source)
        else:
            digest, size = _file_digest(source), source.stat().st_size

        def body() -> Iterator[bytes]:
            done = 0
            if isinstance(source, bytes):
                chunks: Iterator[bytes] = (
                    source[i : i + CHUNK] for i in range(0, max(size, 1), CHUNK)
                )
            else:
                chunks = _read_chunks(source)
            for chunk in chunks:
                done += len(chunk)
                if self.progress is not None:
                    self.progress(label, done, size)
                yield chunk

        self.request(
            "PUT",
            f"/v1/blobs/{digest}",
            content=body(),
            headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
        )
        return digest

    def download(self, digest: ArtifactDigest, size: int, label: str = "download") -> Path:
        """The verified file of ``digest`` in the cache (downloading or resuming it).

        ``digest`` and ``size`` must come from the chain; bytes that do not match are
        refused with :class:`ArtifactMismatch` and never left under the final name.
        """
        final = self._cached(digest, size)
        if final.exists():
            return final
        part = final.with_name(final.name + ".part")
        for attempt in range(2):
            resumed = part.exists() and part.stat().st_size > 0
            got = self._fetch_into(part, digest, size, label)
            if got == digest:
                self._install(part, final, digest)
                return final
            part.unlink(missing_ok=True)
            if not (resumed and attempt == 0):
                raise ArtifactMismatch(
                    f"downloaded bytes hash to {got}, but the chain records {digest}: refused"
                )
            log.warning("resumed download of %s did not verify; fetching it whole", digest)
        raise AssertionError("unreachable")

    def _cached(self, digest: ArtifactDigest, size: int) -> Path:
        """The cache path of ``digest``; a cached file there that does not verify (or is
        not the one this client verified) is re-hashed, and removed if it is bad."""
        final = self.cache_dir / "sha256" / digest.hex
        final.parent.mkdir(parents=True, exist_ok=True)
        print_ = _fingerprint(final)
        if print_ is None or self._verified.get(digest) == print_:
            return final
        if print_[2] == size and _file_digest(final) == digest:
            if _fingerprint(final) == print_:
                self._verified[digest] = print_
            return final
        log.warning("cached %s does not match its digest: discarded, fetching again", digest)
        self._verified.pop(digest, None)
        final.unlink()
        return final

    def _install(self, part: Path, final: Path, digest: ArtifactDigest) -> None:
        """Move verified bytes to their cache name and trust that file."""
        os.replace(part, final)
        print_ = _fingerprint(final)
        if print_ is not None:
            self._verified[digest] = print_

    def _fetch_into(
        self, part: Path, digest: ArtifactDigest, size: int, label: str
    ) -> ArtifactDigest:
        """Append the missing bytes of the blob to ``part``; the digest of the result."""
        h = hashlib.sha256()
        offset = part.stat().st_size if part.exists() else 0
        if offset > size:
            part.unlink()
            offset = 0
        if offset:
            with part.open("rb") as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
        if offset == size:
            return ArtifactDigest(h.digest())
        headers = {**self._headers()}
        if offset:
            headers.update({"Range": f"bytes={offset}-", "If-Range": f'"{digest}"'})
        url = f"{self.url}/v1/blobs/{digest}"
        try:
            with self._http.stream("GET", url, headers=headers) as response:
                if response.status_code == 200 and offset:
                    h, offset = hashlib.sha256(), 0  # the server sends it all
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                with part.open("r+b" if offset else "wb") as out:
                    out.seek(offset)
                    out.truncate()
                    report = self._progress(label, size)
                    stream_into(response, out, h, limit=size, done=offset, progress=report)
        except httpx.HTTPError as exc:
            raise RemoteError(f"download of {digest} broke off (resumable): {exc}") from exc
        return ArtifactDigest(h.digest())

    # ------------------------------------------------------------ resolving refs on chain

    def resolve_version(self, name: str, ref: str | int = "latest") -> int:
        """Global version id of ``name`` at ``ref`` (number, alias, ``latest``), on chain."""
        chain = self.chain
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isascii() and ref.isdigit()):
            version_id = chain.version_id(name, int(ref))
            if version_id == 0:
                raise NotFound(f"model {name!r} has no version {ref}")
            return version_id
        if ref == "latest":
            return chain.latest(name)
        version_id = chain.alias_of(name, ref)
        if version_id == 0:
            raise NotFound(f"model {name!r} has no alias {ref!r}")
        return version_id

    # ------------------------------------------------------------ models and datasets

    def model(self, name: str, ref: str | int = "latest") -> ModelVersion:
        """The version record (with its proof) as the API serves it."""
        return ModelVersion.of(self.get_json(f"/v1/models/{name}/versions/{ref}"))

    def version(self, version_id: int) -> ModelVersion:
        """A version by global id."""
        return ModelVersion.of(self.get_json(f"/v1/versions/{version_id}"))

    def models(self) -> list[dict[str, Any]]:
        """Model summaries (name, versions, latest, aliases)."""
        return list(self.get_json("/v1/models", limit=1000))

    def datasets(self) -> list[Dataset]:
        """Every dataset version (first 1000)."""
        return [Dataset.of(d) for d in self.get_json("/v1/datasets", limit=1000)]

    def register_dataset(
        self, name: str, path: str | Path, media_type: str = "application/octet-stream"
    ) -> Dataset:
        """Upload a dataset file and register it as the next version of ``name``."""
        path = Path(path)
        digest = self.upload(path, label=f"dataset {name}")
        result = self.send(
            "registerDataset", name, digest.raw, path.stat().st_size, media_type, bytes(32)
        )
        dataset_id = int(result.event("DatasetRegistered")["dataset_id"])
        for record in self.get_json(f"/v1/datasets/{name}"):
            if record["id"] == dataset_id:
                return Dataset.of(record)
        raise RemoteError(f"dataset {dataset_id} is committed but not served")

    def _dataset_id(self, ref: int | str) -> int:
        if isinstance(ref, int):
            return ref
        name, _, version = ref.partition("@")
        record = self.get_json(f"/v1/datasets/{name}/versions/{version or 'latest'}")
        return int(record["id"])

    def register_model(
        self,
        name: str,
        path: str | Path,
        parents: Sequence[int | str] = (),
        datasets: Sequence[int | str] = (),
        alias: str | None = None,
        format: str = "safetensors",
    ) -> ModelVersion:
        """Upload weights and register the next version of ``name``.

        ``parents`` are global version ids or ``"name@ref"``; ``datasets`` are dataset
        ids or ``"name@version"``. With ``alias``, the alias is moved to the new version.
        """
        path = Path(path)
        parent_ids = [p if isinstance(p, int) else self._parent_id(p) for p in parents]
        dataset_ids = [self._dataset_id(d) for d in datasets]
        digest = self.upload(path, label=f"model {name}")
        result = self.send(
            "registerModel",
            name,
            digest.raw,
            path.stat().st_size,
            format,
            parent_ids,
            dataset_ids,
            bytes(32),
        )
        version_id = int(result.event("ModelVersionRegistered")["version_id"])
        if alias is not None:
            self.send("setAlias", name, alias, version_id)
        return self.version(version_id)

    def _parent_id(self, ref: str) -> int:
        name, _, at = ref.partition("@")
        return self.resolve_version(name, at or "latest")

    def _progress(self, label: str, size: int) -> Callable[[int], None] | None:
        progress = self.progress
        if progress is None:
            return None
        return lambda done: progress(label, done, size)

    def warm_start(
        self, name: str, ref: str | int = "production", *, allow_revoked: bool = False
    ) -> Path:
        """The weights of ``name`` at ``ref``, downloaded once and verified against the
        digest the chain records (read with ``eth_call``, not from the server's headers).

        The chain is read first, then ``GET /v1/blobs/<digest>``. (Reading the chain in
        a thread while the artifact streams was measured slower: the miner serialises
        the EVM calls of both, and the client's threads contend for the GIL.)
        """
        record = self.chain.version(self.resolve_version(name, ref))
        if record.status == 2 and not allow_revoked:
            raise Conflict(f"{name} v{record.version} is revoked: {record.status_reason}")
        return self.download(record.digest, record.size, label=f"{name} v{record.version}")

    def pull_dataset(self, name: str, ref: str | int = "latest") -> Path:
        """A dataset file, verified against the digest the chain records."""
        chain = self.chain
        count = chain.dataset_versions(name)
        if count == 0:
            raise NotFound(f"unknown dataset {name!r}")
        number = count if ref == "latest" else int(ref)
        dataset_id = chain.dataset_id(name, number)
        if dataset_id == 0:
            raise NotFound(f"dataset {name!r} has no version {ref}")
        record = chain.dataset(dataset_id)
        return self.download(record.digest, record.size, label=f"dataset {name}")

    @staticmethod
    def load_tensors(path: str | Path) -> dict[str, np.ndarray]:
        """The float32 tensors of a safetensors model file (no code runs on load)."""
        return load_model(Path(path).read_bytes())

    def set_alias(self, name: str, alias: str, ref: str | int) -> ModelVersion:
        """Point ``alias`` of ``name`` at the version ``ref``."""
        version_id = self.resolve_version(name, ref)
        self.send("setAlias", name, alias, version_id)
        return self.version(version_id)

    def revoke(self, name: str, ref: str | int, reason: str) -> ModelVersion:
        """Revoke a version (its aliases are cleared on chain)."""
        version_id = self.resolve_version(name, ref)
        self.send("revokeVersion", version_id, reason)
        return self.version(version_id)

    # ------------------------------------------------------------ federated rounds

    def open_round(
        self, model: str, base_ref: str | int, min_updates: int, deadline_blocks: int
    ) -> Round:
        """Open a round training ``model`` from ``base_ref``, closing ``deadline_blocks``
        blocks from now at the latest."""
        base = self.resolve_version(model, base_ref)
        deadline = self.head() + deadline_blocks
        result = self.send("openRound", model, base, min_updates, deadline)
        return self.round_status(int(result.event("RoundOpened")["round_id"]))

    def round_status(self, round_id: int) -> Round:
        """The round as the API serves it."""
        return Round.of(self.get_json(f"/v1/rounds/{round_id}"))

    def round_updates(self, round_id: int) -> list[Update]:
        """Updates pushed to a round."""
        return [Update.of(u) for u in self.get_json(f"/v1/rounds/{round_id}/updates")]

    def push_update(
        self,
        round_id: int,
        update: Mapping[str, np.ndarray] | str | Path,
        samples: int,
        *,
        sparse_k: int | None = None,
        base: Mapping[str, np.ndarray] | None = None,
    ) -> Update:
        """Push a training update to a round.

        ``update`` is an encoded update file, or tensors: the delta ``new - base``, or
        the trained weights when ``base`` is given (the delta is taken here). With
        ``sparse_k`` only the k largest entries of each tensor are sent.
        """
        if isinstance(update, str | Path):
            blob = Path(update).read_bytes()
            from registry.fl.tensorfile import read_tensor_file

            kind_name = read_tensor_file(blob).metadata.get("twinchain.kind")
            kind = UpdateKind.SPARSE if kind_name == "sparse" else UpdateKind.DENSE
        else:
            deltas = dict(update)
            if base is not None:
                deltas = {k: (deltas[k] - base[k]).astype(np.float32) for k in base}
            if sparse_k is not None:
                blob, kind = encode_sparse(deltas, k=sparse_k), UpdateKind.SPARSE
            else:
                blob, kind = encode_dense(deltas), UpdateKind.DENSE
        digest = self.upload(blob, label=f"update r{round_id}")
        result = self.send(
            "pushUpdate", round_id, digest.raw, len(blob), samples, int(kind), bytes(32)
        )
        update_id = int(result.event("UpdatePushed")["update_id"])
        return Update.of(self.get_json(f"/v1/updates/{update_id}"))

    def close_round(
        self, round_id: int, strategy: str = "fedavg", include: Sequence[int] | None = None
    ) -> ModelVersion:
        """Aggregate a round locally and record it (needs the MINER role).

        Downloads the base and every included update (verified against the chain),
        aggregates with :func:`registry.fl.aggregate_bytes`, uploads the result and sends
        ``closeRound``; every miner recomputes the aggregate before accepting it.
        """
        chain = self.chain
        record = chain.round(round_id)
        ids = list(include) if include is not None else list(record.update_ids)
        base = chain.version(record.base_version)
        base_bytes = self.download(base.digest, base.size, label="base").read_bytes()
        blobs, samples = [], []
        for update_id in ids:
            update = chain.update(update_id)
            path = self.download(update.digest, update.size, label=f"update {update_id}")
            blobs.append(path.read_bytes())
            samples.append(update.samples)
        model, hex_digest = aggregate_bytes(base_bytes, blobs, samples, strategy)
        digest = self.upload(model, label="aggregate")
        assert digest.hex == hex_digest
        result = self.send(
            "closeRound", round_id, strategy, ids, digest.raw, len(model), gas=CLOSE_GAS
        )
        return self.version(int(result.event("RoundClosed")["version_id"]))


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk
