/* mpservice._mpx: the CPython binding of libmpx. One file per Python type; this file holds
 * the module itself, its state, and the error conversion shared by the types. */
#include <errno.h>
#include <math.h>

#include "mpx/fault.h"
#include "fastpickle.h"
#include "mpxmodule.h"

PyObject *mpx_py_error(mpx_state *st, int err)
{
    switch (err) {
    case -ENOMEM:
        return PyErr_NoMemory();
    case -EINVAL:
        PyErr_SetString(PyExc_ValueError, mpx_strerror(err));
        return NULL;
    case MPX_ETOOBIG:
        PyErr_SetString(PyExc_ValueError, mpx_strerror(err));
        return NULL;
    default:
        break;
    }
    PyObject *e = Py_BuildValue("(is)", err < 0 && err > -4096 ? -err : err, mpx_strerror(err));
    if (e) {
        PyErr_SetObject(st->Error, e);
        Py_DECREF(e);
    }
    return NULL;
}

int mpx_py_parse(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
                 const char *const *names, int nrequired, int nmax, PyObject **out)
{
    if (nargs > nmax) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)", fname,
                     nmax, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        int i;
        for (i = 0; i < nmax; i++)
            if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0)
                break;
        if (i == nmax) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname,
                         key);
            return -1;
        }
        if (i < nargs || out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'", fname,
                         names[i]);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    for (int i = 0; i < nrequired; i++)
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname,
                         names[i]);
            return -1;
        }
    return 0;
}

int mpx_py_deadline(PyObject *timeout, mpx_deadline_t *deadline)
{
    if (timeout == Py_None) {
        *deadline = MPX_FOREVER;
        return 0;
    }
    double t = PyFloat_AsDouble(timeout);
    if (t == -1.0 && PyErr_Occurred())
        return -1;
    *deadline = mpx_deadline_in_seconds(t);
    return 0;
}

PyObject *mpx_py_queue_exc(mpx_state *st, int full)
{
    /* queue.Empty and queue.Full, fetched on first use: importing the queue module costs
     * a spawned child that never uses a queue about a millisecond. */
    PyObject **slot = full ? &st->Full : &st->Empty;
    if (!*slot) {
        PyObject *queue = PyImport_ImportModule("queue");
        if (!queue)
            return NULL;
        *slot = PyObject_GetAttrString(queue, full ? "Full" : "Empty");
        Py_DECREF(queue);
    }
    return *slot;
}

#define SLICE_NS 200000000 /* 200 ms */

int mpx_py_wait_sliced(int (*fn)(void *ctx, mpx_deadline_t deadline), void *ctx,
                       mpx_deadline_t deadline)
{
    for (;;) {
        int64_t now = mpx_now();
        mpx_deadline_t slice =
            deadline == MPX_FOREVER || deadline - now > SLICE_NS ? now + SLICE_NS : deadline;
        int r;
        Py_BEGIN_ALLOW_THREADS
        r = fn(ctx, slice);
        Py_END_ALLOW_THREADS
        if (r != -EINTR && (r != -ETIMEDOUT || slice == deadline))
            return r;
        if (PyErr_CheckSignals() < 0)
            return MPX_PY_RAISED;
    }
}

static int mpx_exec(PyObject *m)
{
    mpx_state *st = PyModule_GetState(m);
    PyObject *pickle = NULL;
    int r = -1;
    if (!(pickle = PyImport_ImportModule("pickle")))
        goto done;
    if (!(st->dumps = PyObject_GetAttrString(pickle, "dumps")) ||
        !(st->loads = PyObject_GetAttrString(pickle, "loads")) ||
        !(st->PickleBuffer = PyObject_GetAttrString(pickle, "PickleBuffer")) ||
        !(st->kw_buffer_callback = Py_BuildValue("(s)", "buffer_callback")) ||
        !(st->kw_buffers = Py_BuildValue("(s)", "buffers")) ||
        !(st->protocol = PyLong_FromLong(5)))
        goto done;
    st->Error = PyErr_NewExceptionWithDoc(
        "mpservice._mpx.Error",
        "An error reported by libmpx; args are (code, message) where code is an errno value "
        "or a negative libmpx code.",
        PyExc_OSError, NULL);
    if (!st->Error || PyModule_AddObjectRef(m, "Error", st->Error) < 0)
        goto done;
    if (mpx_buffer_type_init(m, st) < 0 || mpx_queue_type_init(m, st) < 0 ||
        mpx_sync_types_init(m, st) < 0 || mpx_proc_types_init(m, st) < 0)
        goto done;
    if (PyModule_AddStringConstant(m, "version", mpx_version()) < 0)
        goto done;
    r = 0;
done:
    Py_XDECREF(pickle);
    return r;
}

static int mpx_traverse(PyObject *m, visitproc visit, void *arg)
{
    mpx_state *st = PyModule_GetState(m);
    Py_VISIT(st->QueueType);
    Py_VISIT(st->BufferType);
    Py_VISIT(st->Error);
    Py_VISIT(st->Empty);
    Py_VISIT(st->Full);
    Py_VISIT(st->dumps);
    Py_VISIT(st->loads);
    Py_VISIT(st->PickleBuffer);
    Py_VISIT(st->fallback_dumps);
    Py_VISIT(st->BrokenBarrierError);
    Py_VISIT(st->OwnerDiedError);
    Py_VISIT(st->SemLockType);
    Py_VISIT(st->InboxType);
    Py_VISIT(st->ChildType);
    return 0;
}

static int mpx_clear(PyObject *m)
{
    mpx_state *st = PyModule_GetState(m);
    Py_CLEAR(st->QueueType);
    Py_CLEAR(st->BufferType);
    Py_CLEAR(st->Error);
    Py_CLEAR(st->Empty);
    Py_CLEAR(st->Full);
    Py_CLEAR(st->dumps);
    Py_CLEAR(st->loads);
    Py_CLEAR(st->PickleBuffer);
    Py_CLEAR(st->kw_buffer_callback);
    Py_CLEAR(st->kw_buffers);
    Py_CLEAR(st->protocol);
    Py_CLEAR(st->fallback_dumps);
    Py_CLEAR(st->BrokenBarrierError);
    Py_CLEAR(st->OwnerDiedError);
    Py_CLEAR(st->SemLockType);
    Py_CLEAR(st->InboxType);
    Py_CLEAR(st->ChildType);
    return 0;
}

static void mpx_free(void *m)
{
    mpx_clear((PyObject *)m);
}

static PyObject *fault_arm(PyObject *m, PyObject *args)
{
    const char *point = NULL;
    unsigned int countdown = 0;
    if (!PyArg_ParseTuple(args, "z|I:_fault_arm", &point, &countdown))
        return NULL;
    int r = mpx_fault_arm(point, countdown);
    if (r < 0)
        return mpx_py_error(PyModule_GetState(m), r);
    Py_RETURN_NONE;
}

static PyMethodDef mpx_methods[] = {
    {"_fast_dumps", mpx_fastpickle_test_dumps, METH_O,
     "_fast_dumps(obj)\n--\n\nTesting only: the fast pickle encoder; NotImplemented when "
     "obj is outside its subset."},
    {"_fast_loads", mpx_fastpickle_test_loads, METH_O,
     "_fast_loads(data)\n--\n\nTesting only: the fast pickle decoder; NotImplemented when "
     "data is outside its subset."},
    {"_fault_arm", fault_arm, METH_VARARGS,
     "_fault_arm(point, countdown=0)\n--\n\nTesting only: arm a libmpx fault point (the "
     "process kills itself when it reaches it)."},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot mpx_slots[] = {
    {Py_mod_exec, mpx_exec},
    {0, NULL},
};

struct PyModuleDef mpx_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mpservice._mpx",
    .m_doc = "The binding of libmpx, the C engine of mpservice.",
    .m_size = sizeof(mpx_state),
    .m_methods = mpx_methods,
    .m_slots = mpx_slots,
    .m_traverse = mpx_traverse,
    .m_clear = mpx_clear,
    .m_free = mpx_free,
};

PyMODINIT_FUNC PyInit__mpx(void)
{
    return PyModuleDef_Init(&mpx_module_def);
}
