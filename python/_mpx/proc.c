/* _mpx.Inbox, _mpx.Child and the waiting functions of processes and threads: the binding of
 * <mpx/inbox.h> and <mpx/proc.h> used by mpservice.multiprocessing's SpawnProcess.
 *
 * The Python side decides what a child reports and what the parent does with it; this file
 * moves the bytes: a child's logging.LogRecord is read attribute by attribute into an
 * mpx_log_record and sent; the parent's receiver gets batches in which each log record is
 * already a logging.LogRecord built here, ready for Logger.handle(). Every wait releases the
 * GIL and runs in slices with signal checks (mpx_py_wait_sliced), so Ctrl-C interrupts it.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "mpxmodule.h"

/* An int argument; -1 with an exception set on failure (PyLong_AsInt is 3.13+). */
static int as_int(PyObject *v)
{
    long x = PyLong_AsLong(v);
    if (x == -1 && PyErr_Occurred())
        return -1;
    if (x < INT_MIN || x > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "int out of range");
        return -1;
    }
    return (int)x;
}

/* ---------------------------------------------------------------------------------------
 * Inbox
 */

typedef struct {
    PyObject_HEAD
    mpx_inbox *ib; /* owned */
    mpx_state *st; /* borrowed; the module outlives its types' instances */
} InboxObject;

static mpx_state *state_of(PyObject *self)
{
    PyObject *m = PyType_GetModuleByDef(Py_TYPE(self), &mpx_module_def);
    return m ? PyModule_GetState(m) : NULL;
}

static PyObject *Inbox_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", NULL};
    int fd = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|i:Inbox", kwlist, &fd))
        return NULL;
    InboxObject *self = (InboxObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    if (!(self->st = state_of((PyObject *)self))) {
        Py_DECREF(self);
        return NULL;
    }
    int r = fd < 0 ? mpx_inbox_create(&self->ib) : mpx_inbox_attach(&self->ib, fd);
    if (r < 0) {
        mpx_py_error(self->st, r);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void Inbox_dealloc(InboxObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    mpx_inbox_destroy(self->ib);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *Inbox_fileno(InboxObject *self, PyObject *unused)
{
    return PyLong_FromLong(mpx_inbox_fd(self->ib));
}

/* ---- sending a logging.LogRecord ---- */

/* Interned attribute and key names of logging.LogRecord, created once. */
enum {
    K_NAME, K_MSG, K_ARGS, K_LEVELNAME, K_LEVELNO, K_PATHNAME, K_FILENAME, K_MODULE,
    K_EXC_INFO, K_EXC_TEXT, K_STACK_INFO, K_LINENO, K_FUNCNAME, K_CREATED, K_MSECS,
    K_RELATIVECREATED, K_THREAD, K_THREADNAME, K_PROCESSNAME, K_PROCESS, K_TASKNAME,
    K_GETMESSAGE, K_COUNT
};
static const char *const key_text[K_COUNT] = {
    "name", "msg", "args", "levelname", "levelno", "pathname", "filename", "module",
    "exc_info", "exc_text", "stack_info", "lineno", "funcName", "created", "msecs",
    "relativeCreated", "thread", "threadName", "processName", "process", "taskName",
    "getMessage",
};
static PyObject *keys[K_COUNT];

static int keys_ready(void)
{
    if (keys[0])
        return 0;
    for (int i = 0; i < K_COUNT; i++)
        if (!(keys[i] = PyUnicode_InternFromString(key_text[i])))
            return -1;
    return 0;
}

/* A field's text: UTF-8 of a str (lone surrogates become '?'), "" for None. `hold` keeps
 * the bytes object alive when an encoding was needed. */
static const char *text_of(PyObject *v, PyObject **hold)
{
    *hold = NULL;
    if (v == Py_None)
        return "";
    if (!PyUnicode_Check(v)) {
        if (!(*hold = PyObject_Str(v)))
            return NULL;
        v = *hold;
    }
    const char *s = PyUnicode_AsUTF8(v);
    if (s)
        return s;
    PyErr_Clear();
    PyObject *b = PyUnicode_AsEncodedString(v, "utf-8", "replace");
    Py_XSETREF(*hold, b);
    return b ? PyBytes_AS_STRING(b) : NULL;
}

static int64_t int_of(PyObject *v)
{
    if (v == Py_None)
        return 0;
    long long x = PyLong_AsLongLong(v);
    if (x == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return x;
}

/* send_log(record, message=None, extra=None): the record's fields; `message` replaces
 * record.getMessage() (the Python side passes the message with the exception text), and
 * `extra` (bytes: the record's extra attributes, pickled) travels as the extra part. */
static PyObject *Inbox_send_log(InboxObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3)
        return PyErr_Format(PyExc_TypeError, "send_log() takes 1 to 3 arguments");
    if (keys_ready() < 0)
        return NULL;
    Py_buffer extra = {0};
    if (nargs == 3 && args[2] != Py_None &&
        PyObject_GetBuffer(args[2], &extra, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *r = args[0];
    enum { F_NAME, F_MSG, F_FUNC, F_PATH, F_PNAME, F_TNAME, F_LEVEL, F_LINE, F_CREATED,
           F_PROC, F_THREAD, F_N };
    static const int attr[F_N] = {K_NAME, -1, K_FUNCNAME, K_PATHNAME, K_PROCESSNAME,
                                  K_THREADNAME, K_LEVELNO, K_LINENO, K_CREATED, K_PROCESS,
                                  K_THREAD};
    PyObject *v[F_N] = {NULL}, *hold[F_N] = {NULL};
    const char *s[F_N] = {NULL};
    PyObject *result = NULL;
    for (int i = 0; i < F_N; i++) {
        if (i == F_MSG) {
            v[i] = nargs >= 2 && args[1] != Py_None
                       ? Py_NewRef(args[1])
                       : PyObject_CallMethodNoArgs(r, keys[K_GETMESSAGE]);
        } else {
            v[i] = PyObject_GetAttr(r, keys[attr[i]]);
        }
        if (!v[i])
            goto done;
        if (i <= F_TNAME && !(s[i] = text_of(v[i], &hold[i])))
            goto done;
    }
    double created = PyFloat_AsDouble(v[F_CREATED]);
    if (created == -1.0 && PyErr_Occurred())
        goto done;
    mpx_log_record rec = {
        .time_ns = isfinite(created) ? (int64_t)llround(created * 1e9) : 0,
        .level = (int)int_of(v[F_LEVEL]),
        .line = (int)int_of(v[F_LINE]),
        .logger = s[F_NAME],
        .message = s[F_MSG],
        .func = s[F_FUNC],
        .file = s[F_PATH],
        .process_name = s[F_PNAME],
        .pid = int_of(v[F_PROC]),
        .thread_id = int_of(v[F_THREAD]),
        .thread_name = s[F_TNAME],
        .extra = extra.buf,
        .extra_len = extra.buf ? (size_t)extra.len : 0,
    };
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = mpx_inbox_send_log(self->ib, &rec);
    Py_END_ALLOW_THREADS
    if (err < 0) {
        mpx_py_error(self->st, err);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < F_N; i++) {
        Py_XDECREF(v[i]);
        Py_XDECREF(hold[i]);
    }
    if (extra.buf)
        PyBuffer_Release(&extra);
    return result;
}

/* forward(fallback, nattrs, record) -> True: the hot path of the child's logging handler.
 * Sends a plain record straight away. A record with attributes beyond the standard
 * `nattrs` (extra=... fields, which travel pickled), with exception or stack text (its
 * message needs formatting in Python), or whose send fails (the fallback reports it
 * through the handler's handleError), goes to fallback(record) instead. */
static PyObject *Inbox_forward(InboxObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3)
        return PyErr_Format(PyExc_TypeError, "forward() takes 3 arguments");
    PyObject *fallback = args[0], *record = args[2];
    Py_ssize_t nattrs = PyLong_AsSsize_t(args[1]);
    if ((nattrs == -1 && PyErr_Occurred()) || keys_ready() < 0)
        return NULL;
    PyObject *d = PyObject_GenericGetDict(record, NULL);
    if (!d)
        return NULL;
    Py_ssize_t n = PyDict_Check(d) ? PyDict_GET_SIZE(d) : -1;
    Py_DECREF(d);
    if (n != nattrs)
        return PyObject_CallOneArg(fallback, record);
    static const int extra[] = {K_EXC_INFO, K_EXC_TEXT, K_STACK_INFO};
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        PyObject *v = PyObject_GetAttr(record, keys[extra[i]]);
        if (!v) {
            PyErr_Clear();
            continue;
        }
        int truth = v != Py_None && PyObject_IsTrue(v);
        Py_DECREF(v);
        if (truth)
            return PyObject_CallOneArg(fallback, record);
    }
    PyObject *r = Inbox_send_log(self, &record, 1);
    if (!r) {
        PyErr_Clear();
        return PyObject_CallOneArg(fallback, record);
    }
    Py_DECREF(r);
    Py_RETURN_TRUE;
}

/* send_outcome(token, code, data) */
static PyObject *Inbox_send_outcome(InboxObject *self, PyObject *args)
{
    unsigned long long token;
    unsigned int code;
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "KIy*:send_outcome", &token, &code, &data))
        return NULL;
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = mpx_inbox_send_outcome(self->ib, token, code, data.buf, (size_t)data.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    if (err < 0)
        return mpx_py_error(self->st, err);
    Py_RETURN_NONE;
}

/* ---- receiving ---- */

/* The parts of the logging module a received record is built with, fetched per batch (the
 * parent may change level names or logging may be reloaded). */
typedef struct {
    PyObject *loads;      /* borrowed: pickle.loads, for the extra attributes */
    PyObject *LogRecord;  /* owned */
    PyObject *level_names; /* owned: logging._levelToName */
    double start_time;    /* logging._startTime */
} log_env;

static int log_env_get(log_env *env)
{
    PyObject *logging = PyImport_ImportModule("logging");
    if (!logging)
        return -1;
    PyObject *t = NULL;
    env->LogRecord = PyObject_GetAttrString(logging, "LogRecord");
    env->level_names = PyObject_GetAttrString(logging, "_levelToName");
    t = PyObject_GetAttrString(logging, "_startTime");
    Py_DECREF(logging);
    if (!env->LogRecord || !env->level_names || !t)
        goto fail;
    env->start_time = PyFloat_AsDouble(t);
    Py_DECREF(t);
    if (env->start_time == -1.0 && PyErr_Occurred())
        goto fail;
    return 0;
fail:
    Py_XDECREF(t);
    Py_CLEAR(env->LogRecord);
    Py_CLEAR(env->level_names);
    return -1;
}

/* os.path.basename, and os.path.splitext(basename)[0] (leading dots are not an extension). */
static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static PyObject *module_name(const char *filename)
{
    const char *dot = strrchr(filename, '.');
    const char *p = filename;
    while (*p == '.')
        p++;
    if (!dot || dot < p)
        return PyUnicode_FromString(filename);
    return PyUnicode_FromStringAndSize(filename, dot - filename);
}

static int set_new(PyObject *d, int key, PyObject *v)
{
    if (!v)
        return -1;
    int r = PyDict_SetItem(d, keys[key], v);
    Py_DECREF(v);
    return r;
}

/* Adds the record's extra attributes (a pickled dict) to its __dict__, never replacing a
 * standard field. Extras that cannot be unpickled here are left out: the record itself is
 * worth more than its decorations. */
static void add_extra(const log_env *env, PyObject *d, const mpx_log_record *rec)
{
    PyObject *bytes = PyBytes_FromStringAndSize(rec->extra, (Py_ssize_t)rec->extra_len);
    PyObject *extra = bytes ? PyObject_CallOneArg(env->loads, bytes) : NULL;
    Py_XDECREF(bytes);
    if (extra && PyDict_Check(extra)) {
        PyObject *k, *v;
        Py_ssize_t pos = 0;
        while (PyDict_Next(extra, &pos, &k, &v))
            if (!PyDict_SetDefault(d, k, v))
                break;
    }
    Py_XDECREF(extra);
    PyErr_Clear();
}

/* A logging.LogRecord with the fields of `rec`, as LogRecord.__init__ would have set them in
 * the child: msg is the already formatted message and args is None. */
static PyObject *make_record(const log_env *env, const mpx_log_record *rec)
{
    PyObject *args = PyTuple_New(0);
    if (!args)
        return NULL;
    PyObject *r = PyBaseObject_Type.tp_new((PyTypeObject *)env->LogRecord, args, NULL);
    Py_DECREF(args);
    if (!r)
        return NULL;
    PyObject *d = PyObject_GenericGetDict(r, NULL);
    if (!d)
        goto fail;
    double created = (double)rec->time_ns / 1e9;
    PyObject *levelno = PyLong_FromLong(rec->level);
    if (!levelno)
        goto fail_d;
    PyObject *levelname = PyDict_GetItemWithError(env->level_names, levelno);
    if (levelname)
        Py_INCREF(levelname);
    else if (!PyErr_Occurred())
        levelname = PyUnicode_FromFormat("Level %d", rec->level);
    const char *filename = base_name(rec->file);
    int bad = set_new(d, K_LEVELNO, levelno) < 0 || set_new(d, K_LEVELNAME, levelname) < 0 ||
              set_new(d, K_NAME, PyUnicode_FromString(rec->logger)) < 0 ||
              set_new(d, K_MSG, PyUnicode_FromString(rec->message)) < 0 ||
              PyDict_SetItem(d, keys[K_ARGS], Py_None) < 0 ||
              set_new(d, K_PATHNAME, PyUnicode_FromString(rec->file)) < 0 ||
              set_new(d, K_FILENAME, PyUnicode_FromString(filename)) < 0 ||
              set_new(d, K_MODULE, module_name(filename)) < 0 ||
              PyDict_SetItem(d, keys[K_EXC_INFO], Py_None) < 0 ||
              PyDict_SetItem(d, keys[K_EXC_TEXT], Py_None) < 0 ||
              PyDict_SetItem(d, keys[K_STACK_INFO], Py_None) < 0 ||
              set_new(d, K_LINENO, PyLong_FromLong(rec->line)) < 0 ||
              set_new(d, K_FUNCNAME, PyUnicode_FromString(rec->func)) < 0 ||
              set_new(d, K_CREATED, PyFloat_FromDouble(created)) < 0 ||
              set_new(d, K_MSECS,
                      PyFloat_FromDouble((double)(long long)((created - (double)(long long)created) *
                                                             1000))) < 0 ||
              set_new(d, K_RELATIVECREATED,
                      PyFloat_FromDouble((created - env->start_time) * 1000)) < 0 ||
              set_new(d, K_THREAD, PyLong_FromLongLong(rec->thread_id)) < 0 ||
              set_new(d, K_THREADNAME, PyUnicode_FromString(rec->thread_name)) < 0 ||
              set_new(d, K_PROCESSNAME, PyUnicode_FromString(rec->process_name)) < 0 ||
              set_new(d, K_PROCESS, PyLong_FromLongLong(rec->pid)) < 0 ||
              PyDict_SetItem(d, keys[K_TASKNAME], Py_None) < 0;
    if (!bad && rec->extra_len)
        add_extra(env, d, rec);
    Py_DECREF(d);
    if (bad)
        goto fail;
    return r;
fail_d:
    Py_DECREF(d);
fail:
    Py_DECREF(r);
    return NULL;
}

#define RECV_BATCH 256

struct recv_call {
    mpx_inbox *ib;
    mpx_inbox_msg *msgs;
    size_t got;
};

static int recv_fn(void *ctx, mpx_deadline_t deadline)
{
    struct recv_call *c = ctx;
    return mpx_inbox_recv(c->ib, c->msgs, RECV_BATCH, &c->got, deadline);
}

/* recv(timeout=None): a list of what arrived, in order (at least one item unless the
 * timeout passed, then an empty list): logging.LogRecord objects, (token, code, bytes)
 * for an outcome, and (token, None, None) for a child that ended without one. */
static PyObject *Inbox_recv(InboxObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *a[1] = {NULL};
    mpx_deadline_t deadline = MPX_FOREVER;
    if (mpx_py_parse("recv", args, nargs, kwnames, names, 0, 1, a) < 0 ||
        (a[0] && mpx_py_deadline(a[0], &deadline) < 0) || keys_ready() < 0)
        return NULL;
    mpx_inbox_msg msgs[RECV_BATCH];
    struct recv_call c = {self->ib, msgs, 0};
    int err = mpx_py_wait_sliced(recv_fn, &c, deadline);
    if (err == MPX_PY_RAISED)
        return NULL;
    if (err == -ETIMEDOUT || err == -EAGAIN)
        return PyList_New(0);
    if (err < 0)
        return mpx_py_error(self->st, err);
    PyObject *list = PyList_New((Py_ssize_t)c.got);
    log_env env = {NULL, NULL, NULL, 0};
    if (!list)
        goto done;
    for (size_t i = 0; i < c.got; i++) {
        mpx_inbox_msg *m = &msgs[i];
        PyObject *item;
        if (m->type == MPX_INBOX_LOG) {
            if (!env.LogRecord && log_env_get(&env) < 0)
                goto fail;
            env.loads = self->st->loads;
            item = make_record(&env, m->record);
        } else if (m->type == MPX_INBOX_OUTCOME) {
            item = Py_BuildValue("(KIy#)", (unsigned long long)m->token, (unsigned)m->code,
                                 m->data ? (const char *)m->data : "", (Py_ssize_t)m->len);
        } else {
            item = Py_BuildValue("(KOO)", (unsigned long long)m->token, Py_None, Py_None);
        }
        if (!item)
            goto fail;
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    goto done;
fail:
    Py_CLEAR(list);
done:
    Py_XDECREF(env.LogRecord);
    Py_XDECREF(env.level_names);
    for (size_t i = 0; i < c.got; i++)
        mpx_inbox_msg_done(&msgs[i]);
    return list;
}

/* ---- completion ---- */

static PyObject *token_call(InboxObject *self, PyObject *arg, int (*fn)(mpx_inbox *, uint64_t))
{
    unsigned long long token = PyLong_AsUnsignedLongLong(arg);
    if (token == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    int r = fn(self->ib, token);
    if (r < 0)
        return mpx_py_error(self->st, r);
    return PyLong_FromLong(r);
}

static PyObject *Inbox_expect(InboxObject *self, PyObject *arg)
{
    return token_call(self, arg, mpx_inbox_expect);
}

static PyObject *Inbox_complete(InboxObject *self, PyObject *arg)
{
    return token_call(self, arg, mpx_inbox_complete);
}

static PyObject *Inbox_is_complete(InboxObject *self, PyObject *arg)
{
    PyObject *r = token_call(self, arg, mpx_inbox_is_complete);
    if (!r)
        return NULL;
    int v = PyObject_IsTrue(r);
    Py_DECREF(r);
    return PyBool_FromLong(v);
}

static PyObject *Inbox_forget(InboxObject *self, PyObject *arg)
{
    unsigned long long token = PyLong_AsUnsignedLongLong(arg);
    if (token == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    mpx_inbox_forget(self->ib, token); /* forgetting an unknown token is harmless */
    Py_RETURN_NONE;
}

struct flush_call {
    mpx_inbox *ib;
    uint64_t token;
};

static int flush_fn(void *ctx, mpx_deadline_t deadline)
{
    struct flush_call *c = ctx;
    return mpx_inbox_flush(c->ib, c->token, deadline);
}

/* flush(token, timeout=None) -> bool: True once the child's stream is complete. */
static PyObject *Inbox_flush(InboxObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    static const char *const names[] = {"token", "timeout"};
    PyObject *a[2] = {NULL, NULL};
    mpx_deadline_t deadline = MPX_FOREVER;
    if (mpx_py_parse("flush", args, nargs, kwnames, names, 1, 2, a) < 0 ||
        (a[1] && mpx_py_deadline(a[1], &deadline) < 0))
        return NULL;
    struct flush_call c = {self->ib, PyLong_AsUnsignedLongLong(a[0])};
    if (c.token == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    int err = mpx_py_wait_sliced(flush_fn, &c, deadline);
    if (err == MPX_PY_RAISED)
        return NULL;
    if (err == -ETIMEDOUT)
        Py_RETURN_FALSE;
    if (err < 0)
        return mpx_py_error(self->st, err);
    Py_RETURN_TRUE;
}

struct wait_call {
    mpx_inbox *ib;
    uint64_t token;
    int fd;
};

static int wait_fn(void *ctx, mpx_deadline_t deadline)
{
    struct wait_call *c = ctx;
    return mpx_inbox_wait(c->ib, c->token, c->fd, deadline);
}

/* wait(token, fd=-1, timeout=None) -> True (complete), False (fd ready first), None
 * (timeout). */
static PyObject *Inbox_wait(InboxObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    static const char *const names[] = {"token", "fd", "timeout"};
    PyObject *a[3] = {NULL, NULL, NULL};
    mpx_deadline_t deadline = MPX_FOREVER;
    if (mpx_py_parse("wait", args, nargs, kwnames, names, 1, 3, a) < 0 ||
        (a[2] && mpx_py_deadline(a[2], &deadline) < 0))
        return NULL;
    struct wait_call c = {self->ib, PyLong_AsUnsignedLongLong(a[0]), -1};
    if (c.token == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (a[1] && (c.fd = as_int(a[1])) == -1 && PyErr_Occurred())
        return NULL;
    int r = mpx_py_wait_sliced(wait_fn, &c, deadline);
    if (r == MPX_PY_RAISED)
        return NULL;
    if (r == -ETIMEDOUT)
        Py_RETURN_NONE;
    if (r < 0)
        return mpx_py_error(self->st, r);
    return PyBool_FromLong(r);
}

static PyMethodDef Inbox_methods[] = {
    {"fileno", (PyCFunction)Inbox_fileno, METH_NOARGS,
     "fileno()\n--\n\nThe inbox's segment descriptor (owned by the inbox)."},
    {"send_log", (PyCFunction)(void (*)(void))Inbox_send_log, METH_FASTCALL,
     "send_log(record, message=None, extra=None)\n--\n\nSend a logging.LogRecord; "
     "`message` replaces record.getMessage(), `extra` (bytes) travels along."},
    {"forward", (PyCFunction)(void (*)(void))Inbox_forward, METH_FASTCALL,
     "forward(fallback, nattrs, record)\n--\n\nSend a plain record (nattrs attributes); "
     "hand one with extra attributes, exception or stack text, or one whose send failed, "
     "to fallback(record). Returns True."},
    {"send_outcome", (PyCFunction)Inbox_send_outcome, METH_VARARGS,
     "send_outcome(token, code, data)\n--\n\nSend a child's outcome: its last message."},
    {"recv", (PyCFunction)(void (*)(void))Inbox_recv, METH_FASTCALL | METH_KEYWORDS,
     "recv(timeout=None)\n--\n\nReceive a batch: LogRecord objects, (token, code, bytes) "
     "outcomes and (token, None, None) for a child that ended without one. An empty list "
     "when the timeout passed."},
    {"expect", (PyCFunction)Inbox_expect, METH_O,
     "expect(token)\n--\n\nRegister a child whose stream is not yet complete."},
    {"complete", (PyCFunction)Inbox_complete, METH_O,
     "complete(token)\n--\n\nMark the child's stream complete and wake flush() callers."},
    {"is_complete", (PyCFunction)Inbox_is_complete, METH_O,
     "is_complete(token)\n--\n\nWhether the child's stream is complete."},
    {"flush", (PyCFunction)(void (*)(void))Inbox_flush, METH_FASTCALL | METH_KEYWORDS,
     "flush(token, timeout=None)\n--\n\nFor a child that has ended: wait until its stream "
     "is complete (putting a marker behind its messages if needed). False on timeout."},
    {"wait", (PyCFunction)(void (*)(void))Inbox_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait(token, fd=-1, timeout=None)\n--\n\nWait until the child's stream is complete "
     "(True) or fd is readable first (False); None on timeout. Puts no marker."},
    {"forget", (PyCFunction)Inbox_forget, METH_O,
     "forget(token)\n--\n\nRemove the child from the completion table."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot Inbox_slots[] = {
    {Py_tp_new, Inbox_new},
    {Py_tp_dealloc, Inbox_dealloc},
    {Py_tp_methods, Inbox_methods},
    {Py_tp_doc, "Inbox(fd=-1): a parent's inbox of its children's log records and outcomes "
                "(a new one, or attached to the segment open as fd)."},
    {0, NULL},
};

static PyType_Spec Inbox_spec = {
    .name = "mpservice._mpx.Inbox",
    .basicsize = sizeof(InboxObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = Inbox_slots,
};

/* ---------------------------------------------------------------------------------------
 * Child
 */

typedef struct {
    PyObject_HEAD
    mpx_child *c;  /* owned */
    mpx_state *st; /* borrowed */
} ChildObject;

static PyObject *Child_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"pid", "poll", NULL};
    int pid, poll = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|p:Child", kwlist, &pid, &poll))
        return NULL;
    ChildObject *self = (ChildObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    if (!(self->st = state_of((PyObject *)self))) {
        Py_DECREF(self);
        return NULL;
    }
    int r = mpx_child_open(&self->c, pid, poll ? MPX_CHILD_POLL : 0);
    if (r < 0) {
        mpx_py_error(self->st, r);
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void Child_dealloc(ChildObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    mpx_child_destroy(self->c);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *Child_fileno(ChildObject *self, PyObject *unused)
{
    int fd = mpx_child_fd(self->c);
    if (fd < 0)
        return mpx_py_error(self->st, fd);
    return PyLong_FromLong(fd);
}

static PyObject *Child_done(ChildObject *self, PyObject *unused)
{
    int r = mpx_child_done(self->c);
    if (r < 0)
        return mpx_py_error(self->st, r);
    return PyBool_FromLong(r);
}

struct child_wait {
    mpx_child *c;
    mpx_exit_status status;
};

static int child_wait_fn(void *ctx, mpx_deadline_t deadline)
{
    struct child_wait *w = ctx;
    return mpx_child_wait(w->c, deadline, &w->status, 0);
}

/* The stdlib's returncode: the exit status, or minus the signal. */
static int returncode(const mpx_exit_status *s)
{
    return s->exited ? s->code : -s->signal;
}

/* wait(timeout=None) -> returncode or None: waits for the end and reaps. */
static PyObject *Child_wait(ChildObject *self, PyObject *const *args, Py_ssize_t nargs,
                            PyObject *kwnames)
{
    static const char *const names[] = {"timeout"};
    PyObject *a[1] = {NULL};
    mpx_deadline_t deadline = MPX_FOREVER;
    if (mpx_py_parse("wait", args, nargs, kwnames, names, 0, 1, a) < 0 ||
        (a[0] && mpx_py_deadline(a[0], &deadline) < 0))
        return NULL;
    struct child_wait w = {self->c, {0}};
    int err = mpx_py_wait_sliced(child_wait_fn, &w, deadline);
    if (err == MPX_PY_RAISED)
        return NULL;
    if (err == -ETIMEDOUT || err == -EAGAIN)
        Py_RETURN_NONE;
    if (err < 0)
        return mpx_py_error(self->st, err);
    return PyLong_FromLong(returncode(&w.status));
}

/* signal(sig) -> bool: False when the child has already ended. */
static PyObject *Child_signal(ChildObject *self, PyObject *arg)
{
    int sig = as_int(arg);
    if (sig == -1 && PyErr_Occurred())
        return NULL;
    int r = mpx_child_signal(self->c, sig);
    if (r == -ESRCH)
        Py_RETURN_FALSE;
    if (r < 0)
        return mpx_py_error(self->st, r);
    Py_RETURN_TRUE;
}

static PyObject *Child_get_pid(ChildObject *self, void *unused)
{
    return PyLong_FromLong(mpx_child_pid(self->c));
}

static PyMethodDef Child_methods[] = {
    {"fileno", (PyCFunction)Child_fileno, METH_NOARGS,
     "fileno()\n--\n\nThe pidfd (readable once the child ended); Error for a polling handle."},
    {"done", (PyCFunction)Child_done, METH_NOARGS,
     "done()\n--\n\nWhether the child has ended (reaped or not)."},
    {"wait", (PyCFunction)(void (*)(void))Child_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait(timeout=None)\n--\n\nWait for the end and reap; the returncode (exit status, or "
     "minus the signal), or None on timeout."},
    {"signal", (PyCFunction)Child_signal, METH_O,
     "signal(sig)\n--\n\nSend a signal; False when the child has already ended."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Child_getset[] = {
    {"pid", (getter)Child_get_pid, NULL, "The child's pid.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Child_slots[] = {
    {Py_tp_new, Child_new},
    {Py_tp_dealloc, Child_dealloc},
    {Py_tp_methods, Child_methods},
    {Py_tp_getset, Child_getset},
    {Py_tp_doc, "Child(pid, poll=False): supervision of a child process by pidfd."},
    {0, NULL},
};

static PyType_Spec Child_spec = {
    .name = "mpservice._mpx.Child",
    .basicsize = sizeof(ChildObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = Child_slots,
};

/* ---------------------------------------------------------------------------------------
 * Functions
 */

struct fds_call {
    const int *fds;
    size_t n;
    unsigned char *ready;
};

static int fds_fn(void *ctx, mpx_deadline_t deadline)
{
    struct fds_call *c = ctx;
    return mpx_wait_fds(c->fds, c->n, deadline, c->ready);
}

/* wait_fds(fds, timeout=None) -> list of the indexes of readable descriptors ([] on
 * timeout). */
static PyObject *wait_fds(PyObject *m, PyObject *const *args, Py_ssize_t nargs,
                          PyObject *kwnames)
{
    static const char *const names[] = {"fds", "timeout"};
    PyObject *a[2] = {NULL, NULL};
    mpx_deadline_t deadline = MPX_FOREVER;
    if (mpx_py_parse("wait_fds", args, nargs, kwnames, names, 1, 2, a) < 0 ||
        (a[1] && mpx_py_deadline(a[1], &deadline) < 0))
        return NULL;
    PyObject *seq = PySequence_Fast(a[0], "wait_fds() needs a sequence of descriptors");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject *result = NULL;
    int *fds = PyMem_Malloc((size_t)(n ? n : 1) * sizeof *fds);
    unsigned char *ready = PyMem_Malloc((size_t)(n ? n : 1));
    if (!fds || !ready) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        fds[i] = as_int(PySequence_Fast_GET_ITEM(seq, i));
        if (fds[i] == -1 && PyErr_Occurred())
            goto done;
    }
    struct fds_call c = {fds, (size_t)n, ready};
    int err = mpx_py_wait_sliced(fds_fn, &c, deadline);
    if (err == MPX_PY_RAISED)
        goto done;
    if (err == -ETIMEDOUT) {
        result = PyList_New(0);
        goto done;
    }
    if (err < 0) {
        mpx_py_error(PyModule_GetState(m), err);
        goto done;
    }
    if (!(result = PyList_New(0)))
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!ready[i])
            continue;
        PyObject *idx = PyLong_FromSsize_t(i);
        if (!idx || PyList_Append(result, idx) < 0) {
            Py_XDECREF(idx);
            Py_CLEAR(result);
            goto done;
        }
        Py_DECREF(idx);
    }
done:
    PyMem_Free(fds);
    PyMem_Free(ready);
    Py_DECREF(seq);
    return result;
}

/* describe_exit(returncode) -> "exited with status 3" / "killed by SIGKILL" ... */
static PyObject *describe_exit(PyObject *m, PyObject *arg)
{
    int rc = as_int(arg);
    if (rc == -1 && PyErr_Occurred())
        return NULL;
    mpx_exit_status s = rc >= 0 ? (mpx_exit_status){.exited = 1, .code = rc}
                                : (mpx_exit_status){.exited = 0, .signal = -rc};
    char buf[128];
    int r = mpx_exit_describe(&s, buf, sizeof buf);
    if (r < 0)
        return mpx_py_error(PyModule_GetState(m), r);
    return PyUnicode_FromString(buf);
}

/* async_raise(thread_ident, exc) -> int: PyThreadState_SetAsyncExc. */
static PyObject *async_raise(PyObject *m, PyObject *args)
{
    unsigned long ident;
    PyObject *exc;
    if (!PyArg_ParseTuple(args, "kO:async_raise", &ident, &exc))
        return NULL;
    return PyLong_FromLong(PyThreadState_SetAsyncExc(ident, exc == Py_None ? NULL : exc));
}

static PyMethodDef proc_functions[] = {
    {"wait_fds", (PyCFunction)(void (*)(void))wait_fds, METH_FASTCALL | METH_KEYWORDS,
     "wait_fds(fds, timeout=None)\n--\n\nWait until at least one descriptor is readable; "
     "the list of the readable ones' indexes, [] on timeout."},
    {"describe_exit", describe_exit, METH_O,
     "describe_exit(returncode)\n--\n\nHow a process ended, in words."},
    {"async_raise", async_raise, METH_VARARGS,
     "async_raise(thread_ident, exc)\n--\n\nRaise exc asynchronously in a thread; the "
     "number of threads affected."},
    {NULL, NULL, 0, NULL},
};

int mpx_proc_types_init(PyObject *module, mpx_state *st)
{
    st->InboxType = PyType_FromModuleAndSpec(module, &Inbox_spec, NULL);
    if (!st->InboxType || PyModule_AddObjectRef(module, "Inbox", st->InboxType) < 0)
        return -1;
    st->ChildType = PyType_FromModuleAndSpec(module, &Child_spec, NULL);
    if (!st->ChildType || PyModule_AddObjectRef(module, "Child", st->ChildType) < 0)
        return -1;
    return PyModule_AddFunctions(module, proc_functions);
}
