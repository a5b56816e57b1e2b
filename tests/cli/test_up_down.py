"""`twinchain up|down`: miner processes, pid files, logs, readiness and shutdown.

Most tests run against ``fake_miner.py`` (starts in milliseconds, misbehaves on demand);
``test_real_network_*`` runs the real daemon.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from node.init import NetworkLayout, init_network, load_network
from registry import cli_network
from tests.cli.conftest import twinchain

FAKE_MINER = Path(__file__).with_name("fake_miner.py")
TWINCHAIN = [sys.executable, "-m", "registry.cli"]


def fake_command(config: Path) -> list[str]:
    """The fake miner's argv, shaped like the real one."""
    return [sys.executable, str(FAKE_MINER), "node", "start", "--config", str(config)]


def _pids(layout: NetworkLayout) -> dict[str, int]:
    return {
        m.name: int((m.dir / "node.pid").read_text())
        for m in layout.miners
        if (m.dir / "node.pid").exists()
    }


def _alive(pid: int) -> bool:
    return cli_network._alive(pid)


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[NetworkLayout]:
    """A small network; any miner still running afterwards is killed."""
    net = init_network(
        tmp_path / "net", nodes=3, twins=0, publishers=0, auditors=0, admins=(1, 1),
        chain_id=9, scrypt_n=2**4,
    )  # fmt: skip
    yield net
    for miner in net.miners:
        pid = cli_network._running_pid(miner)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Start fake miners instead of real ones; ``setenv`` FAKE_MINER_MODE to misbehave."""
    monkeypatch.setattr(cli_network, "node_command", fake_command)
    return monkeypatch


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_up_detach_starts_every_miner_and_down_stops_them(
    layout: NetworkLayout, fake: pytest.MonkeyPatch
) -> None:
    code, output = twinchain("up", "--detach", "--dir", layout.root)
    assert code == 0, output
    assert "3 miners up" in output
    for miner in layout.miners:
        assert miner.rpc_url in output and miner.address in output
    pids = _pids(layout)
    assert set(pids) == {"node-0", "node-1", "node-2"}
    assert all(_alive(pid) for pid in pids.values())
    for miner in layout.miners:
        assert httpx.get(miner.rpc_url + "/status").json()["height"] == 1
        assert "mode ok" in (miner.dir / "node.log").read_text()

    code, output = twinchain("down", "--dir", layout.root, "--json")
    assert code == 0, output
    assert sorted((r["name"], r["pid"], r["outcome"]) for r in json.loads(output)) == [
        (name, pid, "stopped") for name, pid in sorted(pids.items())
    ]
    assert not any(_alive(pid) for pid in pids.values())
    assert _pids(layout) == {}
    assert twinchain("down", "--dir", layout.root)[1].startswith("No miner of")


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_up_refuses_to_start_a_network_twice(
    layout: NetworkLayout, fake: pytest.MonkeyPatch
) -> None:
    assert twinchain("up", "--detach", "--dir", layout.root)[0] == 0
    pids = _pids(layout)
    code, output = twinchain("up", "--detach", "--dir", layout.root)
    assert code == 1
    assert "already running: node-0 (pid" in output
    assert _pids(layout) == pids
    assert twinchain("down", "--dir", layout.root)[0] == 0


def test_up_names_the_miners_that_are_not_up_and_shows_their_logs(
    layout: NetworkLayout, fake: pytest.MonkeyPatch
) -> None:
    fake.setenv("FAKE_MINER_MODE", "stuck")
    code, output = twinchain("up", "--detach", "--dir", layout.root, "--timeout", "1")
    assert code == 1
    assert "not up (height >= 1) after 1s: node-0, node-1, node-2" in output
    assert "every miner was stopped" in output
    for miner in layout.miners:
        assert f"fake miner {miner.name}.toml: mode stuck" in output
    assert _pids(layout) == {}


def test_up_reports_a_miner_that_exits(layout: NetworkLayout, fake: pytest.MonkeyPatch) -> None:
    fake.setenv("FAKE_MINER_MODE", "crash")
    code, output = twinchain("up", "--detach", "--dir", layout.root)
    assert code == 1
    assert "exited with code 3" in output
    assert "crashing on purpose" in output
    assert _pids(layout) == {}


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_down_kills_a_miner_that_ignores_sigterm(
    layout: NetworkLayout, fake: pytest.MonkeyPatch
) -> None:
    fake.setenv("FAKE_MINER_MODE", "stubborn")
    assert twinchain("up", "--detach", "--dir", layout.root)[0] == 0
    pids = _pids(layout)
    started = time.monotonic()
    code, output = twinchain("down", "--dir", layout.root, "--grace", "0.5")
    assert code == 0, output
    assert output.count("killed after the grace period") == 3
    assert time.monotonic() - started < 5
    assert not any(_alive(pid) for pid in pids.values())


def test_down_never_signals_a_process_that_reused_a_pid(layout: NetworkLayout) -> None:
    # Our own pid is alive, but its command line names no miner config.
    (layout.miners[0].dir / "node.pid").write_text(f"{os.getpid()}\n")
    code, output = twinchain("down", "--dir", layout.root)
    assert code == 0
    assert "not running (stale pid file removed)" in output
    assert _pids(layout) == {}


def test_up_refuses_options_that_contradict_the_existing_network(layout: NetworkLayout) -> None:
    code, output = twinchain("up", "--dir", layout.root, "--nodes", "4")
    assert code == 2
    assert "already holds a 3-miner network" in output
    code, output = twinchain("up", "--dir", layout.root, "--consensus", "dpos")
    assert code == 2
    assert "already holds a pbft network" in output


def test_down_needs_a_network_directory(tmp_path: Path) -> None:
    code, output = twinchain("down", "--dir", tmp_path)
    assert code == 2
    assert "network.json: no such file" in output


@pytest.mark.timeout(120)
def test_up_in_the_foreground_stops_every_miner_on_sigterm(layout: NetworkLayout) -> None:
    code = (
        "import sys; sys.argv[0] = 'twinchain'; import registry.cli_network as n; "
        "import tests.cli.test_up_down as t; n.node_command = t.fake_command; "
        "from registry.cli import main; main()"
    )
    up = subprocess.Popen(
        [sys.executable, "-c", code, "up", "--dir", str(layout.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    assert up.stdout is not None
    lines = []
    for line in up.stdout:
        lines.append(line)
        if line.startswith("Running."):
            break
    else:
        pytest.fail("`twinchain up` ended early:\n" + "".join(lines))
    pids = _pids(layout)
    assert len(pids) == 3 and all(_alive(pid) for pid in pids.values())
    up.send_signal(signal.SIGTERM)
    rest, _ = up.communicate(timeout=60)
    assert up.returncode == 0, "".join(lines) + rest
    assert "node-0 stopped" in rest
    assert not any(_alive(pid) for pid in pids.values())
    assert _pids(layout) == {}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("engine", ["pbft", "dpos"])
def test_real_network_comes_up_with_detach_and_goes_down(tmp_path: Path, engine: str) -> None:
    root = tmp_path / "net"
    command = ["up", "--detach", "--nodes", "4", "--consensus", engine, "--dir", str(root)]
    up = subprocess.run(
        [*TWINCHAIN, *command],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,  # the miners must not depend on the caller's directory
    )
    layout = load_network(root)
    pids = _pids(layout)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert len(pids) == 4
        for miner in layout.miners:
            status = httpx.get(miner.rpc_url + "/status", timeout=5).json()
            assert status["height"] >= 1
            assert status["address"].lower() == miner.address.lower()
            assert status["engine"] == engine
    finally:
        down = subprocess.run(
            [*TWINCHAIN, "down", "--dir", str(root)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert down.returncode == 0, down.stdout + down.stderr
    for name in pids:
        assert name in down.stdout
    assert not any(_alive(pid) for pid in pids.values())
    assert _pids(layout) == {}
