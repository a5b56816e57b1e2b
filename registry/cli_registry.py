"""`twinchain model|dataset|update|round`: the registry from the command line.

Every command talks to one miner through :class:`registry.client.TwinClient` and signs
with a member key, given either as ``--url URL --keystore FILE --password-file FILE``
(or ``--password-env VAR``), or as ``--network DIR --account NAME`` for a network made by
``twinchain init``/``up`` (the account's keystore and password file, the first miner's
URL). Transfers show progress bars on stderr; ``--json`` prints one JSON document on
stdout for scripts.

Exit codes: 0 done; 1 the operation failed (refused by the chain or the node, not found,
a download that does not match the chain, node unreachable); 2 the command line is
wrong (missing or inconsistent options, unreadable files, malformed values).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from node.blobs import ArtifactDigest
from node.errors import InvalidInput, TwinChainError

__all__ = ["dataset_app", "model_app", "register_registry_commands", "round_app", "update_app"]

err = Console(stderr=True, soft_wrap=True)
out = Console()

model_app = typer.Typer(
    help="Model versions: push, pull, list, show, alias, revoke.", no_args_is_help=True
)
dataset_app = typer.Typer(help="Datasets: push, pull, list.", no_args_is_help=True)
update_app = typer.Typer(help="Training updates: push one to a round.", no_args_is_help=True)
round_app = typer.Typer(help="Federated rounds: open, status, aggregate.", no_args_is_help=True)

Url = Annotated[
    str | None, typer.Option("--url", help="Miner base URL, e.g. http://127.0.0.1:8545.")
]
Keystore = Annotated[Path | None, typer.Option("--keystore", help="Encrypted Ethereum keystore.")]
PasswordFile = Annotated[
    Path | None, typer.Option("--password-file", help="Keystore password file.")
]
PasswordEnv = Annotated[
    str | None, typer.Option("--password-env", help="Env var with the password.")
]
Network = Annotated[Path | None, typer.Option("--network", help="Directory of `twinchain init`.")]
AccountName = Annotated[
    str | None, typer.Option("--account", help="Account name in --network, e.g. twin-0.")
]
CacheDir = Annotated[
    Path | None, typer.Option("--cache-dir", help="Download cache (default ~/.cache/twinchain).")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


@dataclasses.dataclass
class Session:
    """The connection options every command takes."""

    url: str | None = None
    keystore: Path | None = None
    password_file: Path | None = None
    password_env: str | None = None
    network: Path | None = None
    account: str | None = None
    cache_dir: Path | None = None


class UsageError(InvalidInput):
    """The command line is wrong (exit code 2)."""


def _resolve(session: Session) -> tuple[str, Path, Path | None, str | None]:
    """URL, keystore and password source from the options."""
    url, keystore = session.url, session.keystore
    password_file, password_env = session.password_file, session.password_env
    if session.network is not None:
        from node.init import load_network

        layout = load_network(session.network)
        if session.account is None:
            raise UsageError("--network needs --account NAME (e.g. twin-0, publisher-0)")
        found = {a.name: (a.keystore, a.password_file) for a in layout.accounts}
        found.update({m.name: (m.keystore, m.password_file) for m in layout.miners})
        if session.account not in found:
            raise UsageError(
                f"no account {session.account!r} in {session.network}; "
                f"known: {', '.join(sorted(found))}"
            )
        keystore = keystore or found[session.account][0]
        if password_file is None and password_env is None:
            password_file = found[session.account][1]
        url = url or layout.miners[0].rpc_url
    if url is None:
        raise UsageError("give --url (or --network DIR --account NAME)")
    if keystore is None:
        raise UsageError("give --keystore (or --network DIR --account NAME)")
    if password_file is None and password_env is None:
        raise UsageError("give --password-file or --password-env")
    return url, keystore, password_file, password_env


@contextmanager
def _client(session: Session, transfers: bool = True) -> Iterator[Any]:
    """A signed-in TwinClient with progress bars on stderr."""
    from node.pki import read_password
    from registry.client import TwinClient

    url, keystore, password_file, password_env = _resolve(session)
    try:
        password = read_password(password_file, password_env)
    except TwinChainError as exc:
        raise UsageError(str(exc)) from exc
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=err,
        transient=True,
        disable=not transfers,
    )
    tasks: dict[str, TaskID] = {}

    def report(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = progress.add_task(label, total=total)
        progress.update(tasks[label], completed=done)

    with progress:
        twin = TwinClient(url, keystore, password, cache_dir=session.cache_dir, progress=report)
        try:
            yield twin
        finally:
            twin.close()


def _run(action: Callable[[], None]) -> None:
    """Run a command body; map errors to messages and exit codes."""
    try:
        action()
    except UsageError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    except TwinChainError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from exc
    except OSError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _plain(value: Any) -> Any:
    if isinstance(value, ArtifactDigest):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _emit_json(value: Any) -> None:
    typer.echo(json.dumps(_plain(value), indent=2))


def _record_table(title: str, value: Any) -> None:
    table = Table(title=title, show_header=False)
    for key, item in _plain(value).items():
        if isinstance(item, dict):
            item = ", ".join(f"{k}={v}" for k, v in item.items())
        elif isinstance(item, list):
            item = ", ".join(str(v) for v in item)
        table.add_row(key, "" if item is None else str(item))
    out.print(table)


def _session(
    url: str | None,
    keystore: Path | None,
    password_file: Path | None,
    password_env: str | None,
    network: Path | None,
    account: str | None,
    cache_dir: Path | None = None,
) -> Session:
    return Session(url, keystore, password_file, password_env, network, account, cache_dir)


def _copy_out(path: Path, dest: Path | None) -> Path:
    if dest is None:
        return path
    if dest.is_dir():
        dest = dest / path.name
    shutil.copyfile(path, dest)
    return dest


# ---------------------------------------------------------------- models


@model_app.command("push")
def model_push(
    name: Annotated[str, typer.Argument(help="Model name.")],
    path: Annotated[
        Path, typer.Argument(help="Weights file (safetensors).", exists=True, dir_okay=False)
    ],
    parent: Annotated[
        list[str] | None, typer.Option("--parent", help="Parent: version id or NAME@REF.")
    ] = None,
    dataset: Annotated[
        list[str] | None, typer.Option("--dataset", help="Dataset: id or NAME@VERSION.")
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="Format recorded on chain.")] = "safetensors",
    url: Url = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    network: Network = None,
    account: AccountName = None,
    as_json: AsJson = False,
) -> None:
    """Upload weights and register them as the next version of NAME."""

    def action() -> None:
        parents = [int(p) if p.isdigit() else p for p in parent or []]
        datasets = [int(d) if d.isdigit() else d for d in dataset or []]
        session = _session(url, keystore, password_file, password_env, network, account)
        with _client(session) as twin:
            version = twin.register_model(
                name, path, parents=parents, datasets=datasets, alias=alias, format=fmt
            )
        if as_json:
            _emit_json(version)
        else:
            err.print(f"registered {name} v{version.version} (id {version.id}) {version.digest}")

    _run(action)


@model_app.command("pull")
def model_pull(
    name: Annotated[str, typer.Argument(help="Model name.")],
    ref: Annotated[str, typer.Option(help="Version number, alias or 'latest'.")] = "production",
    dest: Annotated[Path | None, typer.Option("--out", help="Copy the file here.")] = None,
    url: Url = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    network: Network = None,
    account: AccountName = None,
    cache_dir: CacheDir = None,
    as_json: AsJson = False,
) -> None:
    """Download weights, verified against the digest the chain records."""

    def action() -> None:
        session = _session(url, keystore, password_file, password_env, network, account, cache_dir)
        with _client(session) as twin:
            path = _copy_out(twin.warm_start(name, ref), dest)
        if as_json:
            _emit_json({"name": name, "ref": ref, "path": str(path)})
        else:
            typer.echo(str(path))

    _run(action)


@model_app.command("list")
def model_list(
    url: Url = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    network: Network = None,
    account: AccountName = None,
    as_json: AsJson = False,
) -> None:
    """Registered models, their newest live version and aliases."""

    def action() -> None:
        session = _session(url, keystore, password_file, password_env, network, account)
        with _client(session, transfers=False) as twin:
            models = twin.models()
        if as_json:
            _emit_json(models)
            return
        table = Table(title="models")
        for column in ("name", "versions", "latest id", "aliases"):
            table.add_column(column)
        for m in models:
            aliases = ", ".join(f"{a}->{v}" for a, v in m["aliases"].items())
            table.add_row(m["name"], str(m["versions"]), str(m["latest"]), aliases)
        out.print(table)

    _run(action)


@model_app.command("show")
def model_show(
    name: Annotated[str, typer.Argument(help="Model name.")],
    ref: Annotated[str, typer.Option(help="Version number, alias or 'latest'.")] = "latest",
    url: Url = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    network: Network = None,
    account: AccountName = None,
    as_json: AsJson = False,
) -> None:
    """One version of a model, with its on-chain proof."""

    def action() -> None:
        session = _session(url, keystore, password_file, password_env, network, account)
        with _client(session, transfers=False) as twin:
            version = twin.model(name, ref)
        if as_json:
            _emit_json(version)
        else:
            _record_table(f"{name} @ {ref}", version)

    _run(action)


@model_app.command("alias")
def model_alias(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias, e.g. production.")],
    ref: Annotated[str, typer.Argument(help="Version number, alias or 'latest'.")],
    url: Url = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    network: Network = None,
    account: AccountName = None,
    as_json: AsJson = False,
) -> None:
    """Point ALIAS of NAME at the version REF (PUBLISHER)."""

    def action() -> None:
        session = _session(url, keystore, password_file, password_env, network, account)
        with _client(session, transfers=False) as twin:
            version = twin.set_alias(name, alias, ref)
        if as_json:
            _emit_json(version)
        else:
            err.print(f"{name}:{alias} -> v{version.version} (id {version.id})")

    _run(action)


@model_app.command("revoke")
def model_revoke(
    name: Annotated[str, typer.Argument(help="Model name.")],
    ref: Annotated[str, typer.Argument(help="Version number, alias or 'latest'.")],
    reason: Annotated[str, typer.Option(help="Why (recorded on chain).")],
    url: Url = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    network: Network = None,
    account: AccountName = None,
    as_json: AsJson = False,
) -> None:
    """Revoke a version: it is never served as latest or through an alias again."""

    def action() -> None:
        session = _session(url, keystore, password_file, password_env, network, account)
        with _client(session, transfers=False) as twin:
            version = twin.revoke(name, ref, reason)
        if as_json:
            _emit_json(version)
        else:
            err.print(f"revoked {name} v{version.version} (id {version.id})")

    _run(action)


# ---------------------------------------------------------------- datasets


@dataset_app.command("push")
def dataset_push(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    path: Annotated[Path, typer.Argument(help="Dataset file.", exists=True, dir_okay=False)],
    media_type: Annotated[
        str, typer.Option(help="Media type recorded on chain.")
    ] = "application/octet-stream",
    url: Url = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    network: Network = None,
    account: AccountName = None,
    as_json: AsJson = False,
) -> None:
    """Upload a dataset file and register it as the next version of NAME."""

    def action() -> None:
        session = _session(url, keystore, password_file, password_env, network, account)
        with _client(session) as twin:
            dataset = twin.register_dataset(name, path, media_type=media_type)
        if as_json:
            _emit_json(dataset)
        else:
            err.print(f"registered dataset {name} v{dataset.version} (id {dataset.id})")

    _run(action)


@dataset_app.command("pull")
def dataset_pull(
    name: Annotated[str, typer.Argument(help="Dataset name.")],
    ref: Annotated[str, typer.Option(help="Version number or 'latest'.")] = "latest",
    dest: Annotated[Path | None, typer.Option("--out", help="Copy the file here.")] = None,
    url: Url = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    network: Network = None,
    account: AccountName = None,
    cache_dir: CacheDir = None,
    as_json: AsJson = False,
) -> None:
    """Download a dataset, verified against the digest the chain records."""

    def action() -> None:
        session = _session(url, keystore, password_file, password_env, network, account, cache_dir)
        with _client(session) as twin:
            path = _copy_out(twin.pull_dataset(name, ref), dest)
        if as_json:
            _emit_json({"name": name, "ref": ref, "path": str(path)})
        else:
            typer.echo(str(path))

    _run(action)


@dataset_app.command("list")
def dataset_list(
    url: Url = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    network: Network = None,
    account: AccountName = None,
    as_json: AsJson = False,
) -> None:
    """Registered dataset versions."""

    def action() -> None:
        session = _session(url, keystore, password_file, password_env, network, account)
        with _client(session, transfers=False) as twin:
            datasets = twin.datasets()
        if as_json:
            _emit_json(datasets)
            return
        table = Table(title="datasets")
        for column in ("id", "name", "version", "size", "media type", "digest"):
            table.add_column(column)
        for d in datasets:
            table.add_row(
                str(d.id), d.name, str(d.version), str(d.size), d.media_type, str(d.digest)
            )
        out.print(table)

    _run(action)


# ---------------------------------------------------------------- updates and rounds


@update_app.command("push")
def update_push(
    round_id: Annotated[int, typer.Argument(help="Round id.", min=1)],
    path: Annotated[
        Path, typer.Argument(help="Update file, or trained weights.", exists=True, dir_okay=False)
    ],
    samples: Annotated[int, typer.Option(help="Training samples behind the update.", min=1)],
    sparse_k: Annotated[
        int | None, typer.Option(help="Send only the top-k entries per tensor.")
    ] = None,
    url: Url = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    network: Network = None,
    account: AccountName = None,
    cache_dir: CacheDir = None,
    as_json: AsJson = False,
) -> None:
    """Push an update to a round (TWIN).

    PATH is either an update file (dense or sparse, pushed as it is) or trained weights
    (a model file): the delta against the round's base, verified from the chain, is sent.
    """

    def action() -> None:
        from registry.fl.tensorfile import read_tensor_file

        data = path.read_bytes()
        kind = read_tensor_file(data).metadata.get("twinchain.kind")
        session = _session(url, keystore, password_file, password_env, network, account, cache_dir)
        with _client(session) as twin:
            if kind in ("dense", "sparse"):
                update = twin.push_update(round_id, path, samples)
            else:
                round_ = twin.chain.round(round_id)
                base_record = twin.chain.version(round_.base_version)
                base = twin.load_tensors(twin.download(base_record.digest, base_record.size))
                trained = twin.load_tensors(path)
                update = twin.push_update(round_id, trained, samples, sparse_k=sparse_k, base=base)
        if as_json:
            _emit_json(update)
        else:
            err.print(f"pushed update {update.id} ({update.kind}) to round {round_id}")

    _run(action)


@round_app.command("open")
def round_open(
    model: Annotated[str, typer.Argument(help="Model name.")],
    base: Annotated[
        str, typer.Option(help="Base version: number, alias or 'latest'.")
    ] = "production",
    min_updates: Annotated[int, typer.Option(help="Updates needed to close early.", min=1)] = 1,
    deadline_blocks: Annotated[int, typer.Option(help="Blocks until the deadline.", min=1)] = 100,
    url: Url = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    network: Network = None,
    account: AccountName = None,
    as_json: AsJson = False,
) -> None:
    """Open a federated round (PUBLISHER or MINER)."""

    def action() -> None:
        session = _session(url, keystore, password_file, password_env, network, account)
        with _client(session, transfers=False) as twin:
            opened = twin.open_round(model, base, min_updates, deadline_blocks)
        if as_json:
            _emit_json(opened)
        else:
            err.print(f"opened round {opened.id} on {model} (deadline {opened.deadline})")

    _run(action)


@round_app.command("status")
def round_status(
    round_id: Annotated[int, typer.Argument(help="Round id.", min=1)],
    url: Url = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    network: Network = None,
    account: AccountName = None,
    as_json: AsJson = False,
) -> None:
    """A round and its updates."""

    def action() -> None:
        session = _session(url, keystore, password_file, password_env, network, account)
        with _client(session, transfers=False) as twin:
            state = twin.round_status(round_id)
            updates = twin.round_updates(round_id)
        if as_json:
            _emit_json({"round": state, "updates": updates})
            return
        _record_table(f"round {round_id}", state)
        table = Table(title="updates")
        for column in ("id", "twin", "kind", "samples", "size"):
            table.add_column(column)
        for u in updates:
            table.add_row(str(u.id), u.twin, u.kind, str(u.samples), str(u.size))
        out.print(table)

    _run(action)


@round_app.command("aggregate")
def round_aggregate(
    round_id: Annotated[int, typer.Argument(help="Round id.", min=1)],
    strategy: Annotated[
        str, typer.Option(help="fedavg, median or trimmed-mean:<ratio>.")
    ] = "fedavg",
    include: Annotated[
        list[int] | None, typer.Option("--include", help="Update ids (default all).")
    ] = None,
    url: Url = None,
    keystore: Keystore = None,
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    network: Network = None,
    account: AccountName = None,
    cache_dir: CacheDir = None,
    as_json: AsJson = False,
) -> None:
    """Aggregate a round locally and close it on chain (MINER; miners re-check it)."""

    def action() -> None:
        session = _session(url, keystore, password_file, password_env, network, account, cache_dir)
        with _client(session) as twin:
            version = twin.close_round(round_id, strategy, include)
        if as_json:
            _emit_json(version)
        else:
            err.print(
                f"round {round_id} closed: {version.name} v{version.version} "
                f"(id {version.id}) {version.digest}"
            )

    _run(action)


def register_registry_commands(app: typer.Typer) -> None:
    """Add the model, dataset, update and round command groups to ``app``."""
    app.add_typer(model_app, name="model")
    app.add_typer(dataset_app, name="dataset")
    app.add_typer(update_app, name="update")
    app.add_typer(round_app, name="round")
