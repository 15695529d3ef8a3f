/* Internal header of the extension module mpservice._mpx. */
#ifndef MPX_PYMODULE_H
#define MPX_PYMODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>

#include "mpx/mpx.h"

/* Per-module state. Every PyObject * here is a strong reference owned by the module. */
typedef struct {
    PyObject *QueueType;       /* _mpx.Queue, a heap type */
    PyObject *BufferType;      /* _mpx.Buffer, a heap type */
    PyObject *Error;           /* _mpx.Error(OSError) */
    PyObject *Empty;           /* queue.Empty, NULL until first used (mpx_py_queue_exc) */
    PyObject *Full;            /* queue.Full, likewise */
    PyObject *dumps;           /* pickle.dumps */
    PyObject *loads;           /* pickle.loads */
    PyObject *PickleBuffer;    /* pickle.PickleBuffer */
    PyObject *kw_buffer_callback; /* ("buffer_callback",), kwnames for dumps */
    PyObject *kw_buffers;      /* ("buffers",), kwnames for loads */
    PyObject *protocol;        /* int 5 */
    PyObject *fallback_dumps;  /* borrowed lazily: multiprocessing.reduction.ForkingPickler.dumps */
    PyObject *SemLockType;     /* _mpx.SemLock, a heap type */
    PyObject *OwnerDiedError;  /* mpservice.multiprocessing.synchronize.OwnerDiedError */
    PyObject *BrokenBarrierError; /* threading.BrokenBarrierError */
    PyObject *InboxType;       /* _mpx.Inbox, a heap type */
    PyObject *ChildType;       /* _mpx.Child, a heap type */
} mpx_state;

/* queue.Full (full != 0) or queue.Empty, imported on first use; NULL with an exception set
 * if the import fails. Borrowed reference. */
PyObject *mpx_py_queue_exc(mpx_state *st, int full);

/* Raises the Python exception for a libmpx error code and returns NULL. */
PyObject *mpx_py_error(mpx_state *st, int err);

/* Converts a timeout object (None or a real number) to a deadline. None gives MPX_FOREVER,
 * a negative number counts as 0, like the stdlib's multiprocessing semaphores. Returns -1
 * with an exception set on a bad type. */
int mpx_py_deadline(PyObject *timeout, mpx_deadline_t *deadline);

/* Argument parsing for METH_FASTCALL | METH_KEYWORDS methods: fills out[0..nmax) (left NULL
 * when not given) from positional and keyword arguments named `names`, the first nrequired
 * of which are required. Returns -1 with TypeError set on a bad call. */
int mpx_py_parse(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                 const char *const *names, int nrequired, int nmax, PyObject **out);

/* mpx_py_wait_sliced(): a Python exception is set (no libmpx result is this value). */
#define MPX_PY_RAISED INT_MIN

/* Runs fn(ctx, deadline) with the GIL released, in slices of at most 200 ms, with a signal
 * check (PyErr_CheckSignals) after each slice and after -EINTR, so that Ctrl-C interrupts
 * a wait even when the signal lands outside the system call. Returns fn's final result
 * (never -EINTR; -ETIMEDOUT only once `deadline` passed), or MPX_PY_RAISED. */
int mpx_py_wait_sliced(int (*fn)(void *ctx, mpx_deadline_t deadline), void *ctx,
                       mpx_deadline_t deadline);

extern struct PyModuleDef mpx_module_def;

int mpx_queue_type_init(PyObject *module, mpx_state *st);
int mpx_buffer_type_init(PyObject *module, mpx_state *st);
int mpx_sync_types_init(PyObject *module, mpx_state *st);
int mpx_proc_types_init(PyObject *module, mpx_state *st);

/* A new _mpx.Buffer holding a copy of src[0..len). */
PyObject *mpx_buffer_from(mpx_state *st, const void *src, size_t len);

#endif
