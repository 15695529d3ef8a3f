"""Synchronization between processes, and what happens when one of them dies.

Three workers meet at a Barrier whose action runs once per round, hand results over
under a Condition, and then one worker is killed while holding a Lock: the parent's next
acquire raises OwnerDiedError naming it, instead of hanging, and the lock works again.
"""

import multiprocessing as mp
import os
import signal

from mpservice.multiprocessing import Barrier, Condition, Event, Lock, Queue
from mpservice.multiprocessing.synchronize import OwnerDiedError


def announce() -> None:
    print("all three arrived", flush=True)


def worker(rank: int, barrier: Barrier, cond: Condition, results: Queue) -> None:
    barrier.wait()
    with cond:  # the workers report in turn: rank 0, then 1, then 2
        cond.wait_for(lambda: results.qsize() == rank)
        results.put(rank * rank)
        cond.notify_all()


def holder(lock: Lock, holding: Event) -> None:
    lock.acquire()
    holding.set()
    signal.pause()  # until killed, never releasing the lock


def main() -> None:
    ctx = mp.get_context("spawn")
    barrier = Barrier(3, action=announce)
    cond = Condition()
    results: Queue[int] = Queue()
    workers = [ctx.Process(target=worker, args=(r, barrier, cond, results)) for r in range(3)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
    print("results in order:", [results.get(timeout=10) for _ in range(3)])

    lock, holding = Lock(), Event()
    p = ctx.Process(target=holder, args=(lock, holding))
    p.start()
    holding.wait(60)
    os.kill(p.pid, signal.SIGKILL)
    p.join(60)
    try:
        lock.acquire(timeout=10)
    except OwnerDiedError as e:
        print("acquire raised OwnerDiedError; the dead holder was the worker:", e.pid == p.pid)
    print("the lock works again:", lock.acquire(timeout=1))
    lock.release()


if __name__ == "__main__":
    main()
