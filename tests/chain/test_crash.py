"""Crash safety: a node killed at any instant restarts at its last committed block."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

from node.chain.executor import Executor
from node.chain.store import ChainStore
from tests.chain import crash_child
from tests.chain.helpers import genesis_state

KILLS = 20
SEED = 20260101


def run_and_kill(db: Path, wait_lines: int, delay: float) -> list[tuple[int, str]]:
    """Fork the committing child with its stdout on a pipe; once it has printed
    ``wait_lines`` lines (0: right after the fork), sleep ``delay`` seconds, SIGKILL it,
    and return what it reported as committed.

    Waiting for lines first, rather than sleeping a fixed time from the start, keeps
    the kills spread over startup and the commit loop however loaded the machine is.
    Forking (rather than spawning an interpreter) skips ~1 s of imports per run.
    """
    genesis_state()  # built before the fork, so the child does not pay for it
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(read_end)
            crash_child.main(str(db), lambda line: _write_line(write_end, line))
        finally:
            os._exit(1)
    os.close(write_end)
    received = b""
    while received.count(b"\n") < wait_lines:
        chunk = os.read(read_end, 4096)
        assert chunk, "child exited early"
        received += chunk
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "child died early"
    while chunk := os.read(read_end, 65536):
        received += chunk
    os.close(read_end)
    reported = []
    for line in received.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "committed":  # a torn last line is ignored
            reported.append((int(parts[1]), parts[2]))
    return reported


def _write_line(fd: int, line: str) -> None:
    os.write(fd, (line + "\n").encode())


def test_killed_node_restarts_at_its_last_committed_block(tmp_path: Path) -> None:
    db = tmp_path / "chain.db"
    rng = random.Random(SEED)
    reported: dict[int, str] = {}
    verified = 0
    kills_after_commits = 0
    for _ in range(KILLS):
        # One kill in four lands during startup (genesis creation on the first run,
        # opening and recovering the store later); the others at a random instant
        # after the child reported being ready and then one or two commits.
        if rng.random() < 0.25:
            new = run_and_kill(db, 0, rng.uniform(0.0, 0.4))
        else:
            new = run_and_kill(db, 1 + rng.randint(1, 2), rng.uniform(0.0, 0.3))
        kills_after_commits += bool(new)
        reported.update(new)
        with ChainStore.open(db, genesis_state()) as store:  # verifies the head state
            head = store.head()
            for height, block_hash in reported.items():
                assert height <= head.height, f"reported block {height} lost"
                stored = store.header_by_height(height)
                assert stored is not None and stored.hash().hex() == block_hash
            store.check_integrity(from_height=max(0, verified - 1))
            # State matches the blocks: each sender's nonce counts its included txs.
            executor = Executor(store)
            sent = {s.address: 0 for s in crash_child.CRASH_SENDERS}
            for height in range(1, head.height + 1):
                receipts = store.receipts(height)
                for receipt in receipts:
                    sent[receipt.sender] += 1
                if height > verified:
                    logs = store.logs(height, height)
                    assert [(g.tx_hash, g.log) for g in logs] == [
                        (r.tx_hash, log) for r in receipts for log in r.logs
                    ]
            for sender in crash_child.CRASH_SENDERS:
                assert executor.nonce_of(sender.address) == sent[sender.address]
            verified = head.height
    assert kills_after_commits >= KILLS // 2, kills_after_commits
    with ChainStore.open(db, genesis_state()) as store:
        assert store.check_integrity() == store.head().height + 1
