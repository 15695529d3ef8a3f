/* _mpx.SemLock, _mpx.CondVar, _mpx.Event and _mpx.Barrier: the bindings of <mpx/sync.h>,
 * the bases of the classes in mpservice.multiprocessing.synchronize.
 *
 * SemLock mirrors the stdlib's _multiprocessing.SemLock (acquire, release, the context
 * manager, _count, _is_mine, _get_value, _is_zero) so that the stdlib's Python code that
 * inspects `obj._semlock` (reprs, Condition) works on ours unchanged; `_semlock` is the
 * object itself. It is a lock, a recursive lock or a semaphore.
 *
 * Waiting: each call first tries without waiting while holding the GIL; only then is the
 * GIL released for the blocking call (mpx_py_wait_sliced()), which returns -EINTR on a signal
 * so that PyErr_CheckSignals() can run (Ctrl-C) before the call is repeated with the same
 * deadline. A signal that arrives while the waiter is not inside the system call (between
 * two of the periodic liveness checks of a lock or barrier wait, say) does not interrupt
 * anything, so blocking calls are made in slices of at most 200 ms with a signal check
 * between slices: Ctrl-C is never lost, only delayed by at most a slice.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <unistd.h>

#include "mpxmodule.h"

enum { KIND_LOCK = 0, KIND_RLOCK = 1, KIND_SEM = 2 };

/* The stdlib's kinds, for the `kind` attribute. */
enum { STD_RECURSIVE_MUTEX = 0, STD_SEMAPHORE = 1 };

/* Bumped in a fork child: process-local bookkeeping recorded before the fork is void. */
static unsigned long fork_generation;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void after_fork_child(void)
{
    fork_generation++;
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, after_fork_child);
}

typedef struct {
    PyObject_HEAD
    mpx_lock *lock; /* owned; KIND_LOCK and KIND_RLOCK */
    mpx_sem *sem;   /* owned; KIND_SEM */
    mpx_state *st;  /* borrowed; the module outlives its types' instances */
    int kind;
    /* The stdlib SemLock's process-local record for a Lock or semaphore: acquisitions
     * minus releases through this object, and the last acquiring thread. */
    long count;
    unsigned long last_tid;
    unsigned long generation; /* fork_generation when recorded */
} SemLockObject;

typedef struct {
    PyObject_HEAD
    mpx_cond *cond; /* owned */
    mpx_state *st;
} CondVarObject;

typedef struct {
    PyObject_HEAD
    mpx_event *event; /* owned */
    mpx_state *st;
} EventObject;

typedef struct {
    PyObject_HEAD
    mpx_barrier *barrier; /* owned */
    mpx_state *st;
} BarrierObject;

static mpx_state *state_of(PyObject *self)
{
    PyObject *m = PyType_GetModuleByDef(Py_TYPE(self), &mpx_module_def);
    return m ? PyModule_GetState(m) : NULL;
}

static int not_initialized(void)
{
    PyErr_SetString(PyExc_ValueError, "synchronization object is not initialized");
    return -1;
}

/* Reports a dead lock holder. Returns NULL. */
static PyObject *raise_owner_died(mpx_state *st, pid_t pid, const char *after)
{
    PyObject *msg = PyUnicode_FromFormat(
        "the process (pid %d) holding the lock died while holding it; %s", (int)pid, after);
    if (!msg)
        return NULL;
    PyObject *exc = PyObject_CallFunction(st->OwnerDiedError, "iO", EOWNERDEAD, msg);
    Py_DECREF(msg);
    if (!exc)
        return NULL;
    PyObject *p = PyLong_FromLong((long)pid);
    if (p && PyObject_SetAttrString(exc, "pid", p) == 0)
        PyErr_SetObject(st->OwnerDiedError, exc);
    Py_XDECREF(p);
    Py_DECREF(exc);
    return NULL;
}

/* Parses (block=True, timeout=None) into a deadline, as the stdlib's SemLock.acquire:
 * block=False ignores the timeout; a negative timeout counts as 0. */
static int parse_acquire(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames, mpx_deadline_t *deadline)
{
    static const char *const names[] = {"block", "timeout"};
    PyObject *a[2] = {NULL, NULL};
    if (nargs == 0 && !kwnames) { /* the common call, kept cheap */
        *deadline = MPX_FOREVER;
        return 0;
    }
    if (mpx_py_parse(fname, args, nargs, kwnames, names, 0, 2, a) < 0)
        return -1;
    int block = 1;
    if (a[0] && (block = PyObject_IsTrue(a[0])) < 0)
        return -1;
    if (!block) {
        *deadline = MPX_NOWAIT;
        return 0;
    }
    return mpx_py_deadline(a[1] ? a[1] : Py_None, deadline);
}

static int parse_timeout(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames, mpx_deadline_t *deadline)
{
    static const char *const names[] = {"timeout"};
    PyObject *a[1] = {NULL};
    if (mpx_py_parse(fname, args, nargs, kwnames, names, 0, 1, a) < 0)
        return -1;
    return mpx_py_deadline(a[0] ? a[0] : Py_None, deadline);
}

/* ---------------------------------------------------------------------------------------
 * SemLock
 */

struct acquire_call {
    SemLockObject *self;
    pid_t dead;
};

static int semlock_try(void *ctx, mpx_deadline_t deadline)
{
    struct acquire_call *c = ctx;
    return c->self->kind == KIND_SEM ? mpx_sem_acquire(c->self->sem, deadline)
                                     : mpx_lock_acquire(c->self->lock, deadline, &c->dead);
}

static int semlock_release_raw(SemLockObject *self)
{
    return self->kind == KIND_SEM ? mpx_sem_release(self->sem) : mpx_lock_release(self->lock);
}

static long local_count(const SemLockObject *self)
{
    return self->generation == fork_generation ? self->count : 0;
}

static void note_acquired(SemLockObject *self)
{
    if (self->generation != fork_generation) {
        self->generation = fork_generation;
        self->count = 0;
    }
    self->count++;
    self->last_tid = PyThread_get_thread_ident();
}

/* 1 acquired, 0 not (timeout or busy), -1 error set. */
static int semlock_acquire(SemLockObject *self, mpx_deadline_t deadline)
{
    if (!self->lock && !self->sem)
        return not_initialized();
    struct acquire_call call = {self, 0};
    int r = semlock_try(&call, MPX_NOWAIT);
    if (r == -EAGAIN && deadline != MPX_NOWAIT &&
        (r = mpx_py_wait_sliced(semlock_try, &call, deadline)) == MPX_PY_RAISED)
        return -1;
    if (r == 0) {
        if (self->kind != KIND_RLOCK)
            note_acquired(self);
        return 1;
    }
    if (r == -EAGAIN || r == -ETIMEDOUT)
        return 0;
    if (r == MPX_EOWNERDEAD) {
        /* Raising means "not acquired": give the lock back so that it is usable again. */
        mpx_lock_release(self->lock);
        raise_owner_died(self->st, call.dead, "the lock has been released");
        return -1;
    }
    mpx_py_error(self->st, r);
    return -1;
}

static PyObject *SemLock_acquire(SemLockObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames)
{
    mpx_deadline_t deadline;
    if (parse_acquire("acquire", args, nargs, kwnames, &deadline) < 0)
        return NULL;
    int r = semlock_acquire(self, deadline);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *SemLock_release(SemLockObject *self, PyObject *unused)
{
    if (!self->lock && !self->sem)
        return not_initialized(), NULL;
    int r = semlock_release_raw(self);
    if (r == -EPERM && self->kind == KIND_RLOCK) {
        PyErr_SetString(PyExc_AssertionError,
                        "attempt to release recursive lock not owned by thread");
        return NULL;
    }
    if (r == -EPERM || r == -EOVERFLOW) {
        PyErr_SetString(PyExc_ValueError, "semaphore or lock released too many times");
        return NULL;
    }
    if (r < 0)
        return mpx_py_error(self->st, r);
    if (self->kind != KIND_RLOCK && self->generation == fork_generation)
        self->count--;
    Py_RETURN_NONE;
}

static PyObject *SemLock_enter(SemLockObject *self, PyObject *unused)
{
    int r = semlock_acquire(self, MPX_FOREVER);
    return r < 0 ? NULL : PyBool_FromLong(r);
}

static PyObject *SemLock_exit(SemLockObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return SemLock_release(self, NULL);
}

static PyObject *SemLock_count(SemLockObject *self, PyObject *unused)
{
    if (self->kind != KIND_RLOCK)
        return PyLong_FromLong(local_count(self));
    if (!self->lock)
        return PyLong_FromLong(0);
    /* As the stdlib's: nonzero while a thread of this process holds it (the stdlib's RLock
     * repr tells "SomeOtherThread" from "SomeOtherProcess" by it). */
    unsigned n = mpx_lock_count(self->lock);
    if (n == 0 && mpx_lock_owner(self->lock) == getpid())
        n = 1;
    return PyLong_FromUnsignedLong(n);
}

static int semlock_is_mine(SemLockObject *self)
{
    if (self->kind == KIND_RLOCK)
        return self->lock && mpx_lock_is_mine(self->lock) == 1;
    return local_count(self) > 0 && self->last_tid == PyThread_get_thread_ident();
}

static PyObject *SemLock_is_mine(SemLockObject *self, PyObject *unused)
{
    return PyBool_FromLong(semlock_is_mine(self));
}

static long semlock_value(SemLockObject *self)
{
    if (self->kind == KIND_SEM)
        return self->sem ? (long)mpx_sem_value(self->sem) : 0;
    return self->lock && mpx_lock_owner(self->lock) == 0;
}

static PyObject *SemLock_get_value(SemLockObject *self, PyObject *unused)
{
    return PyLong_FromLong(semlock_value(self));
}

static PyObject *SemLock_is_zero(SemLockObject *self, PyObject *unused)
{
    return PyBool_FromLong(semlock_value(self) == 0);
}

static PyObject *SemLock_after_fork(SemLockObject *self, PyObject *unused)
{
    self->count = 0;
    Py_RETURN_NONE;
}

static PyObject *SemLock_create(SemLockObject *self, PyObject *args)
{
    int kind;
    unsigned int value, maxvalue;
    if (!PyArg_ParseTuple(args, "iII:_create", &kind, &value, &maxvalue))
        return NULL;
    if (self->lock || self->sem) {
        PyErr_SetString(PyExc_RuntimeError, "already initialized");
        return NULL;
    }
    int r;
    if (kind == KIND_LOCK || kind == KIND_RLOCK)
        r = mpx_lock_create(&self->lock, kind == KIND_RLOCK ? MPX_LOCK_RECURSIVE : MPX_LOCK_PLAIN);
    else if (kind == KIND_SEM)
        r = mpx_sem_create(&self->sem, value, maxvalue);
    else
        r = -EINVAL;
    if (r < 0)
        return mpx_py_error(self->st, r);
    self->kind = kind;
    Py_RETURN_NONE;
}

static PyObject *SemLock_attach(SemLockObject *self, PyObject *args)
{
    int fd, kind;
    unsigned long long offset;
    if (!PyArg_ParseTuple(args, "iKi:_attach", &fd, &offset, &kind))
        return NULL;
    if (self->lock || self->sem) {
        PyErr_SetString(PyExc_RuntimeError, "already initialized");
        return NULL;
    }
    int r;
    if (kind == KIND_SEM) {
        r = mpx_sem_attach(&self->sem, fd, offset);
    } else {
        r = mpx_lock_attach(&self->lock, fd, offset);
        if (r == 0 && mpx_lock_kind(self->lock) != (kind == KIND_RLOCK ? MPX_LOCK_RECURSIVE
                                                                          : MPX_LOCK_PLAIN)) {
            mpx_lock_destroy(self->lock);
            self->lock = NULL;
            r = MPX_EBADSEG;
        }
    }
    if (r < 0)
        return mpx_py_error(self->st, r);
    self->kind = kind;
    Py_RETURN_NONE;
}

static PyObject *SemLock_fd(SemLockObject *self, PyObject *unused)
{
    if (!self->lock && !self->sem)
        return not_initialized(), NULL;
    return PyLong_FromLong(self->kind == KIND_SEM ? mpx_sem_fd(self->sem) : mpx_lock_fd(self->lock));
}

static PyObject *SemLock_offset(SemLockObject *self, PyObject *unused)
{
    if (!self->lock && !self->sem)
        return not_initialized(), NULL;
    return PyLong_FromUnsignedLongLong(self->kind == KIND_SEM ? mpx_sem_offset(self->sem)
                                                              : mpx_lock_offset(self->lock));
}

static PyObject *SemLock_get_semlock(PyObject *self, void *closure)
{
    return Py_NewRef(self);
}

static PyObject *SemLock_get_kind(SemLockObject *self, void *closure)
{
    return PyLong_FromLong(self->kind == KIND_RLOCK ? STD_RECURSIVE_MUTEX : STD_SEMAPHORE);
}

static PyObject *SemLock_get_maxvalue(SemLockObject *self, void *closure)
{
    if (self->kind == KIND_SEM)
        return PyLong_FromUnsignedLong(self->sem ? mpx_sem_maxvalue(self->sem) : 0);
    return PyLong_FromLong(1);
}

static PyObject *SemLock_get_mpx_kind(SemLockObject *self, void *closure)
{
    return PyLong_FromLong(self->kind);
}

static PyObject *SemLock_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    SemLockObject *self = (SemLockObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    pthread_once(&atfork_once, register_atfork);
    if (!(self->st = state_of((PyObject *)self))) {
        Py_DECREF(self);
        return NULL;
    }
    self->generation = fork_generation;
    return (PyObject *)self;
}

static void SemLock_dealloc(SemLockObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (tp->tp_flags & Py_TPFLAGS_HAVE_GC)
        PyObject_GC_UnTrack(self);
    mpx_lock_destroy(self->lock);
    mpx_sem_destroy(self->sem);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyMethodDef SemLock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))SemLock_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(block=True, timeout=None)\n--\n\nAcquire the lock or a permit; return whether "
     "it was acquired."},
    {"release", (PyCFunction)SemLock_release, METH_NOARGS, "release()\n--\n\nRelease it."},
    {"__enter__", (PyCFunction)SemLock_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))SemLock_exit, METH_FASTCALL, NULL},
    {"_count", (PyCFunction)SemLock_count, METH_NOARGS, NULL},
    {"_is_mine", (PyCFunction)SemLock_is_mine, METH_NOARGS, NULL},
    {"_get_value", (PyCFunction)SemLock_get_value, METH_NOARGS, NULL},
    {"_is_zero", (PyCFunction)SemLock_is_zero, METH_NOARGS, NULL},
    {"_after_fork", (PyCFunction)SemLock_after_fork, METH_NOARGS, NULL},
    {"_create", (PyCFunction)SemLock_create, METH_VARARGS, NULL},
    {"_attach", (PyCFunction)SemLock_attach, METH_VARARGS, NULL},
    {"_fd", (PyCFunction)SemLock_fd, METH_NOARGS, NULL},
    {"_offset", (PyCFunction)SemLock_offset, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef SemLock_getset[] = {
    {"_semlock", SemLock_get_semlock, NULL, NULL, NULL},
    {"kind", (getter)SemLock_get_kind, NULL, NULL, NULL},
    {"maxvalue", (getter)SemLock_get_maxvalue, NULL, NULL, NULL},
    {"_mpx_kind", (getter)SemLock_get_mpx_kind, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot SemLock_slots[] = {
    {Py_tp_new, SemLock_new},
    {Py_tp_dealloc, SemLock_dealloc},
    {Py_tp_methods, SemLock_methods},
    {Py_tp_getset, SemLock_getset},
    {Py_tp_doc, "A lock, recursive lock or semaphore in libmpx shared memory."},
    {0, NULL},
};

static PyType_Spec SemLock_spec = {
    .name = "mpservice._mpx.SemLock",
    .basicsize = sizeof(SemLockObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = SemLock_slots,
};

/* ---------------------------------------------------------------------------------------
 * The common part of CondVar, Event and Barrier: a handle created or attached once.
 */

#define SIMPLE_HANDLE(Type, field, prefix)                                                   \
    static PyObject *Type##_new(PyTypeObject *type, PyObject *args, PyObject *kwds)          \
    {                                                                                        \
        Type##Object *self = (Type##Object *)type->tp_alloc(type, 0);                        \
        if (self && !(self->st = state_of((PyObject *)self)))                                \
            Py_CLEAR(self);                                                                  \
        return (PyObject *)self;                                                             \
    }                                                                                        \
    static void Type##_dealloc(Type##Object *self)                                           \
    {                                                                                        \
        PyTypeObject *tp = Py_TYPE(self);                                                    \
        if (tp->tp_flags & Py_TPFLAGS_HAVE_GC)                                               \
            PyObject_GC_UnTrack(self);                                                       \
        prefix##_destroy(self->field);                                                       \
        tp->tp_free((PyObject *)self);                                                       \
        Py_DECREF(tp);                                                                       \
    }                                                                                        \
    static int Type##_ready(Type##Object *self)                                              \
    {                                                                                        \
        return self->field ? 0 : not_initialized();                                          \
    }                                                                                        \
    static PyObject *Type##_attach(Type##Object *self, PyObject *args)                       \
    {                                                                                        \
        int fd;                                                                              \
        unsigned long long offset;                                                           \
        if (!PyArg_ParseTuple(args, "iK:_attach", &fd, &offset))                             \
            return NULL;                                                                     \
        if (self->field) {                                                                   \
            PyErr_SetString(PyExc_RuntimeError, "already initialized");                      \
            return NULL;                                                                     \
        }                                                                                    \
        int r = prefix##_attach(&self->field, fd, offset);                                   \
        if (r < 0)                                                                           \
            return mpx_py_error(self->st, r);                                                \
        Py_RETURN_NONE;                                                                      \
    }                                                                                        \
    static PyObject *Type##_fd(Type##Object *self, PyObject *unused)                         \
    {                                                                                        \
        if (Type##_ready(self) < 0)                                                          \
            return NULL;                                                                     \
        return PyLong_FromLong(prefix##_fd(self->field));                                    \
    }                                                                                        \
    static PyObject *Type##_offset(Type##Object *self, PyObject *unused)                     \
    {                                                                                        \
        if (Type##_ready(self) < 0)                                                          \
            return NULL;                                                                     \
        return PyLong_FromUnsignedLongLong(prefix##_offset(self->field));                    \
    }                                                                                        \
    static int Type##_check_new(Type##Object *self)                                          \
    {                                                                                        \
        if (!self->field)                                                                    \
            return 0;                                                                        \
        PyErr_SetString(PyExc_RuntimeError, "already initialized");                          \
        return -1;                                                                           \
    }

#define SIMPLE_HANDLE_METHODS(Type)                                                          \
    {"_attach", (PyCFunction)Type##_attach, METH_VARARGS, NULL},                             \
        {"_fd", (PyCFunction)Type##_fd, METH_NOARGS, NULL},                                  \
        {"_offset", (PyCFunction)Type##_offset, METH_NOARGS, NULL}

#define SIMPLE_HANDLE_SLOTS(Type)                                                            \
    {Py_tp_new, Type##_new}, {Py_tp_dealloc, Type##_dealloc},                                \
        {Py_tp_methods, Type##_methods}

/* ---------------------------------------------------------------------------------------
 * CondVar
 */

SIMPLE_HANDLE(CondVar, cond, mpx_cond)

static PyObject *CondVar_create(CondVarObject *self, PyObject *unused)
{
    if (CondVar_check_new(self) < 0)
        return NULL;
    int r = mpx_cond_create(&self->cond);
    return r < 0 ? mpx_py_error(self->st, r) : Py_NewRef(Py_None);
}

static SemLockObject *as_lock(CondVarObject *self, PyObject *lock)
{
    if (!PyObject_TypeCheck(lock, (PyTypeObject *)self->st->SemLockType) ||
        ((SemLockObject *)lock)->kind == KIND_SEM || !((SemLockObject *)lock)->lock) {
        PyErr_SetString(PyExc_TypeError,
                        "the lock of a Condition must be a Lock or RLock of "
                        "mpservice.multiprocessing");
        return NULL;
    }
    return (SemLockObject *)lock;
}

struct cond_call {
    mpx_cond *cond;
    mpx_lock *lock;
    pid_t dead;
};

/* One slice of a wait: on a timeout the lock is held again and the registration withdrawn,
 * and no notification can slip by before the next slice registers again, since notify
 * needs the lock. */
static int cond_wait(void *ctx, mpx_deadline_t deadline)
{
    struct cond_call *c = ctx;
    return mpx_cond_wait(c->cond, c->lock, deadline, &c->dead);
}

/* wait(lock, timeout=None) -> bool: the caller holds `lock` (checked by the Python layer
 * per thread); it is held again on return, exception or not. */
static PyObject *CondVar_wait(CondVarObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "wait(lock, timeout) takes 2 arguments");
        return NULL;
    }
    SemLockObject *lk;
    mpx_deadline_t deadline;
    if (CondVar_ready(self) < 0 || !(lk = as_lock(self, args[0])) ||
        mpx_py_deadline(args[1], &deadline) < 0)
        return NULL;
    /* The engine releases and re-acquires the lock; keep the local record of a plain lock
     * as it was, since the lock is held again on return. */
    long count = lk->count;
    unsigned long tid = lk->last_tid, gen = lk->generation;
    struct cond_call call = {self->cond, lk->lock, 0};
    int r = mpx_py_wait_sliced(cond_wait, &call, deadline);
    lk->count = count, lk->last_tid = tid, lk->generation = gen;
    if (r == MPX_PY_RAISED)
        return NULL;
    if (r == 0)
        Py_RETURN_TRUE;
    if (r == -ETIMEDOUT || r == -EAGAIN)
        Py_RETURN_FALSE;
    if (r == -EPERM) {
        PyErr_SetString(PyExc_AssertionError, "must acquire() condition before using wait()");
        return NULL;
    }
    if (r == MPX_EOWNERDEAD)
        return raise_owner_died(self->st, call.dead, "the lock is held again by this thread");
    return mpx_py_error(self->st, r);
}

/* notify(lock, n) */
static PyObject *CondVar_notify(CondVarObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "notify(lock, n) takes 2 arguments");
        return NULL;
    }
    SemLockObject *lk;
    if (CondVar_ready(self) < 0 || !(lk = as_lock(self, args[0])))
        return NULL;
    Py_ssize_t n = PyNumber_AsSsize_t(args[1], NULL); /* clamps large values */
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n <= 0)
        Py_RETURN_NONE;
    int r = mpx_cond_notify(self->cond, lk->lock, n > UINT32_MAX ? UINT32_MAX : (unsigned)n);
    if (r == -EPERM) {
        PyErr_SetString(PyExc_AssertionError, "lock is not owned");
        return NULL;
    }
    return r < 0 ? mpx_py_error(self->st, r) : Py_NewRef(Py_None);
}

static PyObject *CondVar_waiters(CondVarObject *self, PyObject *unused)
{
    if (CondVar_ready(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong(mpx_cond_waiters(self->cond));
}

static PyMethodDef CondVar_methods[] = {
    {"_create", (PyCFunction)CondVar_create, METH_NOARGS, NULL},
    {"_wait", (PyCFunction)(void (*)(void))CondVar_wait, METH_FASTCALL, NULL},
    {"_notify", (PyCFunction)(void (*)(void))CondVar_notify, METH_FASTCALL, NULL},
    {"_waiters", (PyCFunction)CondVar_waiters, METH_NOARGS, NULL},
    SIMPLE_HANDLE_METHODS(CondVar),
    {NULL, NULL, 0, NULL},
};

static PyType_Slot CondVar_slots[] = {
    SIMPLE_HANDLE_SLOTS(CondVar),
    {Py_tp_doc, "A condition variable in libmpx shared memory."},
    {0, NULL},
};

static PyType_Spec CondVar_spec = {
    .name = "mpservice._mpx.CondVar",
    .basicsize = sizeof(CondVarObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = CondVar_slots,
};

/* ---------------------------------------------------------------------------------------
 * Event
 */

SIMPLE_HANDLE(Event, event, mpx_event)

static PyObject *Event_create(EventObject *self, PyObject *unused)
{
    if (Event_check_new(self) < 0)
        return NULL;
    int r = mpx_event_create(&self->event);
    return r < 0 ? mpx_py_error(self->st, r) : Py_NewRef(Py_None);
}

static PyObject *Event_is_set(EventObject *self, PyObject *unused)
{
    if (Event_ready(self) < 0)
        return NULL;
    return PyBool_FromLong(mpx_event_is_set(self->event) == 1);
}

static PyObject *Event_set(EventObject *self, PyObject *unused)
{
    if (Event_ready(self) < 0)
        return NULL;
    mpx_event_set(self->event);
    Py_RETURN_NONE;
}

static PyObject *Event_clear(EventObject *self, PyObject *unused)
{
    if (Event_ready(self) < 0)
        return NULL;
    mpx_event_clear(self->event);
    Py_RETURN_NONE;
}

static int event_wait(void *ctx, mpx_deadline_t deadline)
{
    return mpx_event_wait(ctx, deadline);
}

static PyObject *Event_wait(EventObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    mpx_deadline_t deadline;
    if (Event_ready(self) < 0 || parse_timeout("wait", args, nargs, kwnames, &deadline) < 0)
        return NULL;
    int r = mpx_event_wait(self->event, MPX_NOWAIT);
    if (r == -EAGAIN && deadline != MPX_NOWAIT &&
        (r = mpx_py_wait_sliced(event_wait, self->event, deadline)) == MPX_PY_RAISED)
        return NULL;
    if (r == 0)
        Py_RETURN_TRUE;
    if (r == -EAGAIN || r == -ETIMEDOUT)
        Py_RETURN_FALSE;
    return mpx_py_error(self->st, r);
}

static PyMethodDef Event_methods[] = {
    {"_create", (PyCFunction)Event_create, METH_NOARGS, NULL},
    {"is_set", (PyCFunction)Event_is_set, METH_NOARGS,
     "is_set()\n--\n\nReturn True if and only if the internal flag is true."},
    {"set", (PyCFunction)Event_set, METH_NOARGS,
     "set()\n--\n\nSet the internal flag to true and wake every waiter."},
    {"clear", (PyCFunction)Event_clear, METH_NOARGS,
     "clear()\n--\n\nReset the internal flag to false."},
    {"wait", (PyCFunction)(void (*)(void))Event_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait(timeout=None)\n--\n\nBlock until the internal flag is true or the timeout "
     "passes; return True if it was set."},
    SIMPLE_HANDLE_METHODS(Event),
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Event_slots[] = {
    SIMPLE_HANDLE_SLOTS(Event),
    {Py_tp_doc, "An event in libmpx shared memory."},
    {0, NULL},
};

static PyType_Spec Event_spec = {
    .name = "mpservice._mpx.Event",
    .basicsize = sizeof(EventObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = Event_slots,
};

/* ---------------------------------------------------------------------------------------
 * Barrier
 */

SIMPLE_HANDLE(Barrier, barrier, mpx_barrier)

static PyObject *Barrier_create(BarrierObject *self, PyObject *args)
{
    unsigned int parties;
    if (!PyArg_ParseTuple(args, "I:_create", &parties) || Barrier_check_new(self) < 0)
        return NULL;
    int r = mpx_barrier_create(&self->barrier, parties);
    return r < 0 ? mpx_py_error(self->st, r) : Py_NewRef(Py_None);
}

static PyObject *broken_barrier(BarrierObject *self)
{
    PyErr_SetNone(self->st->BrokenBarrierError);
    return NULL;
}

/* Ends a wait that failed on this side: as threading.Barrier does, a timeout or an
 * exception breaks the barrier for everyone. */
static PyObject *break_and_raise(BarrierObject *self, int r)
{
    mpx_barrier_abort(self->barrier);
    if (r == -ETIMEDOUT || r == -EAGAIN || r == MPX_EBROKEN)
        return broken_barrier(self);
    if (r < 0)
        return mpx_py_error(self->st, r);
    return NULL; /* an exception is already set */
}

struct barrier_call {
    mpx_barrier *barrier;
    uint64_t ticket;
};

static int barrier_arrive(void *ctx, mpx_deadline_t deadline)
{
    struct barrier_call *c = ctx;
    return mpx_barrier_arrive(c->barrier, deadline, &c->ticket);
}

static int barrier_await(void *ctx, mpx_deadline_t deadline)
{
    struct barrier_call *c = ctx;
    return mpx_barrier_await(c->barrier, c->ticket, deadline);
}

/* _wait(action, timeout) -> index */
static PyObject *Barrier_wait(BarrierObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    mpx_deadline_t deadline;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_wait(action, timeout) takes 2 arguments");
        return NULL;
    }
    if (Barrier_ready(self) < 0 || mpx_py_deadline(args[1], &deadline) < 0)
        return NULL;
    PyObject *action = args[0];
    struct barrier_call call = {self->barrier, 0};
    int idx = mpx_py_wait_sliced(barrier_arrive, &call, deadline);
    if (idx == MPX_PY_RAISED)
        return NULL; /* not arrived: nothing to undo */
    if (idx == MPX_EBROKEN)
        return broken_barrier(self);
    if (idx < 0)
        return break_and_raise(self, idx);
    if ((unsigned)idx == mpx_barrier_parties(self->barrier) - 1) {
        if (action != Py_None) {
            PyObject *res = PyObject_CallNoArgs(action);
            if (!res)
                return break_and_raise(self, 0);
            Py_DECREF(res);
        }
        int r = mpx_barrier_trip(self->barrier, call.ticket);
        return r < 0 ? broken_barrier(self) : PyLong_FromLong(idx);
    }
    int r = mpx_py_wait_sliced(barrier_await, &call, deadline);
    if (r == MPX_PY_RAISED)
        return break_and_raise(self, 0);
    if (r == MPX_EBROKEN)
        return broken_barrier(self);
    if (r < 0)
        return break_and_raise(self, r);
    return PyLong_FromLong(idx);
}

static PyObject *Barrier_reset(BarrierObject *self, PyObject *unused)
{
    if (Barrier_ready(self) < 0)
        return NULL;
    mpx_barrier_reset(self->barrier);
    Py_RETURN_NONE;
}

static PyObject *Barrier_abort(BarrierObject *self, PyObject *unused)
{
    if (Barrier_ready(self) < 0)
        return NULL;
    mpx_barrier_abort(self->barrier);
    Py_RETURN_NONE;
}

static PyObject *Barrier_get_parties(BarrierObject *self, void *closure)
{
    return Barrier_ready(self) < 0 ? NULL
                                   : PyLong_FromUnsignedLong(mpx_barrier_parties(self->barrier));
}

static PyObject *Barrier_get_n_waiting(BarrierObject *self, void *closure)
{
    return Barrier_ready(self) < 0
               ? NULL
               : PyLong_FromUnsignedLong(mpx_barrier_n_waiting(self->barrier));
}

static PyObject *Barrier_get_broken(BarrierObject *self, void *closure)
{
    return Barrier_ready(self) < 0 ? NULL
                                   : PyBool_FromLong(mpx_barrier_broken(self->barrier) == 1);
}

static PyMethodDef Barrier_methods[] = {
    {"_create", (PyCFunction)Barrier_create, METH_VARARGS, NULL},
    {"_wait", (PyCFunction)(void (*)(void))Barrier_wait, METH_FASTCALL, NULL},
    {"reset", (PyCFunction)Barrier_reset, METH_NOARGS,
     "reset()\n--\n\nReturn the barrier to its initial state; parties waiting now get "
     "BrokenBarrierError."},
    {"abort", (PyCFunction)Barrier_abort, METH_NOARGS,
     "abort()\n--\n\nPut the barrier into the broken state."},
    SIMPLE_HANDLE_METHODS(Barrier),
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Barrier_getset[] = {
    {"parties", (getter)Barrier_get_parties, NULL, "The number of parties required.", NULL},
    {"n_waiting", (getter)Barrier_get_n_waiting, NULL, "The number of parties waiting.", NULL},
    {"broken", (getter)Barrier_get_broken, NULL, "True if the barrier is broken.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Barrier_slots[] = {
    SIMPLE_HANDLE_SLOTS(Barrier),
    {Py_tp_getset, Barrier_getset},
    {Py_tp_doc, "A barrier in libmpx shared memory."},
    {0, NULL},
};

static PyType_Spec Barrier_spec = {
    .name = "mpservice._mpx.Barrier",
    .basicsize = sizeof(BarrierObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .slots = Barrier_slots,
};

/* ---------------------------------------------------------------------------------------
 * Registration
 */

static int add_type(PyObject *module, PyType_Spec *spec, const char *name, PyObject **slot)
{
    *slot = PyType_FromModuleAndSpec(module, spec, NULL);
    return *slot && PyModule_AddObjectRef(module, name, *slot) == 0 ? 0 : -1;
}

int mpx_sync_types_init(PyObject *module, mpx_state *st)
{
    PyObject *threading = PyImport_ImportModule("threading");
    if (!threading)
        return -1;
    st->BrokenBarrierError = PyObject_GetAttrString(threading, "BrokenBarrierError");
    Py_DECREF(threading);
    if (!st->BrokenBarrierError)
        return -1;
    st->OwnerDiedError = PyErr_NewExceptionWithDoc(
        "mpservice.multiprocessing.synchronize.OwnerDiedError",
        "The process holding a Lock or RLock died while holding it. errno is EOWNERDEAD and "
        "the attribute `pid` is the dead process's pid.",
        PyExc_OSError, NULL);
    if (!st->OwnerDiedError || PyModule_AddObjectRef(module, "OwnerDiedError", st->OwnerDiedError) < 0)
        return -1;
    PyObject *cv, *ev, *br;
    if (add_type(module, &SemLock_spec, "SemLock", &st->SemLockType) < 0 ||
        add_type(module, &CondVar_spec, "CondVar", &cv) < 0)
        return -1;
    Py_DECREF(cv);
    if (add_type(module, &Event_spec, "Event", &ev) < 0)
        return -1;
    Py_DECREF(ev);
    if (add_type(module, &Barrier_spec, "Barrier", &br) < 0)
        return -1;
    Py_DECREF(br);
    return 0;
}
