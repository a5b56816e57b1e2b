"""`twinchain node start|status`: run one miner, or ask a running one how it is doing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from node.config import load_config
from node.errors import TwinChainError

node_app = typer.Typer(help="Run a miner, or show a running miner's status.", no_args_is_help=True)
console = Console()

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="The miner's TOML file.")]


@node_app.command("start")
def start(config: ConfigOption) -> None:
    """Start a miner in the foreground (stop it with Ctrl-C or SIGTERM).

    The miner serves the registry REST API under /v1 beside JSON-RPC, and enforces the
    registry's artifact rules (held artifacts, recomputed aggregates) in consensus."""
    from node.daemon import run_miner
    from registry.api import mount
    from registry.policy import RegistryPolicy

    try:
        cfg = load_config(config)
    except TwinChainError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    try:
        run_miner(cfg, routes=mount, policy=RegistryPolicy())
    except TwinChainError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc


@node_app.command("status")
def status(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="The miner's TOML.")] = None,
    url: Annotated[str | None, typer.Option(help="RPC URL, instead of --config.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Height, view/round, peers, finality lag and mempool size of a running miner."""
    if url is None:
        if config is None:
            console.print("[red]error:[/red] give --config or --url")
            raise typer.Exit(2)
        try:
            url = "http://" + load_config(config).rpc.listen
        except TwinChainError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from exc
    try:
        response = httpx.get(url.rstrip("/") + "/status", timeout=5)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        console.print(f"[red]error:[/red] miner at {url} is not answering: {exc}")
        raise typer.Exit(1) from exc
    data = response.json()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title=f"{data['name']} ({data['address']})", show_header=False)
    for key in (
        "engine",
        "height",
        "head_hash",
        "round",
        "epoch",
        "proposer",
        "round_changes",
        "finality_lag",
        "peers",
        "mempool",
        "evidence",
    ):
        table.add_row(key, str(data.get(key)))
    console.print(table)
