"""`twinchain init | keys | up | down`: create a network, manage keys, run it locally.

Exit codes: 0 success; 1 a runtime failure (a miner did not come up, a keystore does not
unlock with the password given, a process could not be stopped); 2 bad usage or input
(an option out of range, a non-empty directory, a missing or malformed file).

``twinchain up`` runs every miner as its own process (``python -m registry.cli node
start --config DIR/node-i.toml``, with the interpreter that runs ``up``, so it works
from a virtualenv that is not activated), logs to ``DIR/node-i/node.log`` and
records ``DIR/node-i/node.pid``; ``twinchain down`` uses the pid files, and only signals
a process whose command line still names that miner's config (a reused pid is left
alone).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from node.errors import Conflict, InvalidInput, NotFound, TwinChainError

if TYPE_CHECKING:  # node.init pulls in py-evm; import it only when a command runs
    from node.init import MinerInfo, NetworkLayout

__all__ = ["keys_app", "register_network_commands"]

# Wide when not a terminal: piped output and logs keep whole addresses and paths.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
keys_app = typer.Typer(help="Encrypted Ethereum account keystores.", no_args_is_help=True)

_LOG_TAIL_LINES = 15
_DEFAULT_DIR = Path(".twinchain")


class Engine(StrEnum):
    """Consensus engines a network can be created with."""

    pbft = "pbft"
    dpos = "dpos"


def register_network_commands(app: typer.Typer) -> None:
    """Add ``init``, ``keys``, ``up`` and ``down`` to the ``twinchain`` app."""
    app.command("init")(init)
    app.add_typer(keys_app, name="keys")
    app.command("up")(up)
    app.command("down")(down)


# ---------------------------------------------------------------------------
# Errors and shared options


def _fail(message: str, code: int) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _exit_code(exc: TwinChainError) -> int:
    """2 when the user gave something wrong, 1 when something failed at run time."""
    return 2 if isinstance(exc, InvalidInput | NotFound | Conflict) else 1


@contextmanager
def _errors() -> Iterator[None]:
    """Turn TwinChain errors into a message on stderr and the matching exit code."""
    try:
        yield
    except TwinChainError as exc:
        _fail(str(exc), _exit_code(exc))


def _admins(value: str) -> tuple[int, int]:
    k, sep, m = value.partition("/")
    if not sep or not k.strip().isdigit() or not m.strip().isdigit():
        raise typer.BadParameter(f"expected K/M (e.g. 2/3), got {value!r}", param_hint="--admins")
    threshold, count = int(k), int(m)
    if not 1 <= threshold <= count:
        raise typer.BadParameter(f"need 1 <= K <= M, got {value}", param_hint="--admins")
    return threshold, count


def _read_password(file: Path | None, env: str | None) -> str | None:
    """The password from ``--password-file``/``--password-env``, or None if neither."""
    if file is not None and env is not None:
        _fail("give either --password-file or --password-env, not both", 2)
    if file is None and env is None:
        return None
    from node.pki import read_password

    try:
        return read_password(file, env)
    except TwinChainError as exc:
        _fail(str(exc), _exit_code(exc))


PasswordFile = Annotated[
    Path | None,
    typer.Option("--password-file", help="Read the password from this file (one line)."),
]
PasswordEnv = Annotated[
    str | None,
    typer.Option("--password-env", help="Read the password from this environment variable."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
FastKeys = Annotated[
    bool,
    typer.Option(
        "--fast-keys",
        help="Cheap keystore encryption (scrypt n=2**14, ~20x faster) for throwaway networks.",
    ),
]


# ---------------------------------------------------------------------------
# init


def init(
    out: Annotated[Path, typer.Option("--out", help="Directory to create (missing or empty).")],
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=64, help="Number of miners.")] = 4,
    consensus: Annotated[Engine, typer.Option("--consensus", help="Consensus engine.")] = (
        Engine.pbft
    ),
    twins: Annotated[int, typer.Option("--twins", min=0, help="TWIN accounts.")] = 5,
    publishers: Annotated[int, typer.Option("--publishers", min=0, help="PUBLISHERs.")] = 1,
    auditors: Annotated[int, typer.Option("--auditors", min=0, help="AUDITOR accounts.")] = 1,
    admins: Annotated[
        str, typer.Option("--admins", help="K/M: M admin accounts, K approvals per admin action.")
    ] = "2/3",
    chain_id: Annotated[
        int | None, typer.Option("--chain-id", min=1, help="Chain id (random by default).")
    ] = None,
    base_port: Annotated[
        int | None,
        typer.Option(
            "--base-port",
            min=1,
            max=65535,
            help="Miner i: P2P on P+i, RPC on P+100+i (default: free ports from 30300/8545).",
        ),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address every miner listens on.")] = (
        "127.0.0.1"
    ),
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    fast_keys: FastKeys = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a network: CA, miner keys and TLS certificates, member keys, genesis, configs.

    Every keystore gets a random password in DIR/passwords/ unless
    --password-file or --password-env gives one for all of them.

    Production: move each miner's files to its edge server, delete
    DIR/passwords and set password_env (instead of password_file) in the
    keys section of every node-i.toml.
    """
    threshold_count = _admins(admins)
    password = _read_password(password_file, password_env)
    from node.init import FAST_SCRYPT_N, init_network

    base_rpc = None if base_port is None else base_port + 100
    with _errors(), err_console.status("creating the network") as status:
        layout = init_network(
            out,
            nodes=nodes,
            consensus=consensus.value,
            twins=twins,
            publishers=publishers,
            auditors=auditors,
            admins=threshold_count,
            chain_id=chain_id,
            base_p2p_port=base_port,
            base_rpc_port=base_rpc,
            host=host,
            password=password,
            scrypt_n=FAST_SCRYPT_N if fast_keys else None,
            progress=lambda step: status.update(f"encrypting {step}"),
        )
    if as_json:
        typer.echo(json.dumps({"root": str(layout.root), **layout.to_json()}, indent=2))
        return
    console.print(
        f"Created a {len(layout.miners)}-miner {layout.engine} network "
        f"(chain id {layout.chain_id}) in {layout.root}",
        highlight=False,
    )
    console.print(_miners_table(layout, {}))
    console.print(_accounts_table(layout))
    first = layout.miners[0].config
    console.print(
        f"Start a miner: twinchain node start --config {first}\n"
        f"Or all of them on this machine: twinchain up --dir {layout.root}",
        highlight=False,
    )


def _miners_table(layout: NetworkLayout, pids: dict[str, int]) -> Table:
    table = Table(title="Miners")
    for column in ("name", "validator address", "RPC URL", "P2P", *(["pid"] if pids else [])):
        table.add_column(column, overflow="fold")
    for m in layout.miners:
        pid = [str(pids.get(m.name, "-"))] if pids else []
        table.add_row(m.name, m.address, m.rpc_url, m.p2p, *pid)
    return table


def _accounts_table(layout: NetworkLayout) -> Table:
    table = Table(title=f"Accounts (paths relative to {layout.root})")
    for column in ("role", "name", "address", "keystore", "password file"):
        table.add_column(column, overflow="fold")
    for a in layout.accounts:
        role = a.role if a.in_genesis else f"{a.role} (not granted)"
        keystore, password = (
            str(p.relative_to(layout.root)) for p in (a.keystore, a.password_file)
        )
        table.add_row(role, a.name, a.address, keystore, password)
    return table


# ---------------------------------------------------------------------------
# keys


@keys_app.command("new")
def keys_new(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the keystore to this new file.")
    ] = None,
    network_dir: Annotated[
        Path | None,
        typer.Option("--dir", help="Or add the key to this network directory (with --name)."),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Key name (with --dir).")] = None,
    role: Annotated[
        str, typer.Option("--role", help="ADMIN, TWIN, PUBLISHER or AUDITOR (with --dir).")
    ] = "TWIN",
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    fast_keys: FastKeys = False,
    as_json: JsonFlag = False,
) -> None:
    """Create an account keystore and print its address.

    With --out FILE the password comes from --password-file, --password-env
    or a prompt.

    With --dir DIR --name NAME the key joins a network directory (a random
    password in DIR/passwords/NAME.txt unless one is given) and is listed in
    network.json; the admins still have to grant its role on chain.
    """
    if (out is None) == (network_dir is None):
        _fail("give either --out FILE or --dir DIR --name NAME", 2)
    if out is not None and out.exists():
        _fail(f"{out} already exists; refusing to overwrite a keystore", 2)
    password = _read_password(password_file, password_env)
    from node import pki
    from node.init import FAST_SCRYPT_N, add_member_key

    scrypt_n = FAST_SCRYPT_N if fast_keys else None
    if network_dir is not None:
        if name is None:
            _fail("--dir needs --name", 2)
        with _errors():
            account = add_member_key(network_dir, name, role, password=password, scrypt_n=scrypt_n)
        _print_key(account.address, account.keystore, as_json, account.password_file)
        return
    assert out is not None
    if password is None:
        password = typer.prompt("Keystore password", hide_input=True, confirmation_prompt=True)
    with _errors():
        address, keystore = pki.new_account_keystore(password, iterations=scrypt_n)
        out.parent.mkdir(parents=True, exist_ok=True)
        pki.write_keystore(out, keystore)
    _print_key(_checksum(address), out, as_json)


@keys_app.command("show")
def keys_show(
    file: Annotated[Path, typer.Argument(help="A keystore file.")],
    password_file: PasswordFile = None,
    password_env: PasswordEnv = None,
    as_json: JsonFlag = False,
) -> None:
    """Print a keystore's address; with a password, also check that it unlocks (exit 1 if not)."""
    from eth_account import Account

    from node import pki

    password = _read_password(password_file, password_env)
    with _errors():
        try:
            keystore = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFound(f"{file}: no such file") from None
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{file}: not a keystore: {exc}") from exc
        if not isinstance(keystore, dict):
            raise InvalidInput(f"{file}: not a keystore")
        address = _checksum(pki.keystore_address(keystore))
        unlocked = None
        if password is not None:
            key = pki.load_keystore(file, password)
            unlocked = _checksum(Account.from_key(key).address) == address
    if as_json:
        typer.echo(json.dumps({"address": address, "keystore": str(file), "unlocks": unlocked}))
    else:
        typer.echo(address)
        if unlocked:
            err_console.print("[green]unlocks with the given password[/green]")


def _print_key(address: str, keystore: Path, as_json: bool, password: Path | None = None) -> None:
    if as_json:
        doc = {"address": address, "keystore": str(keystore)}
        if password is not None:
            doc["password_file"] = str(password)
        typer.echo(json.dumps(doc))
    else:
        typer.echo(address)


def _checksum(address: bytes | str) -> str:
    from eth_utils.address import to_checksum_address

    return to_checksum_address(address)


# ---------------------------------------------------------------------------
# up / down: process management


def node_command(config: Path) -> list[str]:
    """The argv that starts one miner, with the interpreter running this command.

    ``python -m registry.cli`` rather than the ``twinchain`` script, so that it works
    from a virtualenv that is not on PATH.
    """
    return [sys.executable, "-m", "registry.cli", "node", "start", "--config", str(config)]


def _child_env() -> dict[str, str]:
    """The environment of a miner: ours, with this source tree first on the path.

    An editable install made before ``contracts/__init__.py`` existed maps
    ``contracts`` to a namespace package outside the source tree's own directory; putting
    the tree on PYTHONPATH makes the regular packages win wherever the miner runs.
    """
    import registry

    source_root = str(Path(registry.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH")) if p)
    return env


def _pid_file(miner: MinerInfo) -> Path:
    return miner.dir / "node.pid"


def _log_file(miner: MinerInfo) -> Path:
    return miner.dir / "node.log"


def _running_pid(miner: MinerInfo) -> int | None:
    """The pid in the miner's pid file if that process is alive and still this miner."""
    try:
        pid = int(_pid_file(miner).read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    return pid if _alive(pid) and _is_miner_process(pid, miner) else None


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rpartition(")")[2].split()[0] != "Z"


def _is_miner_process(pid: int, miner: MinerInfo) -> bool:
    """Whether ``pid``'s command line names this miner's config (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no procfs: cannot tell, trust the pid file
    return str(miner.config).encode() in cmdline


def _log_tail(miner: MinerInfo, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = _log_file(miner).read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _status(miner: MinerInfo) -> dict[str, Any] | None:
    import httpx

    try:
        response = httpx.get(miner.rpc_url + "/status", timeout=2.0)
        response.raise_for_status()
        data = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class _Launched:
    """A miner process started by ``up``."""

    miner: MinerInfo
    process: subprocess.Popen[bytes]


def _start_miners(layout: NetworkLayout, launched: list[_Launched]) -> None:
    """Start every miner, appending to ``launched`` as it goes (so a failure can undo)."""
    env = _child_env()
    for miner in layout.miners:
        with open(_log_file(miner), "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"--- twinchain up: starting {miner.name} at {stamp} ---\n".encode())
            log.flush()
            process = subprocess.Popen(
                node_command(miner.config),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=layout.root,
                env=env,
                start_new_session=True,  # Ctrl-C reaches `up`, which stops them in order
            )
        _pid_file(miner).write_text(f"{process.pid}\n")
        launched.append(_Launched(miner, process))


def _wait_until_up(
    launched: list[_Launched], timeout: float, stop: threading.Event
) -> dict[str, dict[str, Any]]:
    """Poll every miner's /status until its height is >= 1; raise on death or timeout."""
    deadline = time.monotonic() + timeout
    ready: dict[str, dict[str, Any]] = {}
    while len(ready) < len(launched):
        for item in launched:
            name = item.miner.name
            if name in ready:
                continue
            code = item.process.poll()
            if code is not None:
                raise _StartupFailed(f"{name} exited with code {code}", [item.miner])
            status = _status(item.miner)
            if status is not None and int(status.get("height", 0)) >= 1:
                ready[name] = status
        if len(ready) == len(launched):
            break
        if stop.is_set():
            raise _StartupFailed("interrupted while waiting for the miners", [])
        if time.monotonic() > deadline:
            late = [i.miner for i in launched if i.miner.name not in ready]
            names = ", ".join(m.name for m in late)
            raise _StartupFailed(f"not up (height >= 1) after {timeout:.0f}s: {names}", late)
        stop.wait(0.25)
    return ready


class _StartupFailed(Exception):
    """Some miners did not come up; ``miners`` are the ones whose logs explain why."""

    def __init__(self, message: str, miners: list[MinerInfo]) -> None:
        super().__init__(message)
        self.miners = miners


def _stop_processes(
    targets: list[tuple[MinerInfo, int]],
    grace: float,
    alive: Callable[[int], bool],
) -> dict[str, str]:
    """SIGTERM every pid, wait up to ``grace`` seconds, SIGKILL the rest; remove pid files.

    Returns how each miner ended: ``"stopped"`` or ``"killed"`` (or why not).
    """
    outcome: dict[str, str] = {}
    for miner, pid in targets:
        try:
            os.kill(pid, signal.SIGTERM)
            outcome[miner.name] = "stopped"
        except ProcessLookupError:
            outcome[miner.name] = "already gone"
        except PermissionError:
            outcome[miner.name] = "not permitted to signal"
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(pid) for _, pid in targets):
        time.sleep(0.1)
    for miner, pid in targets:
        if alive(pid) and outcome[miner.name] == "stopped":
            try:
                os.kill(pid, signal.SIGKILL)
                outcome[miner.name] = "killed after the grace period"
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(alive(pid) for _, pid in targets):
        time.sleep(0.05)
    for miner, pid in targets:
        if alive(pid):
            outcome[miner.name] = "still running"
        else:
            _pid_file(miner).unlink(missing_ok=True)
    return outcome


@contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM while the block runs (handlers restored after)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda *_: stop.set())
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _open_or_init(directory: Path, nodes: int | None, engine: Engine | None) -> NetworkLayout:
    """The network in ``directory``, created (fast keys) if the directory is missing/empty."""
    from node.init import FAST_SCRYPT_N, init_network, load_network

    if not directory.exists() or (directory.is_dir() and not any(directory.iterdir())):
        err_console.print(f"Creating a network in {directory} ...", highlight=False)
        return init_network(
            directory,
            nodes=4 if nodes is None else nodes,
            consensus=(engine or Engine.pbft).value,
            scrypt_n=FAST_SCRYPT_N,
        )
    layout = load_network(directory)
    if nodes is not None and nodes != len(layout.miners):
        raise InvalidInput(
            f"{directory} already holds a {len(layout.miners)}-miner network; "
            "drop --nodes or choose another --dir"
        )
    if engine is not None and engine.value != layout.engine:
        raise InvalidInput(
            f"{directory} already holds a {layout.engine} network; "
            "drop --consensus or choose another --dir"
        )
    return layout


def _startable_problem(layout: NetworkLayout) -> str | None:
    """Why the network cannot start here (miners running, ports taken), or None."""
    from node.init import endpoint_in_use

    running = [f"{m.name} (pid {pid})" for m in layout.miners if (pid := _running_pid(m))]
    if running:
        return (
            f"already running: {', '.join(running)}; stop it with "
            f"`twinchain down --dir {layout.root}`"
        )
    busy = [
        f"{m.name} {what} {endpoint}"
        for m in layout.miners
        for what, endpoint in (("P2P", m.p2p), ("RPC", m.rpc))
        if endpoint_in_use(endpoint)
    ]
    return f"ports in use: {', '.join(busy)}" if busy else None


def up(
    nodes: Annotated[
        int | None, typer.Option("--nodes", min=1, max=64, help="Miners (new network; 4).")
    ] = None,
    consensus: Annotated[
        Engine | None, typer.Option("--consensus", help="Engine (new network; pbft).")
    ] = None,
    directory: Annotated[
        Path, typer.Option("--dir", help="Network directory (created if missing or empty).")
    ] = _DEFAULT_DIR,
    detach: Annotated[
        bool, typer.Option("--detach", help="Return once every miner is up.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for height >= 1.")
    ] = 120.0,
    grace: Annotated[
        float, typer.Option("--grace", min=0, help="Seconds between SIGTERM and SIGKILL.")
    ] = 10.0,
    as_json: JsonFlag = False,
) -> None:
    """Run a local network: one process per miner, until Ctrl-C (or --detach).

    An empty or missing DIR is initialised first, with cheap keystore
    encryption (the passwords sit next to the keys anyway). Logs go to
    DIR/node-i/node.log, pids to DIR/node-i/node.pid.
    """
    with _stop_signals() as stop:
        with _errors():
            layout = _open_or_init(directory, nodes, consensus)
        problem = _startable_problem(layout)
        if problem:
            _fail(problem, 1)
        if stop.is_set():
            _fail("interrupted before any miner was started", 1)
        launched: list[_Launched] = []
        keep_running = False
        try:
            _start_miners(layout, launched)
            with err_console.status(f"waiting for {len(launched)} miners to commit block 1"):
                statuses = _wait_until_up(launched, timeout, stop)
            _report_up(layout, launched, statuses, as_json)
            if detach:
                keep_running = True
                return
            console.print("Running. Ctrl-C stops every miner.")
            code = _supervise(launched, stop)
        except _StartupFailed as exc:
            _stop_launched(launched, grace)
            launched = []
            for miner in exc.miners:
                err_console.rule(f"{miner.name}: {_log_file(miner)}")
                err_console.print(_log_tail(miner), markup=False, highlight=False)
            _fail(f"{exc}; every miner was stopped", 1)
        finally:
            if not keep_running:
                _stop_launched(launched, grace)
    raise typer.Exit(code)


def _report_up(
    layout: NetworkLayout,
    launched: list[_Launched],
    statuses: dict[str, dict[str, Any]],
    as_json: bool,
) -> None:
    pids = {item.miner.name: item.process.pid for item in launched}
    if as_json:
        doc = {"root": str(layout.root), **layout.to_json()}
        for entry in doc["miners"]:
            entry["pid"] = pids[entry["name"]]
            entry["height"] = statuses[entry["name"]].get("height")
        typer.echo(json.dumps(doc, indent=2))
        return
    console.print(
        f"{len(launched)} miners up: {layout.engine}, chain id {layout.chain_id}, "
        f"directory {layout.root}",
        highlight=False,
    )
    console.print(_miners_table(layout, pids))
    console.print(_accounts_table(layout))
    console.print(f"Logs: {layout.root}/node-*/node.log", highlight=False)


def _supervise(launched: list[_Launched], stop: threading.Event) -> int:
    """Wait for a stop signal; report miners that exit meanwhile. 1 if they all died."""
    reported: set[str] = set()
    while not stop.wait(0.5):
        for item in launched:
            code = item.process.poll()
            if code is not None and item.miner.name not in reported:
                reported.add(item.miner.name)
                err_console.print(
                    f"[yellow]{item.miner.name} exited with code {code}[/yellow] "
                    f"(see {_log_file(item.miner)})",
                    highlight=False,
                )
        if len(reported) == len(launched):
            err_console.print("[red]every miner has exited[/red]")
            return 1
    return 0


def _stop_launched(launched: list[_Launched], grace: float) -> None:
    by_pid = {item.process.pid: item.process for item in launched}

    def alive(pid: int) -> bool:
        return by_pid[pid].poll() is None  # our children: poll() also reaps them

    targets = [(item.miner, item.process.pid) for item in launched if item.process.poll() is None]
    for item in launched:
        if item.process.poll() is not None:
            _pid_file(item.miner).unlink(missing_ok=True)
    outcome = _stop_processes(targets, grace, alive)
    if outcome:
        summary = ", ".join(f"{name} {how}" for name, how in outcome.items())
        err_console.print(f"Miners: {summary}", highlight=False)


def down(
    directory: Annotated[Path, typer.Option("--dir", help="Network directory.")] = _DEFAULT_DIR,
    grace: Annotated[
        float, typer.Option("--grace", min=0, help="Seconds between SIGTERM and SIGKILL.")
    ] = 10.0,
    as_json: JsonFlag = False,
) -> None:
    """Stop the miners of a network started with `twinchain up --detach`."""
    from node.init import load_network

    with _errors():
        layout = load_network(directory)
    targets: list[tuple[MinerInfo, int]] = []
    outcome: dict[str, str] = {}
    for miner in layout.miners:
        pid = _running_pid(miner)
        if pid is not None:
            targets.append((miner, pid))
        elif _pid_file(miner).exists():
            _pid_file(miner).unlink()
            outcome[miner.name] = "not running (stale pid file removed)"
    pids = {m.name: pid for m, pid in targets}
    outcome.update(_stop_processes(targets, grace, _alive))
    failed = [name for name, how in outcome.items() if how in ("still running",)]
    if as_json:
        typer.echo(
            json.dumps(
                [{"name": n, "pid": pids.get(n), "outcome": how} for n, how in outcome.items()]
            )
        )
    elif not outcome:
        console.print(f"No miner of {layout.root} is running.", highlight=False)
    else:
        table = Table(title=f"Stopped miners of {layout.root}")
        for column in ("name", "pid", "outcome"):
            table.add_column(column)
        for name, how in outcome.items():
            table.add_row(name, str(pids.get(name, "-")), how)
        console.print(table)
    if failed:
        _fail(f"could not stop: {', '.join(failed)}", 1)
