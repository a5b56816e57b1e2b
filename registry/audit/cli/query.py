"""``twinchain audit index|history|lineage|actor|round|validators``: queries from the CLI.

Every command reads a miner's data directory read-only (``--data-dir DIR`` with
``--genesis FILE`` when ``genesis.json`` is not beside it, or ``--config miner.toml``),
brings the audit index (``DIR/audit/index.db``, or ``--index FILE``) up to date, and
prints a Rich table — or JSON with ``--json`` (``--format json`` for ``lineage``).

Exit codes: 0 found and printed; 1 not found (unknown model, ref, round, address with no
activity, epoch not determined yet) or the index disagrees with the chain store (rebuild
it with ``audit index --rebuild``); 2 bad input (options, addresses, times, names).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from node.errors import Conflict, InvalidInput, NotFound, TwinChainError
from registry.audit.cli import audit_app
from registry.audit.graph import FORMATS, lineage_graph, render, round_graph
from registry.audit.index import AuditIndex
from registry.audit.queries import AuditQueries, Event, Filters

__all__ = ["actor", "history", "index", "lineage", "round_", "validators"]

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
T = TypeVar("T")

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="A miner's data directory (holds chain.db).")
]
GenesisOpt = Annotated[
    Path | None, typer.Option("--genesis", help="genesis.json (default: found near the data dir).")
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="A miner's TOML config (data dir and genesis).")
]
IndexOpt = Annotated[
    Path | None, typer.Option("--index", help="Index file (default DATA_DIR/audit/index.db).")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]
Since = Annotated[
    str | None, typer.Option("--since", help="From this time (ISO-8601 or unix seconds).")
]
Until = Annotated[
    str | None, typer.Option("--until", help="Up to this time (ISO-8601 or unix seconds).")
]
FromBlock = Annotated[int | None, typer.Option("--from-block", help="From this height.")]
ToBlock = Annotated[int | None, typer.Option("--to-block", help="Up to this height.")]


def _run(action: Callable[[], T]) -> T:
    """Map errors to exit codes: 2 bad input, 1 not found / inconsistent."""
    try:
        return action()
    except NotFound as exc:
        err.print(f"[red]not found:[/red] {exc}")
        raise typer.Exit(1) from exc
    except Conflict as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    except InvalidInput as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except TwinChainError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


def _open(
    data_dir: Path | None, genesis: Path | None, config: Path | None, index_path: Path | None
) -> AuditIndex:
    if config is not None:
        if data_dir is not None:
            raise InvalidInput("give --data-dir or --config, not both")
        from node.config import load_config

        cfg = load_config(config)
        data_dir = Path(cfg.node.data_dir)
        genesis = genesis or Path(cfg.node.genesis)
    if data_dir is None:
        raise InvalidInput("which miner? give --data-dir DIR (or --config miner.toml)")
    if not data_dir.is_dir():
        raise InvalidInput(f"{data_dir}: not a directory")
    if genesis is not None and not genesis.is_file():
        raise InvalidInput(f"{genesis}: no such genesis file")
    return AuditIndex.open(data_dir, genesis, index_path)


def _queries(
    data_dir: Path | None, genesis: Path | None, config: Path | None, index_path: Path | None
) -> AuditQueries:
    index = _open(data_dir, genesis, config, index_path)
    index.update()
    return AuditQueries(index)


def _print_json(value: Any) -> None:
    out.print_json(json.dumps(value))


def _short(value: str | None, keep: int = 10) -> str:
    if value is None:
        return "-"
    return value if len(value) <= keep + 4 else f"{value[: keep + 2]}…"


def _summary(ev: Event) -> str:
    a = ev.args
    name = ev.name
    if name == "ModelVersionRegistered":
        origin = f" from round {a['round_id']}" if a.get("round_id") else ""
        parents = ", ".join(str(p) for p in a.get("parents", [])) or "none"
        return f"{a['name']} v{a['version']} (id {a['version_id']}), parents {parents}{origin}"
    if name == "AliasMoved":
        target = a["version_id"] or "cleared"
        return f"{a['model']}:{a['alias']} {a['previous_version_id'] or '-'} → {target}"
    if name in ("VersionDeprecated", "VersionRevoked"):
        return f"{a['name']} v{a['version']} (id {a['version_id']}): {a['reason']}"
    if name == "RoundOpened":
        return f"round {a['round_id']} on version {a['base_version']}, min {a['min_updates']}"
    if name == "UpdatePushed":
        kind = "sparse" if a["kind"] == 1 else "dense"
        return f"update {a['update_id']} to round {a['round_id']}: {kind}, {a['samples']} samples"
    if name == "RoundClosed":
        included = ", ".join(str(u) for u in a["included_update_ids"])
        return f"round {a['round_id']} → version {a['version_id']} ({a['strategy']}; {included})"
    if name == "RoundCancelled":
        return f"round {a['round_id']}: {a['reason']}"
    if name in ("RoleGranted", "RoleRevoked"):
        return f"{a['account']} role bits {a['role']} (now {a['roles']})"
    if name == "GenesisMember":
        return f"{a['account']}: {', '.join(a['role_names'])}"
    if name.startswith("Proposal"):
        return f"proposal {a['proposal_id']}" + (
            f": action {a['action']} on {a['account']} ({a['argument']})" if "action" in a else ""
        )
    if name == "DatasetRegistered":
        return f"{a['name']} v{a['version']} (id {a['dataset_id']})"
    keys = [k for k in a if k != "block"]
    return ", ".join(f"{k}={a[k]}" for k in keys[:4])


def _events_table(title: str, events: tuple[Event, ...], extra: list[str] | None = None) -> Table:
    table = Table(title=title)
    for column in ("block", "time (UTC)", "event", "what", "actor", "tx"):
        table.add_column(column, overflow="fold")
    if extra is not None:
        table.add_column("as")
    from datetime import UTC, datetime

    for i, ev in enumerate(events):
        when = datetime.fromtimestamp(ev.timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")
        row = [
            str(ev.block),
            when,
            ev.name,
            _summary(ev),
            _short(ev.actor or ev.sender, 12),
            _short(ev.tx_hash, 10),
        ]
        if extra is not None:
            row.append(extra[i])
        table.add_row(*row)
    return table


@audit_app.command("index")
def index(
    data_dir: DataDir = None,
    genesis: GenesisOpt = None,
    config: ConfigOpt = None,
    index_path: IndexOpt = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Forget the index and rebuild it from genesis.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Bring the audit index up to date (or rebuild it from scratch)."""

    def action() -> None:
        ix = _open(data_dir, genesis, config, index_path)
        count = ix.rebuild() if rebuild else ix.update()
        report = {
            "index": str(ix.path),
            "indexed_blocks": count,
            "indexed_height": ix.indexed_height,
            "rebuilt": rebuild,
        }
        if as_json:
            _print_json(report)
        else:
            verb = "rebuilt" if rebuild else "updated"
            out.print(f"{verb} {ix.path}: {count} blocks indexed, height {ix.indexed_height}")

    _run(action)


@audit_app.command("history")
def history(
    model: Annotated[str, typer.Argument(help="Model name.")],
    data_dir: DataDir = None,
    genesis: GenesisOpt = None,
    config: ConfigOpt = None,
    index_path: IndexOpt = None,
    since: Since = None,
    until: Until = None,
    from_block: FromBlock = None,
    to_block: ToBlock = None,
    as_json: AsJson = False,
) -> None:
    """Every version registration, alias move, deprecation and revocation of MODEL."""

    def action() -> None:
        filters = Filters.parse(since, until, from_block, to_block)
        result = _queries(data_dir, genesis, config, index_path).history(model, filters)
        if as_json:
            _print_json(result.to_json())
        else:
            out.print(_events_table(f"history of {model}", result.events))

    _run(action)


@audit_app.command("lineage")
def lineage(
    target: Annotated[str, typer.Argument(metavar="MODEL@REF", help="e.g. link@production")],
    data_dir: DataDir = None,
    genesis: GenesisOpt = None,
    config: ConfigOpt = None,
    index_path: IndexOpt = None,
    fmt: Annotated[
        str, typer.Option("--format", help="table, json, dot, svg or mermaid.")
    ] = "table",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write to FILE instead of stdout.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """The DAG behind MODEL@REF (REF: a version number, an alias, or latest)."""

    def action() -> None:
        chosen = "json" if as_json else fmt
        if chosen not in ("table", "json", *FORMATS):
            raise InvalidInput(f"--format {fmt!r}: expected table, json, dot, svg or mermaid")
        model, _, ref = target.partition("@")
        if not model:
            raise InvalidInput(f"{target!r}: expected MODEL@REF (e.g. link@latest)")
        result = _queries(data_dir, genesis, config, index_path).lineage(model, ref or "latest")
        if chosen == "table":
            text = None
            _lineage_table(result)
        elif chosen == "json":
            text = json.dumps(result.to_json(), indent=2) + "\n"
        else:
            text = render(lineage_graph(result), chosen)
        if text is not None:
            _emit(text, output)

    _run(action)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot write {output}: {exc}") from exc
    err.print(f"wrote {output}")


def _lineage_table(result: Any) -> None:
    table = Table(title=f"lineage of {result.model}@{result.ref} (version id {result.version_id})")
    for column in ("id", "version", "status", "parents", "datasets", "round", "block", "tx"):
        table.add_column(column)
    for v in result.versions:
        table.add_row(
            str(v.id),
            f"{v.name} v{v.version}",
            v.status,
            ", ".join(map(str, v.parents)) or "-",
            ", ".join(map(str, v.datasets)) or "-",
            str(v.round_id or "-"),
            str(v.block),
            _short(v.tx_hash),
        )
    out.print(table)
    if result.rounds:
        rounds = Table(title="aggregates")
        for column in ("round", "base", "strategy", "result", "update", "twin", "samples", "kind"):
            rounds.add_column(column)
        for r in result.rounds:
            for u in [u for u in result.updates if u.round_id == r.id]:
                rounds.add_row(
                    str(r.id),
                    str(r.base_version),
                    r.strategy or "-",
                    str(r.result_version),
                    str(u.id),
                    u.twin,
                    str(u.samples),
                    u.kind,
                )
        out.print(rounds)
    if result.datasets:
        datasets = Table(title="datasets")
        for column in ("id", "dataset", "digest", "registrant"):
            datasets.add_column(column)
        for d in result.datasets:
            datasets.add_row(str(d.id), f"{d.name} v{d.version}", _short(d.digest), d.registrant)
        out.print(datasets)


@audit_app.command("actor")
def actor(
    address: Annotated[str, typer.Argument(help="Account address (0x…).")],
    data_dir: DataDir = None,
    genesis: GenesisOpt = None,
    config: ConfigOpt = None,
    index_path: IndexOpt = None,
    since: Since = None,
    until: Until = None,
    from_block: FromBlock = None,
    to_block: ToBlock = None,
    as_json: AsJson = False,
) -> None:
    """Everything ADDRESS did (or had done to it), in chain order."""

    def action() -> None:
        filters = Filters.parse(since, until, from_block, to_block)
        result = _queries(data_dir, genesis, config, index_path).actor(address, filters)
        if as_json:
            _print_json(result.to_json())
        else:
            roles = ", ".join(result.roles_at_genesis) or "none"
            out.print(f"{result.address} — roles at genesis: {roles}")
            relations = ["/".join(r) for r in result.relations]
            out.print(_events_table(f"activity of {result.address}", result.events, relations))

    _run(action)


@audit_app.command("round")
def round_(
    round_id: Annotated[int, typer.Argument(help="Round id (from 1).")],
    data_dir: DataDir = None,
    genesis: GenesisOpt = None,
    config: ConfigOpt = None,
    index_path: IndexOpt = None,
    since: Since = None,
    until: Until = None,
    from_block: FromBlock = None,
    to_block: ToBlock = None,
    fmt: Annotated[
        str, typer.Option("--format", help="table, json, dot, svg or mermaid.")
    ] = "table",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to FILE.")] = None,
    as_json: AsJson = False,
) -> None:
    """A federated round: opening, every update, close (strategy, result) or cancel."""

    def action() -> None:
        chosen = "json" if as_json else fmt
        if chosen not in ("table", "json", *FORMATS):
            raise InvalidInput(f"--format {fmt!r}: expected table, json, dot, svg or mermaid")
        filters = Filters.parse(since, until, from_block, to_block)
        result = _queries(data_dir, genesis, config, index_path).round(round_id, filters)
        if chosen == "json":
            _emit(json.dumps(result.to_json(), indent=2) + "\n", output)
        elif chosen != "table":
            _emit(render(round_graph(result), chosen), output)
        else:
            r = result.round
            out.print(
                f"round {r.id} of {r.model} on version {r.base_version}: {r.status}"
                + (f", {r.strategy} → version {r.result_version}" if r.strategy else "")
                + (f" ({r.cancel_reason})" if r.cancel_reason else "")
            )
            updates = Table(title="updates")
            for column in ("id", "twin", "samples", "kind", "digest", "block", "included"):
                updates.add_column(column)
            for u in result.updates:
                updates.add_row(
                    str(u.id),
                    u.twin,
                    str(u.samples),
                    u.kind,
                    _short(u.digest),
                    str(u.block),
                    "yes" if u.included else "no",
                )
            out.print(updates)
            out.print(_events_table("events", result.events))

    _run(action)


@audit_app.command("validators")
def validators(
    epoch: Annotated[int | None, typer.Option("--epoch", help="Only this epoch.")] = None,
    data_dir: DataDir = None,
    genesis: GenesisOpt = None,
    config: ConfigOpt = None,
    index_path: IndexOpt = None,
    as_json: AsJson = False,
) -> None:
    """The validator set of each epoch and how it was chosen."""

    def action() -> None:
        queries = _queries(data_dir, genesis, config, index_path)
        result = queries.validators(epoch)
        if as_json:
            _print_json({"engine": queries.index.engine, "epochs": [e.to_json() for e in result]})
            return
        table = Table(title=f"validator sets ({queries.index.engine})")
        for column in ("epoch", "heights", "members", "chosen by", "changes"):
            table.add_column(column, overflow="fold")
        for e in result:
            change = [f"+{m}" for m in e.added] + [f"-{m}" for m in e.removed]
            why = [f"{ev.name} @{ev.block} by {_short(ev.actor, 10)}" for ev in e.changes]
            table.add_row(
                str(e.epoch),
                f"{e.first_height}..{e.last_height}",
                "\n".join(e.members),
                e.source,
                "\n".join(change + why) or "-",
            )
        out.print(table)

    _run(action)
