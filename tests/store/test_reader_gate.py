"""The reader gate: a map change waits for every open transaction, and new readers wait for it."""

from __future__ import annotations

import threading
import time

from idlink.store.env import _ReaderGate

WAIT = 5.0  # seconds: a bound for the threads below, never reached when the gate is right


def _start(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_exclusive_waits_for_the_last_reader_to_leave() -> None:
    gate = _ReaderGate()
    mine = gate.enter()
    entered, done = threading.Event(), threading.Event()

    def other_reader() -> None:
        depth = gate.enter()
        entered.set()
        done.wait(WAIT)
        gate.leave(depth)

    reading = _start(other_reader)
    assert entered.wait(WAIT)
    inside = threading.Event()

    def change() -> None:
        with gate.exclusive():
            inside.set()

    changer = _start(change)
    time.sleep(0.05)
    assert not inside.is_set()  # two readers open
    gate.leave(mine)
    time.sleep(0.05)
    assert not inside.is_set()  # one reader open, on the other thread
    done.set()
    reading.join(WAIT)
    changer.join(WAIT)
    assert inside.is_set()


def test_a_new_reader_waits_while_the_gate_is_closed_and_enters_after() -> None:
    gate = _ReaderGate()
    release = threading.Event()
    closed = threading.Event()
    order: list[str] = []

    def change() -> None:
        with gate.exclusive():
            closed.set()
            release.wait(WAIT)
            order.append("change")

    def reader() -> None:
        depth = gate.enter()
        order.append("read")
        gate.leave(depth)

    changer = _start(change)
    assert closed.wait(WAIT)
    reading = _start(reader)
    time.sleep(0.05)
    assert order == []  # the reader waits for the change
    release.set()
    changer.join(WAIT)
    reading.join(WAIT)
    assert order == ["change", "read"]


def test_a_thread_holding_a_transaction_opens_another_while_the_gate_closes() -> None:
    gate = _ReaderGate()
    outer = gate.enter()
    closing = threading.Event()
    inside = threading.Event()

    def change() -> None:
        closing.set()
        with gate.exclusive():
            inside.set()

    changer = _start(change)
    assert closing.wait(WAIT)
    time.sleep(0.05)  # the change now waits for this thread's transaction
    inner = gate.enter()  # would deadlock if it waited for the change
    assert inner == 1 and gate.held()
    gate.leave(inner)
    assert not inside.is_set()
    gate.leave(outer)
    changer.join(WAIT)
    assert inside.is_set() and not gate.held()
