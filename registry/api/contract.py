"""The ModelRegistry ABI, without web3: calldata, view results and events.

Used on both sides of the wire: the miner's :class:`~registry.policy.RegistryPolicy`
decodes the calldata of registration transactions, the REST API decodes view results and
event logs into records, and the SDK encodes calls and reads the chain with ``eth_call``.
Everything is driven by the checked-in ABI of ``contracts/build/ModelRegistry.json``
through ``eth_abi``, so a contract change that alters a signature breaks loudly here.

Records come back as frozen dataclasses with Python types: digests as
:class:`~node.blobs.ArtifactDigest` (``None`` for the all-zero "none" value), addresses
as ``0x``-prefixed lowercase hex, ids as ``int``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError, EncodingError
from eth_hash.auto import keccak

from contracts import MODEL_REGISTRY_ADDRESS, load_artifact
from node.blobs import ArtifactDigest
from node.errors import InvalidInput, NotFound

__all__ = [
    "REGISTRY_ADDRESS_BYTES",
    "ZERO32",
    "Call",
    "CallFn",
    "ContractReverted",
    "DatasetRecord",
    "EventRecord",
    "RegistryReader",
    "RoundRecord",
    "UpdateRecord",
    "VersionRecord",
    "decode_call",
    "decode_event",
    "decode_output",
    "encode_call",
    "event_topic",
    "revert_reason",
]

REGISTRY_ADDRESS_BYTES: Final = bytes.fromhex(MODEL_REGISTRY_ADDRESS[2:])
ZERO32: Final = bytes(32)
_ERROR_SELECTOR: Final = bytes.fromhex("08c379a0")


def _abi_type(param: Mapping[str, Any]) -> str:
    """The canonical ABI type string of one parameter (tuples spelled out)."""
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


@dataclass(frozen=True)
class _Function:
    name: str
    selector: bytes
    input_names: tuple[str, ...]
    input_types: tuple[str, ...]
    output_types: tuple[str, ...]


@dataclass(frozen=True)
class _Event:
    name: str
    topic: bytes
    indexed: tuple[tuple[str, str], ...]
    data: tuple[tuple[str, str], ...]


@cache
def _functions() -> dict[str, _Function]:
    found: dict[str, _Function] = {}
    for entry in load_artifact("ModelRegistry").abi:
        if entry.get("type") != "function":
            continue
        types = tuple(_abi_type(i) for i in entry["inputs"])
        signature = f"{entry['name']}({','.join(types)})"
        found[entry["name"]] = _Function(
            name=entry["name"],
            selector=bytes(keccak(signature.encode()))[:4],
            input_names=tuple(i["name"] for i in entry["inputs"]),
            input_types=types,
            output_types=tuple(_abi_type(o) for o in entry.get("outputs", ())),
        )
    return found


@cache
def _by_selector() -> dict[bytes, _Function]:
    return {f.selector: f for f in _functions().values()}


@cache
def _events() -> dict[str, _Event]:
    found: dict[str, _Event] = {}
    for entry in load_artifact("ModelRegistry").abi:
        if entry.get("type") != "event":
            continue
        inputs = entry["inputs"]
        signature = f"{entry['name']}({','.join(_abi_type(i) for i in inputs)})"
        found[entry["name"]] = _Event(
            name=entry["name"],
            topic=bytes(keccak(signature.encode())),
            indexed=tuple((i["name"], _abi_type(i)) for i in inputs if i["indexed"]),
            data=tuple((i["name"], _abi_type(i)) for i in inputs if not i["indexed"]),
        )
    return found


@cache
def _by_topic() -> dict[bytes, _Event]:
    return {e.topic: e for e in _events().values()}


def encode_call(function: str, *args: Any) -> bytes:
    """Calldata for ``ModelRegistry.<function>(*args)``; InvalidInput if args do not fit."""
    spec = _functions().get(function)
    if spec is None:
        raise KeyError(f"ModelRegistry has no function {function!r}")
    try:
        return spec.selector + abi_encode(list(spec.input_types), list(args))
    except (EncodingError, TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(f"cannot encode {function}: {exc}") from exc


@dataclass(frozen=True)
class Call:
    """Decoded calldata of a ModelRegistry transaction."""

    function: str
    args: Mapping[str, Any]


def decode_call(data: bytes) -> Call | None:
    """Decode ModelRegistry calldata; None for an unknown selector or malformed arguments."""
    spec = _by_selector().get(bytes(data[:4]))
    if spec is None:
        return None
    try:
        values = abi_decode(list(spec.input_types), bytes(data[4:]))
    except (DecodingError, ValueError, TypeError, OverflowError):
        return None
    return Call(spec.name, dict(zip(spec.input_names, values, strict=True)))


def decode_output(function: str, output: bytes) -> Any:
    """Decode the return data of a view; a single output is returned unwrapped."""
    spec = _functions()[function]
    try:
        values = abi_decode(list(spec.output_types), bytes(output))
    except (DecodingError, ValueError, TypeError, OverflowError) as exc:
        raise InvalidInput(f"cannot decode the result of {function}: {exc}") from exc
    return values[0] if len(values) == 1 else values


def event_topic(name: str) -> bytes:
    """topic0 of a ModelRegistry event."""
    return _events()[name].topic


@dataclass(frozen=True)
class EventRecord:
    """One decoded ModelRegistry event."""

    name: str
    args: Mapping[str, Any]


def decode_event(topics: Sequence[bytes], data: bytes) -> EventRecord | None:
    """Decode one log of the ModelRegistry; None if it is not one of its events."""
    if not topics:
        return None
    spec = _by_topic().get(bytes(topics[0]))
    if spec is None or len(topics) != 1 + len(spec.indexed):
        return None
    args: dict[str, Any] = {}
    try:
        for (name, kind), topic in zip(spec.indexed, topics[1:], strict=True):
            (args[name],) = abi_decode([kind], bytes(topic))
        values = abi_decode([kind for _, kind in spec.data], bytes(data))
    except (DecodingError, ValueError, TypeError, OverflowError):
        return None
    args.update(zip((name for name, _ in spec.data), values, strict=True))
    return EventRecord(spec.name, {k: _plain(v) for k, v in args.items()})


def revert_reason(output: bytes) -> str | None:
    """The string of an ``Error(string)`` revert, if that is what ``output`` holds."""
    if output[:4] != _ERROR_SELECTOR:
        return None
    try:
        (reason,) = abi_decode(["string"], bytes(output[4:]))
    except (DecodingError, ValueError, TypeError, OverflowError):
        return None
    return str(reason)


def _plain(value: Any) -> Any:
    """JSON-friendly form of an ABI value: hex for bytes, lists for tuples."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return value.lower()
    return value


def _digest_or_none(raw: bytes) -> ArtifactDigest | None:
    return None if raw == ZERO32 else ArtifactDigest(bytes(raw))


def _address(value: str) -> str:
    return value.lower()


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class DatasetRecord:
    """``ModelRegistry.getDataset``."""

    id: int
    name: str
    version: int
    digest: ArtifactDigest
    size: int
    media_type: str
    metadata_digest: ArtifactDigest | None
    registrant: str
    block: int

    @classmethod
    def decode(cls, dataset_id: int, output: bytes) -> DatasetRecord:
        """From the return data of ``getDataset(dataset_id)``."""
        name, version, digest, size, media_type, meta, registrant, block = decode_output(
            "getDataset", output
        )
        return cls(
            dataset_id,
            name,
            version,
            ArtifactDigest(bytes(digest)),
            size,
            media_type,
            _digest_or_none(meta),
            _address(registrant),
            block,
        )


@dataclass(frozen=True)
class VersionRecord:
    """``ModelRegistry.getVersion``: one model version."""

    id: int
    name: str
    version: int
    digest: ArtifactDigest
    size: int
    format: str
    parents: tuple[int, ...]
    datasets: tuple[int, ...]
    metadata_digest: ArtifactDigest | None
    registrant: str
    block: int
    round_id: int
    status: int
    status_reason: str

    @classmethod
    def decode(cls, version_id: int, output: bytes) -> VersionRecord:
        """From the return data of ``getVersion(version_id)``."""
        (
            name,
            version,
            digest,
            size,
            fmt,
            parents,
            datasets,
            meta,
            registrant,
            block,
            round_id,
            status,
            reason,
        ) = decode_output("getVersion", output)
        return cls(
            version_id,
            name,
            version,
            ArtifactDigest(bytes(digest)),
            size,
            fmt,
            tuple(parents),
            tuple(datasets),
            _digest_or_none(meta),
            _address(registrant),
            block,
            round_id,
            status,
            reason,
        )


@dataclass(frozen=True)
class RoundRecord:
    """``ModelRegistry.getRound``: one federated round."""

    id: int
    model: str
    base_version: int
    min_updates: int
    deadline: int
    opener: str
    opened_block: int
    status: int
    update_ids: tuple[int, ...]
    strategy: str
    included_update_ids: tuple[int, ...]
    result_version: int
    closer: str
    closed_block: int
    cancel_reason: str

    @classmethod
    def decode(cls, round_id: int, output: bytes) -> RoundRecord:
        """From the return data of ``getRound(round_id)``."""
        (
            model,
            base,
            min_updates,
            deadline,
            opener,
            opened,
            status,
            update_ids,
            strategy,
            included,
            result,
            closer,
            closed,
            cancel_reason,
        ) = decode_output("getRound", output)
        return cls(
            round_id,
            model,
            base,
            min_updates,
            deadline,
            _address(opener),
            opened,
            status,
            tuple(update_ids),
            strategy,
            tuple(included),
            result,
            _address(closer),
            closed,
            cancel_reason,
        )


@dataclass(frozen=True)
class UpdateRecord:
    """``ModelRegistry.getUpdate``: one twin's training update."""

    id: int
    round_id: int
    twin: str
    digest: ArtifactDigest
    size: int
    samples: int
    kind: int
    metrics_digest: ArtifactDigest | None
    block: int

    @classmethod
    def decode(cls, update_id: int, output: bytes) -> UpdateRecord:
        """From the return data of ``getUpdate(update_id)``."""
        round_id, twin, digest, size, samples, kind, metrics, block = decode_output(
            "getUpdate", output
        )
        return cls(
            update_id,
            round_id,
            _address(twin),
            ArtifactDigest(bytes(digest)),
            size,
            samples,
            kind,
            _digest_or_none(metrics),
            block,
        )


# ---------------------------------------------------------------- reading the contract


class ContractReverted(InvalidInput):
    """A ModelRegistry call reverted; ``reason`` is its ``Error(string)`` text."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Runs ModelRegistry calldata as a read-only call and returns the return data; raises
#: :class:`ContractReverted` when the call reverts. Bound to one block's state by whoever
#: builds it (the miner's executor, the node view, or JSON-RPC ``eth_call``).
CallFn = Callable[[bytes], bytes]


class RegistryReader:
    """Typed views of the ModelRegistry over a :data:`CallFn`.

    Getters by id raise :class:`~node.errors.NotFound` for an unknown id ("unknown
    version", ...), as the contract's revert says; lookups by name return 0 when absent.
    """

    def __init__(self, call: CallFn) -> None:
        self._call = call

    def _view(self, function: str, *args: Any) -> Any:
        try:
            output = self._call(encode_call(function, *args))
        except ContractReverted as exc:
            if exc.reason.startswith("unknown") or exc.reason == "no live version":
                raise NotFound(exc.reason) from exc
            raise
        return decode_output(function, output)

    def count(self, what: str) -> int:
        """``datasetCount``, ``versionCount``, ``modelCount``, ``roundCount``, ``updateCount``."""
        return int(self._view(what))

    def dataset(self, dataset_id: int) -> DatasetRecord:
        """Dataset by id (NotFound if unknown)."""
        return DatasetRecord.decode(dataset_id, self._raw("getDataset", dataset_id))

    def version(self, version_id: int) -> VersionRecord:
        """Model version by global id (NotFound if unknown)."""
        return VersionRecord.decode(version_id, self._raw("getVersion", version_id))

    def round(self, round_id: int) -> RoundRecord:
        """Round by id (NotFound if unknown)."""
        return RoundRecord.decode(round_id, self._raw("getRound", round_id))

    def update(self, update_id: int) -> UpdateRecord:
        """Update by id (NotFound if unknown)."""
        return UpdateRecord.decode(update_id, self._raw("getUpdate", update_id))

    def _raw(self, function: str, *args: Any) -> bytes:
        try:
            return self._call(encode_call(function, *args))
        except ContractReverted as exc:
            if exc.reason.startswith("unknown"):
                raise NotFound(exc.reason) from exc
            raise

    def version_id(self, name: str, version: int) -> int:
        """Global id of ``name`` version ``version``, 0 if none."""
        return int(self._view("versionId", name, version))

    def model_versions(self, name: str) -> int:
        """How many versions ``name`` has."""
        return int(self._view("modelVersions", name))

    def model_name_at(self, index: int) -> str:
        """Model names in registration order."""
        return str(self._view("modelNameAt", index))

    def latest(self, name: str) -> int:
        """Newest non-revoked version of ``name`` (NotFound if none)."""
        return int(self._view("latest", name))

    def alias_of(self, model: str, alias: str) -> int:
        """Target of an alias, 0 if unset."""
        return int(self._view("aliasOf", model, alias))

    def aliases(self, model: str) -> tuple[str, ...]:
        """The model's aliases."""
        return tuple(self._view("aliases", model))

    def dataset_id(self, name: str, version: int) -> int:
        """Id of dataset ``name`` version ``version``, 0 if none."""
        return int(self._view("datasetId", name, version))

    def dataset_versions(self, name: str) -> int:
        """How many versions dataset ``name`` has."""
        return int(self._view("datasetVersions", name))
