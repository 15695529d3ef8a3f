"""A two-stage pipeline over mpservice queues: a worker process doubles numbers and
returns arrays, batches move under one lock, and a NumPy array crosses without re-encoding.
"""

import multiprocessing as mp

import numpy as np

from mpservice.multiprocessing import JoinableQueue, Queue


def worker(q_in: JoinableQueue, q_out: Queue) -> None:
    while True:
        x = q_in.get()
        if x is None:
            q_in.task_done()
            return
        q_out.put(x * 2)
        q_in.task_done()


def main() -> None:
    ctx = mp.get_context("spawn")
    q_in: JoinableQueue[int | None] = JoinableQueue()
    q_out: Queue[int] = Queue()
    p = ctx.Process(target=worker, args=(q_in, q_out))
    p.start()

    q_in.put_many(range(10))  # ten items, one lock, contiguous in the queue
    q_in.join()  # every item has been processed
    print("doubled:", sorted(q_out.get_many(10, timeout=10)))

    big = np.arange(2_000_000, dtype=np.float64)  # 16 MB
    q_in.put(big)
    out = q_out.get(timeout=30)
    print("array:", out.shape, out.dtype, "correct:", bool((out == big * 2).all()))

    try:
        q_in.put(lambda: 1)  # not picklable: raises here, nothing is enqueued
    except Exception as e:
        print("unpicklable item refused:", type(e).__name__, "| items queued:", q_in.qsize())

    q_in.put(None)
    p.join(timeout=10)
    print("worker exit code:", p.exitcode)


if __name__ == "__main__":
    main()
