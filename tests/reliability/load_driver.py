"""``idlink load --records`` that kills itself (SIGKILL) at a chosen step: the crash test's aim.

``python -m tests.reliability.load_driver --data D --account A --records F --kill-at STEP``
runs the load of ``idlink load`` and, at STEP, sends itself SIGKILL, as
``kill -9`` from outside would, but at a known point:

- ``planned``, ``staging``, ``written``, ``copied``, ``round``: after that step
  committed (generations/load.py calls ``between`` there);
- ``in-switch``: inside the switch transaction, its events written, before
  it commits;
- ``switched``: the switch committed, the old account id not dropped yet;
- ``mid-drop``: one batch of the drop committed, the next one in progress.
"""

from __future__ import annotations

import argparse
import functools
import os
import signal
from typing import Any

STEPS = ("in-switch", "switched", "mid-drop", "round", "copied", "written", "staging", "planned")


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.load_driver")
    parser.add_argument("--data", required=True)
    parser.add_argument("--account", required=True)
    parser.add_argument("--records", required=True)
    parser.add_argument("--kill-at", choices=STEPS, required=True)
    args = parser.parse_args(argv)

    from idlink.domain import staging, switch
    from idlink.generations import load as loading
    from idlink.store.txn import AccountTxn

    if args.kill_at == "in-switch":
        events = switch._switch_events

        def then_die(*a: Any, **k: Any) -> Any:
            events(*a, **k)
            _die()

        switch._switch_events = then_die  # type: ignore[assignment]
    if args.kill_at == "mid-drop":
        drop_some = AccountTxn.drop_some
        calls = [0]

        def second_batch_dies(self: AccountTxn, limit: int) -> int:
            calls[0] += 1
            if calls[0] == 2:
                _die()
            return drop_some(self, limit)

        AccountTxn.drop_some = second_batch_dies  # type: ignore[method-assign]
        switch.drop_pending = functools.partial(staging.drop_pending, batch=50)  # type: ignore[assignment]

    def between(step: str) -> None:
        if step == args.kill_at:
            _die()

    with loading.open_engine(args.data) as engine:
        loading.load(engine, args.account, records=args.records, between=between)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
