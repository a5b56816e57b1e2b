"""``twinchain audit equivocations`` and ``twinchain audit jail``.

``equivocations`` gathers the evidence records miners stored — from data directories
(read-only; ``--data-dir`` may repeat) and/or from running miners over JSON-RPC
(``--url``, signed in with ``--keystore`` + ``--password-file``/``--password-env``, or a
bearer ``--token``) — dedupes them by offence and verifies each against the validator set
of its epoch (derived from a data directory's chain; with only ``--url``, asked of that
miner). ``jail`` submits one record, by id (a prefix is enough), to the Election contract
as a transaction signed with the given member key.

Exit codes: 0 every listed record verifies (or none exist) / the validator is jailed;
1 a record does not verify, or the operation failed (refused by the contract or the node,
unknown id, node unreachable); 2 the command line is wrong (missing or inconsistent
options, unreadable files or directories).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from node.errors import InvalidInput, TwinChainError
from registry.audit.cli import audit_app
from registry.cli_registry import Keystore, PasswordEnv, PasswordFile, Url

__all__ = ["equivocations", "jail"]

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

DataDirs = Annotated[
    list[Path] | None,
    typer.Option("--data-dir", help="A miner's data directory (repeat for several miners)."),
]
GenesisOpt = Annotated[
    Path | None,
    typer.Option("--genesis", help="genesis.json (default: found beside the data dir)."),
]
Token = Annotated[str | None, typer.Option("--token", help="Bearer token for --url.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


class UsageError(InvalidInput):
    """The command line is wrong (exit code 2)."""


class Failed(TwinChainError):
    """The command ran but its answer is negative (exit code 1, already reported)."""


def _run(action: Callable[[], None]) -> None:
    try:
        action()
    except Failed as exc:
        raise typer.Exit(1) from exc
    except UsageError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except TwinChainError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    except OSError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _key(keystore: Path | None, password_file: Path | None, password_env: str | None) -> bytes:
    from node.pki import load_keystore, read_password

    if keystore is None:
        raise UsageError("give --keystore")
    if not keystore.is_file():
        raise UsageError(f"{keystore}: no such keystore")
    if password_file is None and password_env is None:
        raise UsageError("give --password-file or --password-env")
    try:
        password = read_password(password_file, password_env)
        return load_keystore(keystore, password)
    except TwinChainError as exc:
        raise UsageError(f"{keystore}: {exc}") from exc


def _collect(
    data_dirs: list[Path],
    genesis: Path | None,
    url: str | None,
    token: str | None,
    key: bytes | None,
) -> tuple[int, list[Any]]:
    """Chain id and verified records from every source given."""
    from registry.audit import equivocation as eq
    from registry.audit.source import MinerData

    if not data_dirs and url is None:
        raise UsageError("give at least one --data-dir or --url")
    if genesis is not None and not genesis.is_file():
        raise UsageError(f"{genesis}: no such genesis file")
    raws: list[eq.RawRecord] = []
    sets: list[tuple[str, eq.ValidatorSets]] = []
    chain_id: int | None = None
    epoch_length: int | None = None
    for directory in data_dirs:
        if not directory.is_dir():
            raise UsageError(f"{directory}: no such directory")
        try:
            data = MinerData.open(directory, genesis)
        except InvalidInput as exc:
            raise UsageError(str(exc)) from exc
        if chain_id is not None and data.genesis.chain_id != chain_id:
            raise UsageError(
                f"{directory} belongs to chain {data.genesis.chain_id}, not {chain_id}"
            )
        chain_id, epoch_length = data.genesis.chain_id, data.genesis.consensus.epoch_length
        raws.extend(eq.read_data_dir(data))
        store = eq.open_chain_readonly(data)
        sets.append((f"chain:{directory}", eq.chain_validator_sets(data.genesis, store)))
    if url is not None:
        if token is None and key is None:
            raise UsageError("--url needs --token or --keystore with a password")
        call = eq.rpc_caller(url, token=token, private_key=key)
        raws.extend(eq.read_rpc(call, url))
        remote_chain = int(str(call("eth_chainId", [])), 16)
        if chain_id is not None and remote_chain != chain_id:
            raise UsageError(f"{url} serves chain {remote_chain}, the data dirs chain {chain_id}")
        chain_id = remote_chain
        if epoch_length is None:
            if genesis is None:
                raise UsageError("with only --url, give --genesis (for the epoch length)")
            from node.chain.genesis import load_genesis

            loaded = load_genesis(genesis)
            epoch_length = loaded.consensus.epoch_length
            sets.append(("genesis", eq.genesis_validator_sets(loaded)))
        sets.append((f"rpc:{url}", eq.rpc_validator_sets(call)))
    assert chain_id is not None and epoch_length is not None
    return chain_id, eq.gather(raws, chain_id, epoch_length, sets)


@audit_app.command()
def equivocations(
    data_dir: DataDirs = None,
    genesis: GenesisOpt = None,
    url: Url = None,
    token: Token = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    validator: Annotated[
        str | None, typer.Option("--validator", help="Only records against this address.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """List equivocation evidence gathered by miners; verify each against its epoch's set."""

    def action() -> None:
        key = None
        if url is not None and token is None and keystore is not None:
            key = _key(keystore, password_file, password_env)
        chain_id, records = _collect(list(data_dir or []), genesis, url, token, key)
        if validator is not None:
            wanted = validator.lower()
            if len(wanted) != 42 or not wanted.startswith("0x"):
                raise UsageError(f"--validator must be 0x + 40 hex digits, got {validator!r}")
            records = [r for r in records if r.validator == wanted]
        if as_json:
            typer.echo(json.dumps([r.to_json(chain_id) for r in records], indent=2))
        else:
            _table(records)
        bad = [r for r in records if not r.verified]
        if bad:
            err.print(f"[red]{len(bad)} of {len(records)} record(s) do not verify[/red]")
            raise Failed("unverified evidence")

    _run(action)


def _table(records: list[Any]) -> None:
    if not records:
        out.print("no equivocation evidence")
        return
    table = Table(title="Equivocation evidence")
    table.add_column("id", no_wrap=True)
    table.add_column("validator", no_wrap=True)
    for column in ("engine", "kind", "height", "position", "epoch", "status"):
        table.add_column(column)
    table.add_column("digests")
    table.add_column("sources")
    for r in records:
        status = "[green]verified[/green]" if r.verified else f"[red]invalid: {r.reason}[/red]"
        digests = ""
        if r.evidence is not None:
            digests = " / ".join(
                "0x" + bytes(m.digest).hex()[:12] for m in (r.evidence.first, r.evidence.second)
            )
        table.add_row(
            r.id,
            r.validator,
            r.engine,
            r.kind,
            str(r.height),
            r.position,
            str(r.epoch),
            status,
            digests,
            str(len(r.sources)),
        )
    out.print(table)


@audit_app.command()
def jail(
    evidence_id: Annotated[str, typer.Argument(help="Evidence id (a unique prefix is enough).")],
    url: Url = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    data_dir: DataDirs = None,
    genesis: GenesisOpt = None,
    as_json: AsJson = False,
) -> None:
    """Submit one evidence record to the Election contract (DPoS): jail the delegate."""

    def action() -> None:
        from registry.audit import equivocation as eq

        if url is None:
            raise UsageError("give --url (the miner to submit the transaction to)")
        key = _key(keystore, password_file, password_env)
        dirs = list(data_dir or [])
        _chain_id, records = _collect(dirs, genesis, None if dirs else url, None, key)
        record = eq.find_record(records, evidence_id)
        result = eq.submit_jail(url, key, record)
        if as_json:
            typer.echo(json.dumps(result.to_json(), indent=2))
        else:
            out.print(
                f"jail {record.validator} (evidence {record.id}): tx {result.tx_hash} "
                f"{result.status} in block {result.block_height}; jailed: {result.jailed}"
            )
        if not result.jailed:
            err.print(f"[red]{record.validator} is not jailed ({result.status})[/red]")
            raise Failed("not jailed")

    _run(action)
