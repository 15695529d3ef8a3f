# error_two_hops.py: the reference documentation's RemoteException example, two hops.
#
# The exception happens in a grandchild, travels to the child, and is wrapped again there
# (without being raised) before it travels to the parent: the traceback text of where it
# happened survives both hops. The program ends with that exception by design: its exit
# status is 1.
from mpservice.multiprocessing import MP_SPAWN_CTX, RemoteException

def increment(qin, qout):
    while True:
        x = qin.get()
        if x is None:
            qout.put(None)
            return
        try:
            qout.put((x, x + 1))
        except Exception as e:
            qout.put((x, RemoteException(e)))

def worker(qin, qout):
    q = MP_SPAWN_CTX.Queue()
    p = MP_SPAWN_CTX.Process(target=increment, args=(qin, q))
    p.start()
    while True:
        y = q.get()
        if y is None:
            qout.put(y)
            break
        # ... do other things ...
        if isinstance(y[1], BaseException):
            qout.put((y[0], RemoteException(y[1])))
        else:
            qout.put(y)
    p.join()

def main():
    qin = MP_SPAWN_CTX.Queue()
    qout = MP_SPAWN_CTX.Queue()
    p = MP_SPAWN_CTX.Process(target=worker, args=(qin, qout))
    p.start()
    qin.put(1)
    qin.put(3)
    qin.put('a')
    qin.put(5)
    qin.put(None)
    p.join()
    while True:
        y = qout.get()
        if y is None:
            break
        if isinstance(y[1], BaseException):
            raise y[1]
        print(y)

if __name__ == '__main__':
    main()
