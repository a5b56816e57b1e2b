"""Exports: everything needed to re-verify a height range, with a manifest of digests.

``audit export --from A --to B DIR`` writes the chain of custody an investigator hands
over::

    DIR/manifest.json          format, network, range, and every other file's sha256 + size
    DIR/genesis.json           the network's genesis document (as the miner has it)
    DIR/blocks/A-B.jsonl       the stored rows of each height, one JSON object per line
                               (chunks of 1,000 heights)
    DIR/validator_sets.json    the validator-set chain from genesis to epoch B // E, with
                               state witnesses (the bundle format's ``validator_sets`` and
                               ``state_nodes``)
    DIR/artifacts/sha256-<hex> with --artifacts: artifacts the range's registry events
                               reference and the miner holds

:func:`check_export` re-verifies it offline: the manifest (a missing, modified or
unlisted file fails), the validator-set chain, then every block with the same checks as
:func:`registry.audit.verify.verify_chain` (header, links, roots, receipts, certificates),
and each artifact's content against its name. The format is in ``docs/evidence.md``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from eth_abi.abi import decode as abi_decode

from node.chain.genesis import Genesis, parse_genesis
from node.chain.types import REGISTRY_ADDRESS
from node.errors import InvalidInput
from registry.audit.bundle import (
    BundleError,
    _event_topic,
    check_network,
    check_validator_set_chain,
    hx,
    load_json,
    unhex,
    validator_set_chain,
)
from registry.audit.source import MinerData
from registry.audit.verify import (
    ChainReader,
    Failure,
    StoredBlock,
    VerificationFailed,
    VerifyReport,
    _Reexecutor,
    _Verifier,
    genesis_header,
)

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "ExportSource",
    "check_export",
    "export_range",
]

EXPORT_FORMAT: Final = "twinchain-export"
EXPORT_VERSION: Final = 1
CHUNK: Final = 1000
_MANIFEST_KEYS: Final = (
    "format",
    "version",
    "chain_id",
    "genesis_hash",
    "engine",
    "epoch_length",
    "from",
    "to",
    "files",
)


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _opt(value: Any) -> str | None:
    return None if value is None else hx(bytes(value))


def block_json(block: StoredBlock) -> dict[str, Any]:
    """One height's stored rows as JSON (the ``blocks/*.jsonl`` line format)."""
    return {
        "height": block.height,
        "hash": hx(block.hash),
        "header": hx(block.header),
        "seal": hx(block.seal),
        "tx_count": block.tx_count,
        "transactions": [
            {
                "hash": hx(t[0]),
                "index": t[1],
                "raw": hx(t[2]),
                "sender": hx(t[3]),
                "recipient": _opt(t[4]),
                "contract_address": _opt(t[5]),
                "tx_type": t[6],
                "status": t[7],
                "gas_used": t[8],
                "cumulative_gas_used": t[9],
                "effective_gas_price": int.from_bytes(bytes(t[10]), "big"),
                "log_start": t[11],
                "log_count": t[12],
            }
            for t in block.txs
        ],
        "logs": [
            {
                "log_index": lg[0],
                "tx_index": lg[1],
                "tx_hash": hx(lg[2]),
                "address": hx(lg[3]),
                "topics": [hx(t) for t in lg[4:8] if t is not None],
                "data": hx(lg[8]),
            }
            for lg in block.logs
        ],
    }


def _uint_bytes(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def block_from_json(doc: Any, where: str) -> StoredBlock:
    """Inverse of :func:`block_json`; BundleError on malformed lines."""
    try:
        txs = [
            (
                unhex(t["hash"], f"{where}.hash", 32),
                int(t["index"]),
                unhex(t["raw"], f"{where}.raw"),
                unhex(t["sender"], f"{where}.sender", 20),
                None if t["recipient"] is None else unhex(t["recipient"], f"{where}.recipient", 20),
                None
                if t["contract_address"] is None
                else unhex(t["contract_address"], f"{where}.contract_address", 20),
                int(t["tx_type"]),
                int(t["status"]),
                int(t["gas_used"]),
                int(t["cumulative_gas_used"]),
                _uint_bytes(int(t["effective_gas_price"])),
                int(t["log_start"]),
                int(t["log_count"]),
            )
            for t in doc["transactions"]
        ]
        logs = []
        for lg in doc["logs"]:
            topics: list[bytes | None] = [unhex(t, f"{where}.topic", 32) for t in lg["topics"]]
            if len(topics) > 4:
                raise BundleError(f"{where}: a log has more than 4 topics")
            topics += [None] * (4 - len(topics))
            logs.append(
                (
                    int(lg["log_index"]),
                    int(lg["tx_index"]),
                    unhex(lg["tx_hash"], f"{where}.tx_hash", 32),
                    unhex(lg["address"], f"{where}.address", 20),
                    *topics,
                    unhex(lg["data"], f"{where}.data"),
                )
            )
        return StoredBlock(
            int(doc["height"]),
            unhex(doc["hash"], f"{where}.hash", 32),
            unhex(doc["header"], f"{where}.header"),
            unhex(doc["seal"], f"{where}.seal"),
            int(doc["tx_count"]),
            txs,
            logs,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{where}: malformed block record: {exc!r}") from exc


class ExportSource:
    """Blocks read back from an export's ``blocks/*.jsonl`` files."""

    def __init__(self, root: Path, files: list[str]) -> None:
        self.root = root
        self.files = sorted(f for f in files if f.startswith("blocks/") and f.endswith(".jsonl"))

    def head_height(self) -> int:
        """Last height in the export."""
        last = -1
        for block in self.blocks(0, 1 << 62):
            last = block.height
        return last

    def blocks(self, first: int, last: int) -> Iterator[StoredBlock]:
        """Exported blocks in ``first..last`` in file order."""
        for name in self.files:
            with (self.root / name).open() as f:
                for n, line in enumerate(f, 1):
                    try:
                        doc = json.loads(line)
                    except ValueError as exc:
                        raise BundleError(f"{name}:{n}: not JSON: {exc}") from exc
                    block = block_from_json(doc, f"{name}:{n}")
                    if first <= block.height <= last:
                        yield block


def _referenced_artifacts(reader: ChainReader, first: int, last: int) -> list[bytes]:
    """sha256 digests the range's registry events name (datasets, versions, updates)."""
    digests: list[bytes] = []
    registry = bytes(REGISTRY_ADDRESS)
    for event in ("DatasetRegistered", "ModelVersionRegistered"):
        rows = reader.conn.execute(
            "SELECT topic2 FROM logs WHERE address = ? AND topic0 = ? AND height BETWEEN ? AND ?",
            (registry, _event_topic(event), first, last),
        ).fetchall()
        digests += [bytes(r[0]) for r in rows]
    rows = reader.conn.execute(
        "SELECT data FROM logs WHERE address = ? AND topic0 = ? AND height BETWEEN ? AND ?",
        (registry, _event_topic("UpdatePushed"), first, last),
    ).fetchall()
    for (data,) in rows:
        digests.append(bytes(abi_decode(["bytes32"], bytes(data)[:32])[0]))
    return list(dict.fromkeys(digests))


def export_range(
    data: MinerData,
    out_dir: str | Path,
    from_height: int,
    to_height: int | None = None,
    *,
    artifacts: bool = False,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write an export of ``from_height..to_height`` (default: head) into ``out_dir``
    (missing or empty). Returns the manifest. Raises InvalidInput on a bad range or
    directory, VerificationFailed if stored data needed for the validator-set chain is
    bad (nothing is exported from a store that cannot prove its sets)."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInput(f"{out}: the export directory must be missing or empty")
    genesis = data.genesis
    length = genesis.consensus.epoch_length
    with ChainReader(data.chain_db) as reader:
        head = reader.head_height()
        last = head if to_height is None else to_height
        if from_height < 0 or last < from_height or last > head:
            raise InvalidInput(f"bad range {from_height}..{last} (stored head is {head})")
        entries, pool, _sets = validator_set_chain(reader, genesis, last // length)
        out.mkdir(parents=True, exist_ok=True)
        (out / "blocks").mkdir()
        files: list[Path] = []
        shutil.copyfile(data.genesis_path, out / "genesis.json")
        files.append(out / "genesis.json")
        done = 0
        for start in range(from_height, last + 1, CHUNK):
            end = min(last, start + CHUNK - 1)
            path = out / "blocks" / f"{start:010d}-{end:010d}.jsonl"
            with path.open("w") as f:
                for block in reader.blocks(start, end):
                    f.write(json.dumps(block_json(block), separators=(",", ":")) + "\n")
                    done += 1
            files.append(path)
            if progress is not None:
                progress(done)
        sets_path = out / "validator_sets.json"
        sets_path.write_text(
            json.dumps(
                {
                    "validator_sets": entries,
                    "state_nodes": {hx(k): hx(v) for k, v in sorted(pool.items())},
                },
                indent=1,
            )
        )
        files.append(sets_path)
        if artifacts:
            (out / "artifacts").mkdir()
            for digest in _referenced_artifacts(reader, from_height, last):
                src = data.blobs_dir / "sha256" / digest.hex()[:2] / digest.hex()[2:]
                if not src.is_file():
                    continue
                dest = out / "artifacts" / f"sha256-{digest.hex()}"
                shutil.copyfile(src, dest)
                if _sha256_file(dest)[0] != digest.hex():
                    dest.unlink()  # the miner's copy is corrupt: never hand it over
                    continue
                files.append(dest)
    manifest: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "chain_id": genesis.chain_id,
        "genesis_hash": hx(genesis_header(genesis).hash()),
        "engine": genesis.consensus.engine,
        "epoch_length": length,
        "from": from_height,
        "to": last,
        "files": [],
    }
    for path in files:
        sha, size = _sha256_file(path)
        manifest["files"].append(
            {"path": path.relative_to(out).as_posix(), "sha256": sha, "size": size}
        )
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _check_manifest(root: Path, genesis: Genesis) -> dict[str, Any]:
    path = root / "manifest.json"
    if not path.is_file():
        raise BundleError(f"{root}: no manifest.json (not an export directory)")
    manifest = load_json(path)
    if not isinstance(manifest, dict) or set(manifest) != set(_MANIFEST_KEYS):
        raise BundleError("manifest.json: unexpected or missing keys")
    if manifest["format"] != EXPORT_FORMAT or manifest["version"] != EXPORT_VERSION:
        raise BundleError(
            f"manifest.json: format {manifest['format']!r} v{manifest['version']!r} is not "
            f"{EXPORT_FORMAT} v{EXPORT_VERSION}"
        )
    check_network(manifest, genesis)
    listed: dict[str, dict[str, Any]] = {}
    for entry in manifest["files"]:
        if not isinstance(entry, dict) or set(entry) != {"path", "sha256", "size"}:
            raise BundleError("manifest.json: a files entry is malformed")
        name = entry["path"]
        if not isinstance(name, str) or name.startswith("/") or ".." in name.split("/"):
            raise BundleError(f"manifest.json: bad path {name!r}")
        listed[name] = entry
    for name, entry in sorted(listed.items()):
        file = root / name
        if not file.is_file():
            raise BundleError(f"{name}: listed in the manifest but missing")
        digest, size = _sha256_file(file)
        if size != entry["size"]:
            raise BundleError(f"{name}: size {size}, the manifest says {entry['size']}")
        if digest != entry["sha256"]:
            raise BundleError(f"{name}: sha256 {digest}, the manifest says {entry['sha256']}")
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    unlisted = sorted(present - set(listed) - {"manifest.json"})
    if unlisted:
        raise BundleError(f"{unlisted[0]}: present but not listed in the manifest")
    for required in ("genesis.json", "validator_sets.json"):
        if required not in listed:
            raise BundleError(f"manifest.json: {required} is not listed")
    try:
        exported = parse_genesis(load_json(root / "genesis.json"))
    except InvalidInput as exc:
        raise BundleError(f"genesis.json: {exc}") from exc
    if genesis_header(exported).hash() != genesis_header(genesis).hash():
        raise BundleError("genesis.json: the exported genesis is not the one given")
    return manifest


def check_export(
    root: str | Path,
    genesis: Genesis,
    *,
    reexecute: bool = False,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Re-verify an export offline against ``genesis``.

    Manifest and file problems raise :class:`BundleError`; a block that fails is the
    report's failure (as for :func:`registry.audit.verify.verify_chain`). ``reexecute``
    needs an export that starts at height 0.
    """
    try:
        return _check_export(Path(root), genesis, reexecute, progress)
    except (BundleError, InvalidInput):
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise BundleError(f"malformed export: {exc!r}") from exc


def _check_export(
    root: Path,
    genesis: Genesis,
    reexecute: bool,
    progress: Callable[[int], None] | None,
) -> VerifyReport:
    manifest = _check_manifest(root, genesis)
    first, last = manifest["from"], manifest["to"]
    if not isinstance(first, int) or not isinstance(last, int) or not 0 <= first <= last:
        raise BundleError(f"manifest.json: bad range {first!r}..{last!r}")
    if reexecute and first != 0:
        raise InvalidInput("--reexecute needs an export that starts at height 0")
    length = genesis.consensus.epoch_length
    sets_doc = load_json(root / "validator_sets.json")
    if not isinstance(sets_doc, dict) or set(sets_doc) != {"validator_sets", "state_nodes"}:
        raise BundleError("validator_sets.json: expected validator_sets and state_nodes")
    sets = check_validator_set_chain(
        sets_doc["validator_sets"],
        sets_doc["state_nodes"],
        genesis,
        last // length,
        "validator_sets.json: ",
    )
    for name in manifest["files"]:
        path = name["path"]
        if path.startswith("artifacts/"):
            expected = path.removeprefix("artifacts/sha256-")
            if _sha256_file(root / path)[0] != expected:
                raise BundleError(f"{path}: content does not match its sha256 name")
    source = ExportSource(root, [f["path"] for f in manifest["files"]])
    report = VerifyReport(genesis.chain_id, genesis_header(genesis).hash(), first, last, reexecute)
    verifier = _Verifier(genesis, source, report, None, sets)
    start = time.perf_counter()
    try:
        if reexecute:
            verifier.reexec = _Reexecutor(genesis)
        verifier.run(first, last, None, progress)
    except VerificationFailed as exc:
        report.failure = Failure(exc.height, exc.field, exc.message)
    report.seconds = time.perf_counter() - start
    report.epochs = {e: s.members for e, s in sorted(sets.items())}
    return report
