"""Fixtures for the CLI tests: one initialised network shared by the read-only tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from node.init import NetworkLayout, load_network
from registry.cli import app

CHAIN_ID = 4242
runner = CliRunner()


def twinchain(*args: str | Path | int, input: str | None = None) -> tuple[int, str]:
    """Run ``twinchain ARGS`` in process; return (exit code, stdout + stderr)."""
    result = runner.invoke(app, [str(a) for a in args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture(scope="session")
def network(tmp_path_factory: pytest.TempPathFactory) -> NetworkLayout:
    """A 4-miner PBFT network made by `twinchain init` (read-only for the tests)."""
    root = tmp_path_factory.mktemp("cli") / "net"
    code, output = twinchain(
        "init", "--out", root, "--nodes", "4", "--chain-id", CHAIN_ID, "--twins", "2",
        "--admins", "2/3", "--fast-keys",
    )  # fmt: skip
    assert code == 0, output
    return load_network(root)
