/* A fast pickle protocol 5 encoder/decoder for a subset of plain Python objects; see
 * fastpickle.h for the contract.
 *
 * Encoder. Writes the same opcodes as pickle (protocol 5) would, minus FRAME and the memo
 * opcodes: PROTO 5, then the object, then STOP. Since nothing is memoized, a container that
 * appears twice in the graph (shared or recursive) would come back as two objects, so every
 * container is recorded in a pointer set and a second sighting means "not handled". Nesting
 * is limited to FP_MAX_DEPTH containers. Output goes to an inline buffer first and moves to
 * a bytes object (grown with _PyBytes_Resize) when it outgrows it, so a small message costs
 * one allocation, and a large one is copied once.
 *
 * Decoder. A stack machine over the same opcodes with the same semantics as pickle's
 * Unpickler (MARK fences, APPENDS/SETITEMS/ADDITEMS targets below the mark), restricted to
 * what the encoder emits: the stream must start with PROTO 5, end with STOP at the last
 * byte, leave exactly one object and no open mark, never build a container nested more than
 * FP_MAX_DEPTH deep (so hashing a nested tuple key cannot overflow the C stack), and never
 * use FRAME, memo, LONG4 or any other opcode. Anything else is refused with no exception
 * set; an exception other than MemoryError (say an unhashable dict key in a forged stream)
 * is cleared and refused too, so pickle.loads gets to report it.
 *
 * The encoder calls no Python code, with one exception: iterating a set allocates an
 * iterator, which may trigger the cyclic GC and so run finalizers, which may mutate the
 * objects being encoded. Every container is therefore held by a strong reference while it
 * is being encoded, list sizes are re-read at every step, and a set or dict that changes
 * size is "not handled". (The decoder's objects are reachable from its stack only, so a
 * collection during decoding cannot touch them.)
 */
#include "fastpickle.h"

#include <stdint.h>
#include <string.h>

#if PY_VERSION_HEX < 0x030B0000
#include <longintrepr.h> /* Python.h includes it from 3.11 on */
#endif

#define FP_MAX_DEPTH 64       /* containers nested deeper are not handled */
#define FP_BATCH 1000         /* items per APPENDS/SETITEMS/ADDITEMS, as pickle */
#define FP_INLINE_OUT 512     /* bytes of output kept on the C stack */
#define FP_IDS_SMALL 16       /* containers tracked by linear search before hashing */
#define FP_STACK_INLINE 64    /* decoder stack slots before going to the heap */
#define FP_MAX_MARKS FP_MAX_DEPTH

#define FP_OK 0
#define FP_ERROR (-1)       /* exception set */
#define FP_NOT_HANDLED (-2) /* no exception set */

_Static_assert(sizeof(double) == 8 && sizeof(uint64_t) == 8, "IEEE 754 binary64 expected");

enum {
    OP_MARK = '(',
    OP_STOP = '.',
    OP_BININT = 'J',
    OP_BININT1 = 'K',
    OP_BININT2 = 'M',
    OP_NONE = 'N',
    OP_BINFLOAT = 'G',
    OP_BINBYTES = 'B',
    OP_SHORT_BINBYTES = 'C',
    OP_BINUNICODE = 'X',
    OP_APPEND = 'a',
    OP_APPENDS = 'e',
    OP_EMPTY_DICT = '}',
    OP_EMPTY_LIST = ']',
    OP_EMPTY_TUPLE = ')',
    OP_SETITEM = 's',
    OP_SETITEMS = 'u',
    OP_TUPLE = 't',
    OP_PROTO = 0x80,
    OP_TUPLE1 = 0x85,
    OP_TUPLE2 = 0x86,
    OP_TUPLE3 = 0x87,
    OP_NEWTRUE = 0x88,
    OP_NEWFALSE = 0x89,
    OP_LONG1 = 0x8a,
    OP_SHORT_BINUNICODE = 0x8c,
    OP_BINUNICODE8 = 0x8d,
    OP_BINBYTES8 = 0x8e,
    OP_EMPTY_SET = 0x8f,
    OP_ADDITEMS = 0x90,
    OP_FROZENSET = 0x91,
};

/* An exception other than MemoryError cannot come from a supported object or a stream we
 * produced; it means "not handled" (pickle will raise it again, or handle the case). */
static int fp_classify_error(void)
{
    if (PyErr_ExceptionMatches(PyExc_MemoryError))
        return FP_ERROR;
    PyErr_Clear();
    return FP_NOT_HANDLED;
}

static inline void put_le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static inline uint64_t get_le(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ---------------------------------------------------------------------------------------
 * Encoder
 */

typedef struct {
    unsigned char *p, *end, *base;
    PyObject *bytes; /* NULL while the output is in buf */
    unsigned char buf[FP_INLINE_OUT];
} fp_writer;

typedef struct {
    PyObject **table; /* open addressing, NULL = free; NULL while the small array is used */
    size_t mask, count;
    int nsmall;
    PyObject *small[FP_IDS_SMALL];
} fp_ids;

typedef struct {
    fp_writer w;
    fp_ids ids;
} fp_enc;

static int w_grow(fp_writer *w, size_t need)
{
    size_t used = (size_t)(w->p - w->base), cap = (size_t)(w->end - w->base);
    if (need > (size_t)PY_SSIZE_T_MAX - used) {
        PyErr_NoMemory();
        return FP_ERROR;
    }
    size_t want = used + need;
    size_t ncap = cap <= (size_t)PY_SSIZE_T_MAX / 2 ? cap * 2 : (size_t)PY_SSIZE_T_MAX;
    if (ncap < want) /* a big payload: room for it and a little more, not twice as much */
        ncap = want <= (size_t)PY_SSIZE_T_MAX - 256 ? want + 256 : want;
    if (!w->bytes) {
        PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)ncap);
        if (!b)
            return FP_ERROR;
        memcpy(PyBytes_AS_STRING(b), w->base, used);
        w->bytes = b;
    } else if (_PyBytes_Resize(&w->bytes, (Py_ssize_t)ncap) < 0) {
        return FP_ERROR; /* w->bytes is NULL now */
    }
    w->base = (unsigned char *)PyBytes_AS_STRING(w->bytes);
    w->p = w->base + used;
    w->end = w->base + ncap;
    return FP_OK;
}

#define RESERVE(e, n)                                                                      \
    do {                                                                                   \
        if ((size_t)((e)->w.end - (e)->w.p) < (size_t)(n) && w_grow(&(e)->w, (n)) < 0)    \
            return FP_ERROR;                                                               \
    } while (0)

static inline int w_byte(fp_enc *e, unsigned char c)
{
    RESERVE(e, 1);
    *e->w.p++ = c;
    return FP_OK;
}

static inline size_t ids_hash(PyObject *o)
{
    return (size_t)(((uint64_t)(uintptr_t)o >> 4) * UINT64_C(0x9E3779B97F4A7C15) >> 20);
}

/* Inserts o, known to be absent, into the hash table. */
static inline void ids_put(fp_ids *s, PyObject *o)
{
    size_t h = ids_hash(o);
    while (s->table[h & s->mask])
        h++;
    s->table[h & s->mask] = o;
    s->count++;
}

static int ids_resize(fp_ids *s, size_t nslots)
{
    PyObject **t = PyMem_Calloc(nslots, sizeof(PyObject *));
    if (!t) {
        PyErr_NoMemory();
        return FP_ERROR;
    }
    PyObject **old = s->table;
    size_t oldn = old ? s->mask + 1 : 0;
    s->table = t;
    s->mask = nslots - 1;
    s->count = 0;
    for (size_t i = 0; i < oldn; i++)
        if (old[i])
            ids_put(s, old[i]);
    PyMem_Free(old);
    return FP_OK;
}

/* Records a container: FP_OK the first time, FP_NOT_HANDLED if seen before. */
static int ids_add(fp_ids *s, PyObject *o)
{
    if (!s->table) {
        for (int i = 0; i < s->nsmall; i++)
            if (s->small[i] == o)
                return FP_NOT_HANDLED;
        if (s->nsmall < FP_IDS_SMALL) {
            s->small[s->nsmall++] = o;
            return FP_OK;
        }
        /* the small array is full: move it into a hash table */
        if (ids_resize(s, FP_IDS_SMALL * 4) < 0)
            return FP_ERROR;
        for (int i = 0; i < s->nsmall; i++)
            ids_put(s, s->small[i]);
    }
    if ((s->count + 1) * 2 > s->mask + 1 && ids_resize(s, (s->mask + 1) * 2) < 0)
        return FP_ERROR;
    for (size_t h = ids_hash(o);; h++) {
        PyObject *x = s->table[h & s->mask];
        if (x == o)
            return FP_NOT_HANDLED;
        if (!x)
            break;
    }
    ids_put(s, o);
    return FP_OK;
}

static int enc(fp_enc *e, PyObject *o, int level);

/* Reads an int that fits one internal digit without a call; 0 if it does not. */
static inline int fp_long_compact(PyObject *o, long long *v)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (!PyUnstable_Long_IsCompact((PyLongObject *)o))
        return 0;
    *v = (long long)PyUnstable_Long_CompactValue((PyLongObject *)o);
    return 1;
#else
    Py_ssize_t size = Py_SIZE(o);
    if (size < -1 || size > 1)
        return 0;
    *v = size == 0 ? 0 : (long long)size * (long long)((PyLongObject *)o)->ob_digit[0];
    return 1;
#endif
}

static int enc_long(fp_enc *e, PyObject *o)
{
    int overflow = 0;
    long long v;
    if (!fp_long_compact(o, &v))
        v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow == 0) {
        if (v == -1 && PyErr_Occurred())
            return fp_classify_error();
        RESERVE(e, 10);
        unsigned char *p = e->w.p;
        if (v >= 0 && v <= 0xff) {
            p[0] = OP_BININT1;
            p[1] = (unsigned char)v;
            e->w.p += 2;
        } else if (v >= 0 && v <= 0xffff) {
            p[0] = OP_BININT2;
            put_le(p + 1, (uint64_t)v, 2);
            e->w.p += 3;
        } else if (v >= -(1LL << 31) && v < (1LL << 31)) {
            p[0] = OP_BININT;
            put_le(p + 1, (uint64_t)v, 4);
            e->w.p += 5;
        } else {
            /* LONG1 with the minimal two's complement length, as pickle's encode_long */
            unsigned char b[8];
            put_le(b, (uint64_t)v, 8);
            int n = 8;
            while (n > 1 && ((b[n - 1] == 0 && !(b[n - 2] & 0x80)) ||
                             (b[n - 1] == 0xff && (b[n - 2] & 0x80))))
                n--;
            p[0] = OP_LONG1;
            p[1] = (unsigned char)n;
            memcpy(p + 2, b, (size_t)n);
            e->w.p += 2 + n;
        }
        return FP_OK;
    }
    if (overflow < 0)
        return FP_NOT_HANDLED;
    unsigned long long u = PyLong_AsUnsignedLongLong(o);
    if (u == (unsigned long long)-1 && PyErr_Occurred())
        return fp_classify_error(); /* OverflowError: beyond 64 bits */
    /* 2**63 <= u < 2**64: nine bytes, the top one 0 */
    RESERVE(e, 11);
    unsigned char *p = e->w.p;
    p[0] = OP_LONG1;
    p[1] = 9;
    put_le(p + 2, (uint64_t)u, 8);
    p[10] = 0;
    e->w.p += 11;
    return FP_OK;
}

/* SHORT_x (1-byte length) / x (4-byte) / x8 (8-byte) header plus the payload */
static int enc_blob(fp_enc *e, const char *s, Py_ssize_t n, unsigned char op_short,
                    unsigned char op4, unsigned char op8)
{
    if ((size_t)n > (size_t)PY_SSIZE_T_MAX - 9) {
        PyErr_NoMemory();
        return FP_ERROR;
    }
    RESERVE(e, (size_t)n + 9);
    unsigned char *p = e->w.p;
    if (n <= 0xff) {
        p[0] = op_short;
        p[1] = (unsigned char)n;
        p += 2;
    } else if ((uint64_t)n <= 0xffffffffu) {
        p[0] = op4;
        put_le(p + 1, (uint64_t)n, 4);
        p += 5;
    } else {
        p[0] = op8;
        put_le(p + 1, (uint64_t)n, 8);
        p += 9;
    }
    memcpy(p, s, (size_t)n);
    e->w.p = p + n;
    return FP_OK;
}

/* enc() with the commonest item, a small non-negative int, written inline. */
static inline int enc_item(fp_enc *e, PyObject *o, int level)
{
    long long v;
    if (Py_IS_TYPE(o, &PyLong_Type) && fp_long_compact(o, &v) && v >= 0 && v <= 0xffff &&
        e->w.end - e->w.p >= 3) {
        unsigned char *p = e->w.p;
        if (v <= 0xff) {
            p[0] = OP_BININT1;
            p[1] = (unsigned char)v;
            e->w.p += 2;
        } else {
            p[0] = OP_BININT2;
            put_le(p + 1, (uint64_t)v, 2);
            e->w.p += 3;
        }
        return FP_OK;
    }
    return enc(e, o, level);
}

/* a non-empty tuple (enc() writes the empty one) */
static int enc_tuple(fp_enc *e, PyObject *o, int level)
{
    Py_ssize_t n = PyTuple_GET_SIZE(o);
    int r = FP_OK;
    if (n > 3 && (r = w_byte(e, OP_MARK)) < 0)
        return r;
    for (Py_ssize_t i = 0; i < n; i++)
        if ((r = enc_item(e, PyTuple_GET_ITEM(o, i), level + 1)) < 0)
            return r;
    return w_byte(e, n <= 3 ? (unsigned char)(OP_TUPLE1 + n - 1) : OP_TUPLE);
}

static int enc_list(fp_enc *e, PyObject *o, int level)
{
    int r;
    if ((r = w_byte(e, OP_EMPTY_LIST)) < 0)
        return r;
    Py_ssize_t i = 0;
    while (i < PyList_GET_SIZE(o)) {
        Py_ssize_t stop = PyList_GET_SIZE(o) - i > FP_BATCH ? i + FP_BATCH : PyList_GET_SIZE(o);
        if (stop - i == 1) {
            if ((r = enc_item(e, PyList_GET_ITEM(o, i), level + 1)) < 0 ||
                (r = w_byte(e, OP_APPEND)) < 0)
                return r;
            i++;
            continue;
        }
        if ((r = w_byte(e, OP_MARK)) < 0)
            return r;
        /* the size is re-read in case a finalizer shrank the list (see the top comment) */
        for (; i < stop && i < PyList_GET_SIZE(o); i++)
            if ((r = enc_item(e, PyList_GET_ITEM(o, i), level + 1)) < 0)
                return r;
        if ((r = w_byte(e, OP_APPENDS)) < 0)
            return r;
    }
    return FP_OK;
}

static int enc_dict(fp_enc *e, PyObject *o, int level)
{
    int r;
    if ((r = w_byte(e, OP_EMPTY_DICT)) < 0)
        return r;
    Py_ssize_t pos = 0, left = PyDict_GET_SIZE(o);
    PyObject *k, *v;
    while (left > 0) {
        Py_ssize_t batch = left > FP_BATCH ? FP_BATCH : left, done = 0;
        if (batch > 1 && (r = w_byte(e, OP_MARK)) < 0)
            return r;
        while (done < batch && PyDict_Next(o, &pos, &k, &v)) {
            if ((r = enc_item(e, k, level + 1)) < 0 || (r = enc_item(e, v, level + 1)) < 0)
                return r;
            done++;
        }
        if (done < batch)
            return FP_NOT_HANDLED; /* the dict changed under us */
        if ((r = w_byte(e, batch > 1 ? OP_SETITEMS : OP_SETITEM)) < 0)
            return r;
        left -= batch;
    }
    return FP_OK;
}

static int enc_set(fp_enc *e, PyObject *o, int level)
{
    int frozen = Py_IS_TYPE(o, &PyFrozenSet_Type), r = FP_OK;
    if (!frozen && PySet_GET_SIZE(o) == 0)
        return w_byte(e, OP_EMPTY_SET);
    if (!frozen && (r = w_byte(e, OP_EMPTY_SET)) < 0)
        return r;
    PyObject *it = PyObject_GetIter(o), *item = NULL;
    if (!it)
        return fp_classify_error();
    Py_ssize_t inbatch = 0;
    if ((r = w_byte(e, OP_MARK)) < 0)
        goto done;
    while ((item = PyIter_Next(it))) {
        if (!frozen && inbatch == FP_BATCH) {
            if ((r = w_byte(e, OP_ADDITEMS)) < 0 || (r = w_byte(e, OP_MARK)) < 0)
                goto done;
            inbatch = 0;
        }
        r = enc_item(e, item, level + 1);
        Py_CLEAR(item);
        if (r < 0)
            goto done;
        inbatch++;
    }
    if (PyErr_Occurred()) {
        r = fp_classify_error(); /* RuntimeError: the set changed size */
        goto done;
    }
    r = w_byte(e, frozen ? OP_FROZENSET : OP_ADDITEMS);
done:
    Py_DECREF(it);
    return r;
}

static int enc(fp_enc *e, PyObject *o, int level)
{
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyLong_Type)
        return enc_long(e, o);
    if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(o, &n);
        if (!s)
            return fp_classify_error(); /* lone surrogates */
        return enc_blob(e, s, n, OP_SHORT_BINUNICODE, OP_BINUNICODE, OP_BINUNICODE8);
    }
    if (t == &PyFloat_Type) {
        double d = PyFloat_AS_DOUBLE(o);
        uint64_t u;
        memcpy(&u, &d, 8);
        RESERVE(e, 9);
        unsigned char *p = e->w.p;
        p[0] = OP_BINFLOAT;
        for (int i = 0; i < 8; i++)
            p[1 + i] = (unsigned char)(u >> (56 - 8 * i));
        e->w.p += 9;
        return FP_OK;
    }
    if (o == Py_None)
        return w_byte(e, OP_NONE);
    if (o == Py_True)
        return w_byte(e, OP_NEWTRUE);
    if (o == Py_False)
        return w_byte(e, OP_NEWFALSE);
    if (t == &PyBytes_Type)
        return enc_blob(e, PyBytes_AS_STRING(o), PyBytes_GET_SIZE(o), OP_SHORT_BINBYTES,
                        OP_BINBYTES, OP_BINBYTES8);

    int (*f)(fp_enc *, PyObject *, int);
    if (t == &PyTuple_Type) {
        if (PyTuple_GET_SIZE(o) == 0)
            return w_byte(e, OP_EMPTY_TUPLE); /* a singleton, never memoized by pickle */
        f = enc_tuple;
    } else if (t == &PyList_Type) {
        f = enc_list;
    } else if (t == &PyDict_Type) {
        f = enc_dict;
    } else if (t == &PySet_Type || t == &PyFrozenSet_Type) {
        f = enc_set;
    } else {
        return FP_NOT_HANDLED;
    }
    if (level >= FP_MAX_DEPTH)
        return FP_NOT_HANDLED;
    int r = ids_add(&e->ids, o);
    if (r < 0)
        return r;
    Py_INCREF(o);
    r = f(e, o, level);
    Py_DECREF(o);
    return r;
}

PyObject *mpx_fastpickle_dumps(PyObject *obj)
{
    fp_enc e;
    e.w.base = e.w.p = e.w.buf;
    e.w.end = e.w.buf + sizeof(e.w.buf);
    e.w.bytes = NULL;
    e.ids.table = NULL;
    e.ids.mask = e.ids.count = 0;
    e.ids.nsmall = 0;

    e.w.p[0] = OP_PROTO;
    e.w.p[1] = 5;
    e.w.p += 2;
    int r = enc(&e, obj, 0);
    if (r == FP_OK)
        r = w_byte(&e, OP_STOP);
    PyMem_Free(e.ids.table);
    if (r < 0) {
        Py_XDECREF(e.w.bytes);
        return NULL;
    }
    Py_ssize_t used = e.w.p - e.w.base;
    if (!e.w.bytes)
        return PyBytes_FromStringAndSize((const char *)e.w.base, used);
    if (_PyBytes_Resize(&e.w.bytes, used) < 0)
        return NULL;
    return e.w.bytes;
}

/* ---------------------------------------------------------------------------------------
 * Decoder
 */

typedef struct {
    PyObject **items;     /* strong references */
    unsigned char *depth; /* container nesting of each item, 0 for atoms */
    Py_ssize_t len, cap;
    int nmarks;
    Py_ssize_t marks[FP_MAX_MARKS];
    PyObject *items_inline[FP_STACK_INLINE];
    unsigned char depth_inline[FP_STACK_INLINE];
} fp_dec;

static int dec_grow(fp_dec *d)
{
    if (d->cap > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(PyObject *)) {
        PyErr_NoMemory();
        return FP_ERROR;
    }
    Py_ssize_t ncap = d->cap * 2;
    PyObject **items = PyMem_Malloc((size_t)ncap * sizeof(PyObject *));
    unsigned char *depth = PyMem_Malloc((size_t)ncap);
    if (!items || !depth) {
        PyMem_Free(items);
        PyMem_Free(depth);
        PyErr_NoMemory();
        return FP_ERROR;
    }
    memcpy(items, d->items, (size_t)d->len * sizeof(PyObject *));
    memcpy(depth, d->depth, (size_t)d->len);
    if (d->items != d->items_inline) {
        PyMem_Free(d->items);
        PyMem_Free(d->depth);
    }
    d->items = items;
    d->depth = depth;
    d->cap = ncap;
    return FP_OK;
}

/* Pushes a new reference (consumed even on failure). */
static inline int dec_push(fp_dec *d, PyObject *o, unsigned char depth)
{
    if (!o)
        return fp_classify_error();
    if (d->len == d->cap && dec_grow(d) < 0) {
        Py_DECREF(o);
        return FP_ERROR;
    }
    d->items[d->len] = o;
    d->depth[d->len] = depth;
    d->len++;
    return FP_OK;
}

static inline Py_ssize_t dec_fence(const fp_dec *d)
{
    return d->nmarks ? d->marks[d->nmarks - 1] : 0;
}

/* 1 + the deepest of items[from..len), or -1 if that exceeds FP_MAX_DEPTH */
static inline int dec_depth_over(const fp_dec *d, Py_ssize_t from, int base)
{
    int m = base;
    for (Py_ssize_t i = from; i < d->len; i++)
        if (d->depth[i] + 1 > m)
            m = d->depth[i] + 1;
    return m > FP_MAX_DEPTH ? -1 : m;
}

/* Moves items[from..len) into a new tuple. */
static PyObject *dec_take_tuple(fp_dec *d, Py_ssize_t from)
{
    PyObject *t = PyTuple_New(d->len - from);
    if (!t)
        return NULL;
    for (Py_ssize_t i = from; i < d->len; i++)
        PyTuple_SET_ITEM(t, i - from, d->items[i]);
    d->len = from;
    return t;
}

static void dec_clear(fp_dec *d)
{
    for (Py_ssize_t i = 0; i < d->len; i++)
        Py_DECREF(d->items[i]);
    d->len = 0;
    if (d->items != d->items_inline) {
        PyMem_Free(d->items);
        PyMem_Free(d->depth);
    }
}

static int dec_run(fp_dec *d, const unsigned char *p, const unsigned char *end)
{
#define NEED(n)                                                                            \
    do {                                                                                   \
        if ((uint64_t)(end - p) < (uint64_t)(n))                                           \
            return FP_NOT_HANDLED;                                                         \
    } while (0)
#define PUSH(o, dep)                                                                       \
    do {                                                                                   \
        int r_ = dec_push(d, (o), (dep));                                                  \
        if (r_ < 0)                                                                        \
            return r_;                                                                     \
    } while (0)

    for (;;) {
        NEED(1);
        unsigned op = *p++;
        switch (op) {
        case OP_BININT1:
            NEED(1);
            PUSH(PyLong_FromLong(p[0]), 0);
            p += 1;
            break;
        case OP_BININT2:
            NEED(2);
            PUSH(PyLong_FromLong((long)get_le(p, 2)), 0);
            p += 2;
            break;
        case OP_BININT:
            NEED(4);
            PUSH(PyLong_FromLong((long)(int32_t)(uint32_t)get_le(p, 4)), 0);
            p += 4;
            break;
        case OP_LONG1: {
            NEED(1);
            int n = p[0];
            NEED(1 + n);
            PyObject *v;
            if (n >= 1 && n <= 8) {
                uint64_t u = get_le(p + 1, n);
                if (n < 8 && (p[n] & 0x80))
                    u |= ~UINT64_C(0) << (8 * n); /* sign-extend */
                v = PyLong_FromLongLong((long long)u);
            } else if (n == 9 && p[9] == 0) {
                v = PyLong_FromUnsignedLongLong(get_le(p + 1, 8));
            } else {
                return FP_NOT_HANDLED;
            }
            PUSH(v, 0);
            p += 1 + n;
            break;
        }
        case OP_BINFLOAT: {
            NEED(8);
            uint64_t u = 0;
            for (int i = 0; i < 8; i++)
                u = (u << 8) | p[i];
            double x;
            memcpy(&x, &u, 8);
            PUSH(PyFloat_FromDouble(x), 0);
            p += 8;
            break;
        }
        case OP_SHORT_BINUNICODE:
        case OP_BINUNICODE:
        case OP_BINUNICODE8:
        case OP_SHORT_BINBYTES:
        case OP_BINBYTES:
        case OP_BINBYTES8: {
            int w = (op == OP_SHORT_BINUNICODE || op == OP_SHORT_BINBYTES) ? 1
                    : (op == OP_BINUNICODE || op == OP_BINBYTES)         ? 4
                                                                          : 8;
            NEED(w);
            uint64_t n = get_le(p, w);
            p += w;
            NEED(n); /* also bounds n by PY_SSIZE_T_MAX */
            const char *s = (const char *)p;
            p += n;
            if (op == OP_SHORT_BINBYTES || op == OP_BINBYTES || op == OP_BINBYTES8)
                PUSH(PyBytes_FromStringAndSize(s, (Py_ssize_t)n), 0);
            else /* as pickle; a decoding error is cleared into "not handled" */
                PUSH(PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, "surrogatepass"), 0);
            break;
        }
        case OP_NONE:
            PUSH(Py_NewRef(Py_None), 0);
            break;
        case OP_NEWTRUE:
            PUSH(Py_NewRef(Py_True), 0);
            break;
        case OP_NEWFALSE:
            PUSH(Py_NewRef(Py_False), 0);
            break;
        case OP_EMPTY_TUPLE:
            PUSH(PyTuple_New(0), 0);
            break;
        case OP_EMPTY_LIST:
            PUSH(PyList_New(0), 1);
            break;
        case OP_EMPTY_DICT:
            PUSH(PyDict_New(), 1);
            break;
        case OP_EMPTY_SET:
            PUSH(PySet_New(NULL), 1);
            break;
        case OP_TUPLE1:
        case OP_TUPLE2:
        case OP_TUPLE3: {
            Py_ssize_t from = d->len - (Py_ssize_t)(op - OP_TUPLE1 + 1);
            if (from < dec_fence(d))
                return FP_NOT_HANDLED;
            int dep = dec_depth_over(d, from, 1);
            if (dep < 0)
                return FP_NOT_HANDLED;
            PUSH(dec_take_tuple(d, from), (unsigned char)dep);
            break;
        }
        case OP_MARK:
            if (d->nmarks == FP_MAX_MARKS)
                return FP_NOT_HANDLED;
            d->marks[d->nmarks++] = d->len;
            break;
        case OP_TUPLE:
        case OP_FROZENSET: {
            if (!d->nmarks)
                return FP_NOT_HANDLED;
            Py_ssize_t from = d->marks[d->nmarks - 1];
            int dep = dec_depth_over(d, from, 1);
            if (dep < 0)
                return FP_NOT_HANDLED;
            d->nmarks--;
            PyObject *t = dec_take_tuple(d, from);
            if (t && op == OP_FROZENSET)
                Py_SETREF(t, PyFrozenSet_New(t));
            PUSH(t, (unsigned char)dep);
            break;
        }
        case OP_APPEND:
        case OP_SETITEM: {
            Py_ssize_t from = d->len - (op == OP_APPEND ? 1 : 2);
            if (from - 1 < dec_fence(d))
                return FP_NOT_HANDLED;
            PyObject *target = d->items[from - 1];
            if (!Py_IS_TYPE(target, op == OP_APPEND ? &PyList_Type : &PyDict_Type))
                return FP_NOT_HANDLED;
            int dep = dec_depth_over(d, from, d->depth[from - 1]);
            if (dep < 0)
                return FP_NOT_HANDLED;
            int r = op == OP_APPEND ? PyList_Append(target, d->items[from])
                                    : PyDict_SetItem(target, d->items[from], d->items[from + 1]);
            if (r < 0)
                return fp_classify_error();
            while (d->len > from)
                Py_DECREF(d->items[--d->len]);
            d->depth[from - 1] = (unsigned char)dep;
            break;
        }
        case OP_APPENDS:
        case OP_SETITEMS:
        case OP_ADDITEMS: {
            if (!d->nmarks)
                return FP_NOT_HANDLED;
            Py_ssize_t from = d->marks[d->nmarks - 1];
            Py_ssize_t outer = d->nmarks > 1 ? d->marks[d->nmarks - 2] : 0;
            if (from - 1 < outer)
                return FP_NOT_HANDLED;
            PyObject *target = d->items[from - 1];
            PyTypeObject *want = op == OP_APPENDS ? &PyList_Type
                                 : op == OP_SETITEMS ? &PyDict_Type
                                                     : &PySet_Type;
            if (!Py_IS_TYPE(target, want))
                return FP_NOT_HANDLED;
            if (op == OP_SETITEMS && ((d->len - from) & 1))
                return FP_NOT_HANDLED;
            int dep = dec_depth_over(d, from, d->depth[from - 1]);
            if (dep < 0)
                return FP_NOT_HANDLED;
            d->nmarks--;
            if (op == OP_APPENDS && PyList_GET_SIZE(target) == 0 && Py_REFCNT(target) == 1) {
                /* the usual case: replace the empty list by one built at its final size */
                PyObject *l = PyList_New(d->len - from);
                if (!l)
                    return FP_ERROR;
                for (Py_ssize_t i = from; i < d->len; i++)
                    PyList_SET_ITEM(l, i - from, d->items[i]);
                d->len = from;
                d->items[from - 1] = l;
                Py_DECREF(target);
            } else {
                for (Py_ssize_t i = from; i < d->len; i += op == OP_SETITEMS ? 2 : 1) {
                    int r = op == OP_APPENDS   ? PyList_Append(target, d->items[i])
                            : op == OP_ADDITEMS ? PySet_Add(target, d->items[i])
                                                : PyDict_SetItem(target, d->items[i],
                                                                 d->items[i + 1]);
                    if (r < 0)
                        return fp_classify_error(); /* leftovers are released by dec_clear */
                }
                while (d->len > from)
                    Py_DECREF(d->items[--d->len]);
            }
            d->depth[from - 1] = (unsigned char)dep;
            break;
        }
        case OP_STOP:
            if (p != end || d->nmarks || d->len != 1)
                return FP_NOT_HANDLED;
            return FP_OK;
        default:
            return FP_NOT_HANDLED;
        }
    }
#undef NEED
#undef PUSH
}

PyObject *mpx_fastpickle_loads(const char *data, Py_ssize_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    if (len < 4 || p[0] != OP_PROTO || p[1] != 5)
        return NULL;
    fp_dec d;
    d.items = d.items_inline;
    d.depth = d.depth_inline;
    d.len = 0;
    d.cap = FP_STACK_INLINE;
    d.nmarks = 0;
    int r = dec_run(&d, p + 2, p + len);
    PyObject *result = NULL;
    if (r == FP_OK) {
        result = d.items[0];
        d.len = 0;
    }
    dec_clear(&d);
    return result;
}

/* ---------------------------------------------------------------------------------------
 * Testing entry points
 */

PyObject *mpx_fastpickle_test_dumps(PyObject *module, PyObject *obj)
{
    PyObject *r = mpx_fastpickle_dumps(obj);
    if (!r && !PyErr_Occurred())
        Py_RETURN_NOTIMPLEMENTED;
    return r;
}

PyObject *mpx_fastpickle_test_loads(PyObject *module, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *r = mpx_fastpickle_loads(view.buf, view.len);
    PyBuffer_Release(&view);
    if (!r && !PyErr_Occurred())
        Py_RETURN_NOTIMPLEMENTED;
    return r;
}
