"""The ``twinchain`` command (Typer + Rich).

Sub-commands are added as the capabilities behind them land; each one only claims what
works.
"""

from __future__ import annotations

import sys
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="twinchain",
    help="TwinChain: a permissioned blockchain model registry for digital twins of 6G networks.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the TwinChain version."""
    typer.echo(dist_version("twinchain"))


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def sim(ctx: typer.Context) -> None:
    """Run the deterministic consensus simulator (options of `python -m node.consensus.sim`)."""
    from node.consensus.sim.__main__ import main as sim_main

    raise typer.Exit(sim_main(list(ctx.args)))


@app.command()
def demo(
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Keep the network and caches here.")
    ] = None,
    twins: Annotated[int, typer.Option(min=1, max=50, help="Twin objects taking part.")] = 5,
    rounds: Annotated[int, typer.Option(min=1, max=20, help="Federated rounds.")] = 3,
) -> None:
    """Run the whole story on a local 4-miner network: register, warm-start, federate, audit."""
    from rich.console import Console

    from registry.demo import run_demo

    console = Console()
    if directory is not None and directory.exists() and any(directory.iterdir()):
        console.print(f"[red]error:[/red] {directory} is not empty")
        raise typer.Exit(2)
    result = run_demo(directory, twins=twins, rounds=rounds, say=console.print)
    ok = result.heads_agree and result.certificate_ok
    raise typer.Exit(0 if ok else 1)


def _register() -> None:
    from registry.cli_node import node_app

    app.add_typer(node_app, name="node")
    from registry.cli_api import api_app

    app.add_typer(api_app, name="api")
    from registry.cli_network import register_network_commands

    register_network_commands(app)
    from registry.cli_registry import register_registry_commands

    register_registry_commands(app)
    from registry.audit.cli import register_audit_commands

    register_audit_commands(app)


_register()


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())


if __name__ == "__main__":
    main()
