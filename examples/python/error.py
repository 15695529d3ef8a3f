# error.py: the reference documentation's RemoteException example, one hop.
#
# The child wraps the exception in RemoteException before putting it in the queue, so the
# parent's `raise y[1]` shows where it really happened (the child's line 13) as the cause.
# The program ends with that exception by design: its exit status is 1.
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

def main():
    qin = MP_SPAWN_CTX.Queue()
    qout = MP_SPAWN_CTX.Queue()
    p = MP_SPAWN_CTX.Process(target=increment, args=(qin, qout))
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
