/* _mpx.Queue: the binding of mpx_queue, the base of the Python queue classes.
 *
 * Messages are frames (<mpx/frame.h>): a pickle stream plus its out-of-band buffers (pickle
 * protocol 5), or the raw payload of a bytes object. Pickling happens in the caller's
 * thread, before anything is enqueued, so an unpicklable object raises in put().
 *
 * The GIL and the queue's shared lock: the queue lock is only ever *waited for* with the GIL
 * released. With the GIL held we only try it (MPX_QUEUE_TRYLOCK). A thread that holds the
 * queue lock therefore never waits for the GIL, and a thread that holds the GIL never waits
 * for the queue lock: no deadlock between the two. Holding both lets get() build its bytes
 * objects directly from the shared ring, with a single copy.
 */
#include <errno.h>
#include <string.h>

#include "fastpickle.h"
#include "mpxmodule.h"

/* Raises queue.Empty / queue.Full (imported on first use). */
static void mpx_py_raise_queue_exc(mpx_state *st, int full)
{
    PyObject *exc = mpx_py_queue_exc(st, full);
    if (exc)
        PyErr_SetNone(exc);
}

/* Whether the pending exception is queue.Empty (which is loaded once it was raised). */
static int exc_is_empty(mpx_state *st)
{
    return st->Empty && PyErr_ExceptionMatches(st->Empty);
}

/* Messages up to this size are put while holding the GIL; larger ones are copied with the
 * GIL released so other threads run during the copy. */
#define SMALL_MESSAGE (64 * 1024)
#define INLINE_PARTS 4

typedef struct {
    PyObject_HEAD
    mpx_queue *q;      /* owned; NULL until _create() or _attach() */
    mpx_state *st;     /* borrowed; the module outlives its types' instances */
    int closed;        /* close() was called in this process */
    int closed_style;  /* 0: ValueError "Queue <repr> is closed"; 1: OSError "handle is closed" */
    PyObject *pending; /* owned list of received items not yet returned (see get_many), or NULL */
} QueueObject;

/* ---------------------------------------------------------------------------------------
 * State checks and errors
 */

static int check_init(QueueObject *self)
{
    if (self->q)
        return 0;
    PyErr_SetString(PyExc_ValueError, "queue is not initialized");
    return -1;
}

/* The stdlib's error for a closed Queue; also used when a C program closed the queue for
 * everyone (mpx_queue_close). Returns -1. */
static int raise_closed(QueueObject *self)
{
    PyErr_Format(PyExc_ValueError, "Queue %R is closed", (PyObject *)self);
    return -1;
}

static int check_open(QueueObject *self)
{
    if (check_init(self) < 0)
        return -1;
    if (!self->closed)
        return 0;
    if (self->closed_style == 1)
        PyErr_SetString(PyExc_OSError, "handle is closed");
    else
        raise_closed(self);
    return -1;
}

/* ---------------------------------------------------------------------------------------
 * Encoding: object -> frame
 */

typedef struct {
    PyObject *main;     /* owned: the pickle (bytes) or the bytes object itself */
    Py_ssize_t nbufs;   /* out-of-band buffers */
    Py_buffer *views;   /* owned array of nbufs acquired views (inline or PyMem) */
    mpx_frame_part *parts;
    unsigned char *hdr;
    struct iovec *iov;
    int iovcnt;
    size_t total;
    Py_buffer views_inline[INLINE_PARTS];
    mpx_frame_part parts_inline[INLINE_PARTS + 1];
    struct iovec iov_inline[2 * (INLINE_PARTS + 1)];
    uint64_t hdr_inline[(16 + 9 * (INLINE_PARTS + 1) + 8) / 8 + 1];
} encoded;

static void encoded_done(encoded *e)
{
    for (Py_ssize_t i = 0; i < e->nbufs; i++)
        PyBuffer_Release(&e->views[i]);
    if (e->views != e->views_inline)
        PyMem_Free(e->views);
    if (e->parts != e->parts_inline)
        PyMem_Free(e->parts);
    if (e->iov != e->iov_inline)
        PyMem_Free(e->iov);
    if (e->hdr != (unsigned char *)e->hdr_inline)
        PyMem_Free(e->hdr);
    Py_CLEAR(e->main);
    e->nbufs = 0;
}

/* pickle.dumps(obj, 5, buffer_callback=bufs.append); on failure, the ForkingPickler
 * fallback registered by the Python package (for objects that only multiprocessing's own
 * reducers know how to pickle). Returns a new reference or NULL. */
static PyObject *pickle_obj(mpx_state *st, PyObject *obj, PyObject *append)
{
    PyObject *args[3] = {obj, st->protocol, append};
    PyObject *data = PyObject_Vectorcall(st->dumps, args, 2, st->kw_buffer_callback);
    if (data || !st->fallback_dumps)
        return data;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyObject *fargs[2] = {obj, append};
    data = PyObject_Vectorcall(st->fallback_dumps, fargs, 2, NULL);
    if (data) {
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        return data;
    }
    PyErr_Clear();
    PyErr_Restore(et, ev, tb); /* the first error is the meaningful one */
    return NULL;
}

static int encode(mpx_state *st, PyObject *obj, encoded *e)
{
    memset(e, 0, offsetof(encoded, views_inline));
    e->views = e->views_inline;
    e->parts = e->parts_inline;
    e->iov = e->iov_inline;
    e->hdr = (unsigned char *)e->hdr_inline;
    unsigned kind;
    PyObject *bufs = NULL;

    if (PyBytes_CheckExact(obj)) {
        /* The payload itself is the message: no pickling, one copy in, one copy out. */
        kind = MPX_FRAME_BYTES;
        e->main = Py_NewRef(obj);
    } else if ((e->main = mpx_fastpickle_dumps(obj)) != NULL) {
        /* Small plain objects: a pickle stream written directly, without pickle's
         * per-call set-up. Such objects never have out-of-band buffers. */
        kind = MPX_FRAME_PICKLE;
    } else if (PyErr_Occurred()) {
        return -1;
    } else {
        kind = MPX_FRAME_PICKLE;
        if (!(bufs = PyList_New(0)))
            return -1;
        PyObject *append = PyObject_GetAttrString(bufs, "append");
        if (!append)
            goto fail;
        e->main = pickle_obj(st, obj, append);
        Py_DECREF(append);
        if (!e->main)
            goto fail;
        e->nbufs = PyList_GET_SIZE(bufs);
    }
    Py_ssize_t nparts = e->nbufs + 1;
    if (nparts > MPX_FRAME_MAX_PARTS) {
        PyErr_SetString(PyExc_ValueError, "too many out-of-band buffers in one object");
        e->nbufs = 0;
        goto fail;
    }
    if (nparts > INLINE_PARTS + 1) {
        e->views = PyMem_Calloc((size_t)e->nbufs, sizeof(Py_buffer));
        e->parts = PyMem_Calloc((size_t)nparts, sizeof(mpx_frame_part));
        e->iov = PyMem_Calloc(mpx_frame_iov_count((size_t)nparts), sizeof(struct iovec));
        e->hdr = PyMem_Malloc(mpx_frame_header_size((size_t)nparts));
        if (!e->views || !e->parts || !e->iov || !e->hdr) {
            if (!e->views)
                e->views = e->views_inline;
            e->nbufs = 0;
            PyErr_NoMemory();
            goto fail;
        }
    }
    Py_buffer mv;
    if (PyObject_GetBuffer(e->main, &mv, PyBUF_SIMPLE) < 0) {
        e->nbufs = 0;
        goto fail;
    }
    /* bytes and the pickle result own their memory; the view only tells where it is. */
    e->parts[0] = (mpx_frame_part){mv.buf, (size_t)mv.len, 0};
    PyBuffer_Release(&mv);
    Py_ssize_t got = 0;
    for (; got < e->nbufs; got++) {
        PyObject *pb = PyList_GET_ITEM(bufs, got);
        if (PyObject_GetBuffer(pb, &e->views[got], PyBUF_FULL_RO) < 0)
            break;
        Py_buffer *v = &e->views[got];
        if (!PyBuffer_IsContiguous(v, 'A')) {
            PyBuffer_Release(v);
            PyErr_SetString(PyExc_BufferError, "non-contiguous out-of-band buffer");
            break;
        }
        e->parts[got + 1] = (mpx_frame_part){v->buf, (size_t)v->len,
                                             v->readonly ? MPX_FRAME_READONLY : 0};
    }
    if (got < e->nbufs) {
        e->nbufs = got;
        goto fail;
    }
    Py_CLEAR(bufs);
    int n = mpx_frame_build(e->hdr, kind, e->parts, (size_t)nparts, e->iov);
    if (n < 0) {
        mpx_py_error(st, n);
        goto fail;
    }
    e->iovcnt = n;
    e->total = 0;
    for (int i = 0; i < n; i++)
        e->total += e->iov[i].iov_len;
    return 0;
fail:
    Py_XDECREF(bufs);
    encoded_done(e);
    return -1;
}

/* ---------------------------------------------------------------------------------------
 * Decoding: frame -> (main, buffers), with the GIL and the queue lock held
 */

typedef struct {
    mpx_state *st;
    PyObject *items; /* owned list of decoded items: bytes, or (pickle, buffers) tuples */
    int err;         /* a frame that could not be decoded */
} decoder;

/* Out-of-band buffers this large are rebuilt in an _mpx.Buffer (see buffer.c). */
#define LARGE_BUFFER (1u << 20)

static PyObject *copy_part(mpx_state *st, const mpx_frame_part *p, int as_bytes)
{
    if (p->len < LARGE_BUFFER)
        return as_bytes ? PyBytes_FromStringAndSize(p->data, (Py_ssize_t)p->len)
                        : PyByteArray_FromStringAndSize(p->data, (Py_ssize_t)p->len);
    if (!as_bytes)
        return mpx_buffer_from(st, p->data, p->len);
    /* A large message is consumed without the queue lock (libmpx claims it), so the copy
     * can also run without the GIL. */
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)p->len);
    if (b) {
        char *dst = PyBytes_AS_STRING(b);
        Py_BEGIN_ALLOW_THREADS
        memcpy(dst, p->data, p->len);
        Py_END_ALLOW_THREADS
    }
    return b;
}

static int consume(void *ctx, const void *msg, size_t len)
{
    decoder *d = ctx;
    unsigned kind;
    size_t nparts;
    PyObject *item = NULL;
    int r = mpx_frame_peek(msg, len, &kind, &nparts);
    if (r < 0) {
        uint32_t magic = 0;
        if (len >= 4)
            memcpy(&magic, msg, 4);
        if (magic == MPX_FRAME_MAGIC) {
            d->err = r; /* a damaged frame: consume it and report */
            return 0;
        }
        /* Not a frame: a message put by a C program. It arrives as bytes. */
        item = PyBytes_FromStringAndSize(msg, (Py_ssize_t)len);
    } else if (kind == MPX_FRAME_BYTES) {
        mpx_frame_part p;
        if ((r = mpx_frame_parse(msg, len, &p, 1)) < 0) {
            d->err = r;
            return 0;
        }
        item = copy_part(d->st, &p, 1);
    } else {
        mpx_frame_part inl[INLINE_PARTS + 1], *parts = inl;
        if (nparts > INLINE_PARTS + 1 && !(parts = PyMem_Calloc(nparts, sizeof *parts)))
            return -ENOMEM;
        if ((r = mpx_frame_parse(msg, len, parts, nparts)) < 0) {
            if (parts != inl)
                PyMem_Free(parts);
            d->err = r;
            return 0;
        }
        PyObject *main = copy_part(d->st, &parts[0], 1);
        PyObject *bufs = nparts > 1 ? PyTuple_New((Py_ssize_t)nparts - 1) : Py_NewRef(Py_None);
        if (main && bufs) {
            size_t i;
            for (i = 1; i < nparts; i++) {
                PyObject *b = copy_part(d->st, &parts[i], parts[i].flags & MPX_FRAME_READONLY);
                if (!b)
                    break;
                PyTuple_SET_ITEM(bufs, (Py_ssize_t)i - 1, b);
            }
            if (i == nparts)
                item = PyTuple_Pack(2, main, bufs);
        }
        Py_XDECREF(main);
        Py_XDECREF(bufs);
        if (parts != inl)
            PyMem_Free(parts);
    }
    if (!item || PyList_Append(d->items, item) < 0) {
        Py_XDECREF(item);
        PyErr_Clear(); /* reported as -ENOMEM: the message stays in the queue */
        return -ENOMEM;
    }
    Py_DECREF(item);
    return 0;
}

/* Turns a decoded item into the object that was put. Runs with no queue lock held, since
 * unpickling runs arbitrary code. */
static PyObject *rebuild(mpx_state *st, PyObject *item)
{
    if (PyBytes_CheckExact(item))
        return Py_NewRef(item);
    PyObject *main = PyTuple_GET_ITEM(item, 0), *bufs = PyTuple_GET_ITEM(item, 1);
    if (bufs == Py_None) {
        PyObject *obj = mpx_fastpickle_loads(PyBytes_AS_STRING(main), PyBytes_GET_SIZE(main));
        if (obj || PyErr_Occurred())
            return obj;
        return PyObject_CallOneArg(st->loads, main);
    }
    PyObject *args[2] = {main, bufs};
    return PyObject_Vectorcall(st->loads, args, 1, st->kw_buffers);
}

/* ---------------------------------------------------------------------------------------
 * The blocking loops
 */

/* Runs one libmpx wait with the GIL released. On -EINTR runs the signal handlers; returns
 * -1 with an exception set if one raised (Ctrl-C), else the libmpx result. */
static int wait_released(mpx_queue *q, enum mpx_queue_event ev, uint64_t n, mpx_deadline_t dl)
{
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = mpx_queue_wait(q, ev, n, dl);
    Py_END_ALLOW_THREADS
    if (r == -EINTR && PyErr_CheckSignals() < 0)
        return -1;
    return r;
}

/* Fetches up to `max` decoded items into d->items. */
static int fetch(QueueObject *self, size_t max, int block, mpx_deadline_t deadline, decoder *d)
{
    mpx_state *st = self->st;
    for (;;) {
        size_t got;
        Py_ssize_t before = PyList_GET_SIZE(d->items);
        int r = mpx_queue_get_many_with(self->q, max, consume, d, &got, MPX_QUEUE_TRYLOCK,
                                        MPX_NOWAIT);
        if (r == -ECANCELED) {
            /* The message was given back to the queue meanwhile: drop our copy, retry. */
            if (PyList_SetSlice(d->items, before, PyList_GET_SIZE(d->items), NULL) < 0)
                return -1;
            continue;
        }
        if (r == 0) {
            if (d->err) {
                mpx_py_error(st, d->err);
                return -1;
            }
            return 0;
        }
        if (r == -EBUSY) {
            r = wait_released(self->q, MPX_QUEUE_LOCKABLE, 0, block ? deadline : MPX_FOREVER);
        } else if (r == -EAGAIN) {
            if (!block) {
                mpx_py_raise_queue_exc(st, 0);
                return -1;
            }
            r = wait_released(self->q, MPX_QUEUE_NONEMPTY, 1, deadline);
        } else if (r == MPX_ECLOSED) {
            return raise_closed(self);
        } else {
            mpx_py_error(st, r);
            return -1;
        }
        if (r == -1)
            return -1;
        if (r == -ETIMEDOUT || r == -EAGAIN) {
            mpx_py_raise_queue_exc(st, 0);
            return -1;
        }
        if (r < 0 && r != -EINTR) {
            mpx_py_error(st, r);
            return -1;
        }
    }
}

/* Puts n encoded messages. */
static int send_msgs(QueueObject *self, mpx_msgv *msgs, size_t n, size_t total, int block,
                     mpx_deadline_t deadline)
{
    mpx_state *st = self->st;
    int r = -EBUSY;
    if (total <= SMALL_MESSAGE) {
        r = mpx_queue_put_many_ex(self->q, msgs, n, MPX_QUEUE_TRYLOCK, MPX_NOWAIT);
        if (r == 0)
            return 0;
        if (r == -EAGAIN && !block) {
            mpx_py_raise_queue_exc(st, 1);
            return -1;
        }
    }
    if (r == -EBUSY || r == -EAGAIN) {
        for (;;) {
            Py_BEGIN_ALLOW_THREADS
            r = mpx_queue_put_many_ex(self->q, msgs, n, 0, block ? deadline : MPX_NOWAIT);
            Py_END_ALLOW_THREADS
            if (r != -EINTR)
                break;
            if (PyErr_CheckSignals() < 0)
                return -1;
        }
    }
    if (r == 0)
        return 0;
    if (r == -EAGAIN || r == -ETIMEDOUT)
        mpx_py_raise_queue_exc(st, 1);
    else if (r == MPX_ECLOSED)
        raise_closed(self);
    else
        mpx_py_error(st, r);
    return -1;
}

/* ---------------------------------------------------------------------------------------
 * Methods
 */

static int parse_block_timeout(PyObject *block_o, PyObject *timeout_o, int *block,
                               mpx_deadline_t *dl)
{
    *block = block_o ? PyObject_IsTrue(block_o) : 1;
    if (*block < 0)
        return -1;
    *dl = MPX_FOREVER;
    /* Like the stdlib's semaphores, the timeout is checked even when not blocking. */
    if (timeout_o && mpx_py_deadline(timeout_o, dl) < 0)
        return -1;
    if (!*block)
        *dl = MPX_NOWAIT;
    return 0;
}

static PyObject *put_one(QueueObject *self, PyObject *obj, int block, mpx_deadline_t dl)
{
    encoded e;
    if (encode(self->st, obj, &e) < 0)
        return NULL;
    mpx_msgv m = {e.iov, e.iovcnt};
    int r = send_msgs(self, &m, 1, e.total, block, dl);
    encoded_done(&e);
    if (r < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Queue_put(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"obj", "block", "timeout"};
    PyObject *a[3] = {NULL, NULL, NULL};
    int block;
    mpx_deadline_t dl;
    if (mpx_py_parse("put", args, nargs, kwnames, names, 1, 3, a) < 0 || check_open(self) < 0 ||
        parse_block_timeout(a[1], a[2], &block, &dl) < 0)
        return NULL;
    return put_one(self, a[0], block, dl);
}

static PyObject *Queue_put_nowait(QueueObject *self, PyObject *obj)
{
    if (check_open(self) < 0)
        return NULL;
    return put_one(self, obj, 0, MPX_NOWAIT);
}

/* Pops the oldest pending item, if any (items received by an earlier get_many whose
 * unpickling stopped at an error). */
static PyObject *pop_pending(QueueObject *self)
{
    if (!self->pending || PyList_GET_SIZE(self->pending) == 0)
        return NULL;
    PyObject *item = Py_NewRef(PyList_GET_ITEM(self->pending, 0));
    if (PySequence_DelItem(self->pending, 0) < 0) {
        Py_DECREF(item);
        return NULL;
    }
    return item;
}

static PyObject *get_one(QueueObject *self, int block, mpx_deadline_t dl)
{
    PyObject *item = pop_pending(self);
    if (!item) {
        if (PyErr_Occurred())
            return NULL;
        decoder d = {self->st, PyList_New(0), 0};
        if (!d.items)
            return NULL;
        if (fetch(self, 1, block, dl, &d) < 0) {
            Py_DECREF(d.items);
            return NULL;
        }
        item = Py_NewRef(PyList_GET_ITEM(d.items, 0));
        Py_DECREF(d.items);
    }
    PyObject *obj = rebuild(self->st, item);
    Py_DECREF(item);
    return obj;
}

static PyObject *Queue_get(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                           PyObject *kwnames)
{
    static const char *const names[] = {"block", "timeout"};
    PyObject *a[2] = {NULL, NULL};
    int block;
    mpx_deadline_t dl;
    if (mpx_py_parse("get", args, nargs, kwnames, names, 0, 2, a) < 0 || check_open(self) < 0)
        return NULL;
    PyObject *timeout = NULL;
    int blocking = a[0] ? PyObject_IsTrue(a[0]) : 1;
    if (blocking < 0)
        return NULL;
    if (blocking && a[1] && a[1] != Py_None && !PyFloat_CheckExact(a[1]) &&
        !PyLong_CheckExact(a[1])) {
        /* The stdlib computes `time.monotonic() + timeout`: give the same TypeError. */
        PyObject *zero = PyFloat_FromDouble(0.0);
        timeout = zero ? PyNumber_Add(zero, a[1]) : NULL;
        Py_XDECREF(zero);
        if (!timeout)
            return NULL;
        a[1] = timeout;
    }
    int r = parse_block_timeout(a[0], a[1], &block, &dl);
    Py_XDECREF(timeout);
    if (r < 0)
        return NULL;
    return get_one(self, block, dl);
}

static PyObject *Queue_get_nowait(QueueObject *self, PyObject *unused)
{
    if (check_open(self) < 0)
        return NULL;
    return get_one(self, 0, MPX_NOWAIT);
}

static PyObject *Queue_put_many(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    static const char *const names[] = {"items", "timeout"};
    PyObject *a[2] = {NULL, NULL};
    mpx_deadline_t dl = MPX_FOREVER;
    if (mpx_py_parse("put_many", args, nargs, kwnames, names, 1, 2, a) < 0 || check_open(self) < 0)
        return NULL;
    if (a[1] && mpx_py_deadline(a[1], &dl) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(a[0], "put_many() argument 'items' must be iterable");
    if (!seq)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    uint64_t maxsize = mpx_queue_maxsize(self->q);
    PyObject *res = NULL;
    encoded *es = NULL;
    mpx_msgv *ms = NULL;
    Py_ssize_t done = 0;
    if (n == 0) {
        res = Py_NewRef(Py_None);
        goto out;
    }
    if (maxsize && (uint64_t)n > maxsize) {
        PyErr_Format(PyExc_ValueError, "put_many() of %zd items exceeds maxsize %llu", n,
                     (unsigned long long)maxsize);
        goto out;
    }
    es = PyMem_Malloc(sizeof *es * (size_t)n);
    ms = PyMem_Malloc(sizeof *ms * (size_t)n);
    if (!es || !ms) {
        PyErr_NoMemory();
        goto out;
    }
    size_t total = 0;
    for (; done < n; done++) {
        if (encode(self->st, PySequence_Fast_GET_ITEM(seq, done), &es[done]) < 0)
            goto out;
        ms[done] = (mpx_msgv){es[done].iov, es[done].iovcnt};
        total += es[done].total;
    }
    if (send_msgs(self, ms, (size_t)n, total, 1, dl) == 0)
        res = Py_NewRef(Py_None);
out:
    for (Py_ssize_t i = 0; i < done; i++)
        encoded_done(&es[i]);
    PyMem_Free(es);
    PyMem_Free(ms);
    Py_DECREF(seq);
    return res;
}

static PyObject *Queue_get_many(QueueObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    static const char *const names[] = {"max_items", "timeout"};
    PyObject *a[2] = {NULL, NULL};
    mpx_deadline_t dl = MPX_FOREVER;
    if (mpx_py_parse("get_many", args, nargs, kwnames, names, 1, 2, a) < 0 || check_open(self) < 0)
        return NULL;
    Py_ssize_t max = PyNumber_AsSsize_t(a[0], PyExc_OverflowError);
    if (max == -1 && PyErr_Occurred())
        return NULL;
    if (max < 1) {
        PyErr_SetString(PyExc_ValueError, "get_many() argument 'max_items' must be at least 1");
        return NULL;
    }
    if (a[1] && mpx_py_deadline(a[1], &dl) < 0)
        return NULL;
    PyObject *items = PyList_New(0);
    if (!items)
        return NULL;
    /* Items left over from an earlier call come first. */
    while (PyList_GET_SIZE(items) < max) {
        PyObject *it = pop_pending(self);
        if (!it)
            break;
        int r = PyList_Append(items, it);
        Py_DECREF(it);
        if (r < 0)
            goto fail;
    }
    if (PyErr_Occurred())
        goto fail;
    if (PyList_GET_SIZE(items) < max) {
        decoder d = {self->st, items, 0};
        int block = PyList_GET_SIZE(items) == 0;
        if (fetch(self, (size_t)(max - PyList_GET_SIZE(items)), block, dl, &d) < 0) {
            if (!block && exc_is_empty(self->st))
                PyErr_Clear();
            else
                goto fail;
        }
    }
    /* Rebuild each item. If one fails, its exception is raised (the item is consumed, as
     * by get()), and every other item received goes back to the pending list, oldest
     * first, for the next call: nothing received is dropped. */
    Py_ssize_t n = PyList_GET_SIZE(items);
    PyObject *out = PyList_New(n);
    if (!out)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *obj = rebuild(self->st, PyList_GET_ITEM(items, i));
        if (obj) {
            PyList_SET_ITEM(out, i, obj);
            continue;
        }
        Py_DECREF(out);
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        if (PySequence_DelItem(items, i) == 0 && self->pending)
            PyList_SetSlice(items, PyList_GET_SIZE(items), PyList_GET_SIZE(items), self->pending);
        if (!PyErr_Occurred())
            Py_XSETREF(self->pending, Py_NewRef(items));
        PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        Py_DECREF(items);
        return NULL;
    }
    Py_DECREF(items);
    return out;
fail:
    Py_DECREF(items);
    return NULL;
}


/* Returns a count read by one of the mpx_queue_size-like functions. */
static PyObject *queue_count(QueueObject *self, int (*read)(mpx_queue *, uint64_t *),
                             uint64_t extra)
{
    if (check_init(self) < 0)
        return NULL;
    uint64_t n;
    int r = read(self->q, &n);
    if (r < 0)
        return mpx_py_error(self->st, r);
    return PyLong_FromUnsignedLongLong(n + extra);
}

static PyObject *Queue_qsize(QueueObject *self, PyObject *unused)
{
    /* Items already received by this handle but not yet returned count as queued. */
    return queue_count(self, mpx_queue_size,
                       self->pending ? (uint64_t)PyList_GET_SIZE(self->pending) : 0);
}

static PyObject *Queue_unfinished(QueueObject *self, PyObject *unused)
{
    return queue_count(self, mpx_queue_unfinished, 0);
}

static PyObject *Queue_capacity(QueueObject *self, PyObject *unused)
{
    return queue_count(self, mpx_queue_capacity, 0);
}

static PyObject *Queue_empty(QueueObject *self, PyObject *unused)
{
    if (check_init(self) < 0)
        return NULL;
    if (self->closed) {
        PyErr_SetString(PyExc_OSError, "handle is closed");
        return NULL;
    }
    PyObject *n = Queue_qsize(self, NULL);
    if (!n)
        return NULL;
    int zero = PyLong_AsLongLong(n) == 0;
    Py_DECREF(n);
    return PyBool_FromLong(zero);
}

static PyObject *Queue_full(QueueObject *self, PyObject *unused)
{
    if (check_init(self) < 0)
        return NULL;
    uint64_t max = mpx_queue_maxsize(self->q), n;
    if (!max)
        Py_RETURN_FALSE;
    int r = mpx_queue_size(self->q, &n);
    if (r < 0)
        return mpx_py_error(self->st, r);
    return PyBool_FromLong(n >= max);
}

static PyObject *Queue_close(QueueObject *self, PyObject *unused)
{
    self->closed = 1;
    Py_RETURN_NONE;
}

static PyObject *Queue_task_done(QueueObject *self, PyObject *unused)
{
    if (check_init(self) < 0)
        return NULL;
    int r = mpx_queue_task_done(self->q);
    if (r == MPX_ETOOMANY) {
        PyErr_SetString(PyExc_ValueError, "task_done() called too many times");
        return NULL;
    }
    if (r < 0)
        return mpx_py_error(self->st, r);
    Py_RETURN_NONE;
}

static PyObject *Queue_join(QueueObject *self, PyObject *unused)
{
    if (check_init(self) < 0)
        return NULL;
    for (;;) {
        int r;
        Py_BEGIN_ALLOW_THREADS
        r = mpx_queue_join(self->q, MPX_FOREVER);
        Py_END_ALLOW_THREADS
        if (r == 0)
            Py_RETURN_NONE;
        if (r != -EINTR)
            return mpx_py_error(self->st, r);
        if (PyErr_CheckSignals() < 0)
            return NULL;
    }
}


static PyObject *Queue_create(QueueObject *self, PyObject *args)
{
    long long maxsize = 0;
    int style = 0;
    if (!PyArg_ParseTuple(args, "L|i:_create", &maxsize, &style))
        return NULL;
    if (self->q) {
        PyErr_SetString(PyExc_RuntimeError, "queue already initialized");
        return NULL;
    }
    mpx_queue_options o = {.maxsize = maxsize > 0 ? (uint64_t)maxsize : 0};
    int r = mpx_queue_create(&self->q, &o);
    if (r < 0)
        return mpx_py_error(self->st, r);
    self->closed_style = style;
    Py_RETURN_NONE;
}

static PyObject *Queue_attach(QueueObject *self, PyObject *args)
{
    int fd, style = 0;
    if (!PyArg_ParseTuple(args, "i|i:_attach", &fd, &style))
        return NULL;
    if (self->q) {
        PyErr_SetString(PyExc_RuntimeError, "queue already initialized");
        return NULL;
    }
    int r = mpx_queue_attach(&self->q, fd);
    if (r < 0)
        return mpx_py_error(self->st, r);
    self->closed_style = style;
    Py_RETURN_NONE;
}

static PyObject *Queue_fd(QueueObject *self, PyObject *unused)
{
    if (check_init(self) < 0)
        return NULL;
    return PyLong_FromLong(mpx_queue_fd(self->q));
}

static PyObject *Queue_get_closed(QueueObject *self, void *unused)
{
    return PyBool_FromLong(self->closed);
}

static PyObject *Queue_get_maxsize(QueueObject *self, void *unused)
{
    if (check_init(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(mpx_queue_maxsize(self->q));
}


static PyMethodDef Queue_methods[] = {
    {"put", (PyCFunction)(void (*)(void))Queue_put, METH_FASTCALL | METH_KEYWORDS,
     "put(obj, block=True, timeout=None)\n--\n\nPut obj into the queue. The object is "
     "pickled in the calling thread: an unpicklable object raises here and nothing is "
     "enqueued. Raises queue.Full if the queue stays full (only with a maxsize)."},
    {"get", (PyCFunction)(void (*)(void))Queue_get, METH_FASTCALL | METH_KEYWORDS,
     "get(block=True, timeout=None)\n--\n\nRemove and return the oldest item. Raises "
     "queue.Empty if none arrives in time."},
    {"put_nowait", (PyCFunction)Queue_put_nowait, METH_O,
     "put_nowait(obj)\n--\n\nEquivalent to put(obj, False)."},
    {"get_nowait", (PyCFunction)Queue_get_nowait, METH_NOARGS,
     "get_nowait()\n--\n\nEquivalent to get(False)."},
    {"put_many", (PyCFunction)(void (*)(void))Queue_put_many, METH_FASTCALL | METH_KEYWORDS,
     "put_many(items, timeout=None)\n--\n\nPut every item of `items`, atomically and "
     "contiguously, taking the queue's lock once. All items are pickled first; if one "
     "cannot be, nothing is enqueued. With a maxsize, waits until there is room for all "
     "(ValueError if there are more items than maxsize); raises queue.Full if room does "
     "not appear before the timeout."},
    {"get_many", (PyCFunction)(void (*)(void))Queue_get_many, METH_FASTCALL | METH_KEYWORDS,
     "get_many(max_items, timeout=None)\n--\n\nWait for at least one item (queue.Empty "
     "after the timeout; timeout=0 does not wait), then return a list of up to max_items "
     "items, oldest first, taken under one lock."},
    {"qsize", (PyCFunction)Queue_qsize, METH_NOARGS,
     "qsize()\n--\n\nThe exact number of items in the queue."},
    {"empty", (PyCFunction)Queue_empty, METH_NOARGS,
     "empty()\n--\n\nTrue if the queue is empty."},
    {"full", (PyCFunction)Queue_full, METH_NOARGS,
     "full()\n--\n\nTrue if the queue holds maxsize items (never for an unbounded queue)."},
    {"close", (PyCFunction)Queue_close, METH_NOARGS,
     "close()\n--\n\nIndicate that the current process will not use this queue any more."},
    {"_task_done", (PyCFunction)Queue_task_done, METH_NOARGS, NULL},
    {"_join", (PyCFunction)Queue_join, METH_NOARGS, NULL},
    {"_unfinished", (PyCFunction)Queue_unfinished, METH_NOARGS, NULL},
    {"_create", (PyCFunction)Queue_create, METH_VARARGS, NULL},
    {"_attach", (PyCFunction)Queue_attach, METH_VARARGS, NULL},
    {"_fd", (PyCFunction)Queue_fd, METH_NOARGS, NULL},
    {"_capacity", (PyCFunction)Queue_capacity, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Queue_getset[] = {
    {"_closed", (getter)Queue_get_closed, NULL, NULL, NULL},
    {"_maxsize_value", (getter)Queue_get_maxsize, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *Queue_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    QueueObject *self = (QueueObject *)type->tp_alloc(type, 0);
    if (!self)
        return NULL;
    PyObject *module = PyType_GetModuleByDef(type, &mpx_module_def);
    if (!module) {
        Py_DECREF(self);
        return NULL;
    }
    self->st = PyModule_GetState(module);
    return (PyObject *)self;
}

static int Queue_traverse(QueueObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->pending);
    return 0;
}

static int Queue_clear(QueueObject *self)
{
    Py_CLEAR(self->pending);
    return 0;
}

static void Queue_dealloc(QueueObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Queue_clear(self);
    mpx_queue_destroy(self->q);
    self->q = NULL;
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyType_Slot Queue_slots[] = {
    {Py_tp_doc, "The shared-memory queue engine behind mpservice's Queue classes."},
    {Py_tp_new, Queue_new},
    {Py_tp_dealloc, Queue_dealloc},
    {Py_tp_traverse, Queue_traverse},
    {Py_tp_clear, Queue_clear},
    {Py_tp_methods, Queue_methods},
    {Py_tp_getset, Queue_getset},
    {0, NULL},
};

static PyType_Spec Queue_spec = {
    .name = "mpservice._mpx.Queue",
    .basicsize = sizeof(QueueObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = Queue_slots,
};

static PyObject *set_fallback_dumps(PyObject *module, PyObject *func)
{
    mpx_state *st = PyModule_GetState(module);
    Py_XSETREF(st->fallback_dumps, func == Py_None ? NULL : Py_NewRef(func));
    Py_RETURN_NONE;
}

static PyMethodDef queue_module_methods[] = {
    {"_set_fallback_dumps", set_fallback_dumps, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

int mpx_queue_type_init(PyObject *module, mpx_state *st)
{
    st->QueueType = PyType_FromModuleAndSpec(module, &Queue_spec, NULL);
    if (!st->QueueType || PyModule_AddObjectRef(module, "Queue", st->QueueType) < 0)
        return -1;
    return PyModule_AddFunctions(module, queue_module_methods);
}
