"""Child process for the crash-safety test: commits tx-bearing blocks forever.

It reports ``ready <height>`` once the store is open, then ``committed <height> <hash>``
after each commit returns (that is, once the block is durable), until it is killed.
The test forks it (so it starts without re-importing py-evm) and reads its stdout;
``python -m tests.chain.crash_child DB_PATH`` runs it by hand.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from node.chain.executor import Executor
from node.chain.store import ChainStore
from tests.chain.helpers import (
    BUILD_ARGS,
    OUTSIDER,
    SENDERS,
    genesis_state,
    register_model,
    transfer,
)

CRASH_SENDERS = SENDERS[:4]


def block_transactions(executor: Executor, height: int) -> list[bytes]:
    """Two registry calls (logs) and three transfers per sender."""
    txs = []
    for i, sender in enumerate(CRASH_SENDERS):
        nonce = executor.nonce_of(sender.address)
        txs.append(register_model(sender, nonce, f"model{i}", f"{height}/{i}/a"))
        txs.append(register_model(sender, nonce + 1, f"model{i}", f"{height}/{i}/b"))
        txs += [transfer(sender, nonce + 2 + j, OUTSIDER, 1) for j in range(3)]
    return txs


def _print(line: str) -> None:
    print(line, flush=True)


def main(path: str, emit: Callable[[str], None] = _print) -> None:
    """Open the store at ``path`` and commit blocks until killed, reporting each."""
    store = ChainStore.open(path, genesis_state())
    executor = Executor(store)
    emit(f"ready {store.head().height}")
    while True:
        head = store.head()
        txs = block_transactions(executor, head.height + 1)
        result = executor.build_block(head, txs, timestamp=head.timestamp + 1, **BUILD_ARGS)
        assert result.rejected == (), result.rejected
        executor.commit(result, b"seal")
        emit(f"committed {result.header.height} {result.header.hash().hex()}")


if __name__ == "__main__":
    main(sys.argv[1])
