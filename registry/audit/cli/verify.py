"""``twinchain audit verify | proof | check | export``: verification and evidence.

- ``verify --data-dir DIR [--from H] [--to H] [--reexecute] [--json]`` checks a miner's
  stored chain (or ``--export DIR``, an export) and names the first failing height;
- ``proof TX_HASH | --model NAME@REF | --round ID -o bundle.json`` writes an evidence
  bundle;
- ``check PATH --genesis genesis.json`` verifies a bundle file or an export directory
  offline;
- ``export --from H [--to H] DIR [--artifacts]`` writes an export with a manifest.

Exit codes: 0 verified / written; 1 verification failed (the reason is printed); 2 bad
input (options, unreadable or missing files).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from node.chain.genesis import Genesis, load_genesis
from node.chain.types import parse_hash32
from node.errors import InvalidInput, TwinChainError
from registry.audit.cli import audit_app
from registry.audit.source import MinerData

__all__ = ["check", "export", "proof", "verify"]

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True, highlight=False)

#: Ranges at least this long show a progress bar (on stderr).
PROGRESS_MIN = 2000

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="A miner's data directory (holds chain.db).")
]
GenesisOpt = Annotated[
    Path | None,
    typer.Option("--genesis", help="genesis.json (default: found beside the data dir)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


class _Failed(Exception):
    """Verification failed (exit 1); the reason was printed."""


def _run(action: Callable[[], None]) -> None:
    from registry.audit.verify import VerificationFailed

    try:
        action()
    except _Failed as exc:
        raise typer.Exit(1) from exc
    except InvalidInput as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except OSError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except VerificationFailed as exc:
        err.print(f"[red]verification failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    except TwinChainError as exc:
        err.print(f"[red]verification failed:[/red] {exc}")
        raise typer.Exit(1) from exc


def _data(data_dir: Path | None, genesis: Path | None) -> MinerData:
    if data_dir is None:
        raise InvalidInput("give --data-dir (a miner's data directory)")
    return MinerData.open(data_dir, genesis)


def _genesis(path: Path | None) -> Genesis:
    if path is None:
        raise InvalidInput("give --genesis genesis.json")
    if not path.is_file():
        raise InvalidInput(f"{path}: no such genesis file")
    return load_genesis(path)


@contextmanager
def _progress(total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    if total < PROGRESS_MIN:
        yield None
        return
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task(label, total=total)
    with bar:
        yield lambda done: bar.update(task, completed=done)


def _print_report(report: Any, as_json: bool, what: str) -> None:
    if as_json:
        out.print_json(json.dumps(report.to_json()))
    elif report.ok:
        out.print(
            f"ok: {what} blocks {report.from_height}..{report.to_height} verified "
            f"({report.checked} blocks, {report.transactions} transactions, "
            f"{report.signatures} signatures, {len(report.epochs)} validator sets"
            f"{', re-executed' if report.reexecuted else ''}) in {report.seconds:.2f} s "
            f"({report.blocks_per_second:,.0f} blocks/s)"
        )
    else:
        out.print(
            f"FAILED at block {report.failure.height} ({report.failure.field}): {report.failure}"
        )
    if not report.ok:
        raise _Failed


@audit_app.command()
def verify(
    data_dir: DataDir = None,
    genesis: GenesisOpt = None,
    from_height: Annotated[int, typer.Option("--from", help="First height.", min=0)] = 0,
    to_height: Annotated[
        int | None, typer.Option("--to", help="Last height (default: head).", min=0)
    ] = None,
    reexecute: Annotated[
        bool, typer.Option("--reexecute", help="Re-execute every block from genesis (state roots).")
    ] = False,
    export_dir: Annotated[
        Path | None, typer.Option("--export", help="Verify an export directory instead.")
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", help="Processes for long ranges (store only).", min=1)
    ] = 1,
    as_json: AsJson = False,
) -> None:
    """Verify hash links, roots, receipts and every commit certificate against its epoch's
    validator set (followed from genesis); report the first failing height and why."""

    def action() -> None:
        from registry.audit.verify import ChainReader, verify_chain

        if export_dir is not None:
            _check_export(export_dir, _genesis(genesis), reexecute, as_json)
            return
        data = _data(data_dir, genesis)
        with ChainReader(data.chain_db) as reader:
            head = reader.head_height()
        last = head if to_height is None else to_height
        with _progress(last - from_height + 1, "verifying") as progress:
            report = verify_chain(
                data, from_height, to_height, reexecute, progress=progress, jobs=jobs
            )
        _print_report(report, as_json, "chain")

    _run(action)


def _check_export(root: Path, genesis: Genesis, reexecute: bool, as_json: bool) -> None:
    from registry.audit.bundle import load_json
    from registry.audit.export import check_export

    if not (root / "manifest.json").is_file():
        raise InvalidInput(f"{root}: no manifest.json (not an export directory)")
    manifest = load_json(root / "manifest.json")
    total = 0
    if isinstance(manifest, dict) and isinstance(manifest.get("to"), int):
        total = manifest["to"] - int(manifest.get("from") or 0) + 1
    with _progress(total, "verifying export") as progress:
        report = check_export(root, genesis, reexecute=reexecute, progress=progress)
    _print_report(report, as_json, "export")


@audit_app.command()
def proof(
    tx_hash: Annotated[str | None, typer.Argument(help="Transaction hash (0x + 64 hex).")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="NAME@REF: the version's registering tx.")
    ] = None,
    round_id: Annotated[
        int | None, typer.Option("--round", help="Round id: its opening and closing txs.", min=1)
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Bundle file to write.")
    ] = None,
    data_dir: DataDir = None,
    genesis: GenesisOpt = None,
) -> None:
    """Write a self-contained evidence bundle (checked offline with ``audit check``)."""

    def action() -> None:
        from registry.audit.bundle import (
            build_bundle,
            check_bundle,
            hx,
            resolve_model,
            resolve_round,
        )
        from registry.audit.verify import ChainReader

        chosen = [x for x in (tx_hash, model, round_id) if x is not None]
        if len(chosen) != 1:
            raise InvalidInput("give exactly one of TX_HASH, --model NAME@REF, --round ID")
        if output is None:
            raise InvalidInput("give -o bundle.json")
        data = _data(data_dir, genesis)
        with ChainReader(data.chain_db) as reader:
            if tx_hash is not None:
                digest = parse_hash32(tx_hash, "TX_HASH")
                subject: dict[str, Any] = {"kind": "transaction", "tx_hash": hx(digest)}
                txs = [bytes(digest)]
            elif model is not None:
                subject, txs = resolve_model(reader, model)
            else:
                assert round_id is not None
                subject, txs = resolve_round(reader, round_id)
            bundle = build_bundle(reader, data.genesis, txs, subject)
        check_bundle(bundle, data.genesis)  # never hand over a bundle that does not check
        output.write_text(json.dumps(bundle, indent=1) + "\n")
        out.print(
            f"wrote {output}: {len(bundle['proofs'])} transaction proof(s), "
            f"{len(bundle['validator_sets'])} validator-set epoch(s)"
        )

    _run(action)


@audit_app.command()
def check(
    path: Annotated[Path, typer.Argument(help="A bundle file or an export directory.")],
    genesis: GenesisOpt = None,
    reexecute: Annotated[
        bool, typer.Option("--reexecute", help="Exports from height 0: re-execute too.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Verify a bundle or an export OFFLINE, with only genesis.json."""

    def action() -> None:
        from registry.audit.bundle import BundleError, check_bundle, load_json

        network = _genesis(genesis)
        if path.is_dir():
            _check_export(path, network, reexecute, as_json)
            return
        if not path.is_file():
            raise InvalidInput(f"{path}: no such bundle file or export directory")
        document = load_json(path)
        try:
            summary = check_bundle(document, network)
        except BundleError as exc:
            if as_json:
                out.print_json(json.dumps({"ok": False, "reason": str(exc)}))
            else:
                out.print(f"FAILED: {exc}")
            raise _Failed from exc
        if as_json:
            out.print_json(json.dumps(summary.to_json()))
            return
        out.print(f"ok: bundle verified offline against chain {summary.chain_id}")
        out.print(f"subject: {json.dumps(summary.subject)}")
        for tx in summary.transactions:
            out.print(
                f"  tx {tx['hash']} in block {tx['height']} ({tx['block_hash']}) index "
                f"{tx['index']} from {tx['sender']} status {tx['status']}"
            )
        out.print(f"validator sets proven from genesis: {summary.epochs} epoch boundary entries")

    _run(action)


@audit_app.command()
def export(
    directory: Annotated[Path, typer.Argument(help="Directory to write (missing or empty).")],
    from_height: Annotated[int, typer.Option("--from", help="First height.", min=0)] = 0,
    to_height: Annotated[
        int | None, typer.Option("--to", help="Last height (default: head).", min=0)
    ] = None,
    artifacts: Annotated[
        bool, typer.Option("--artifacts", help="Also copy referenced artifacts from blobs/.")
    ] = False,
    data_dir: DataDir = None,
    genesis: GenesisOpt = None,
    as_json: AsJson = False,
) -> None:
    """Copy what is needed to re-verify a range, with a manifest of sha256 digests."""

    def action() -> None:
        from registry.audit.export import export_range

        data = _data(data_dir, genesis)
        manifest = export_range(data, directory, from_height, to_height, artifacts=artifacts)
        if as_json:
            out.print_json(json.dumps(manifest))
            return
        size = sum(f["size"] for f in manifest["files"])
        out.print(
            f"exported blocks {manifest['from']}..{manifest['to']} to {directory}: "
            f"{len(manifest['files'])} files, {size:,} bytes (manifest.json lists their sha256)"
        )

    _run(action)
