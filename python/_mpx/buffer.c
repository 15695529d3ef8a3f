/* _mpx.Buffer: the memory of a large out-of-band buffer received from a queue.
 *
 * A get copies each large buffer of a message (a NumPy array's data, for example) out of
 * the shared ring once, into memory that the rebuilt object then uses in place. Fresh
 * memory is the expensive part of that copy: every new page faults, and on a virtual
 * machine a fault costs more than copying the page. Plain allocations of this size come
 * straight from mmap and go back on free, so a consumer that keeps the previous array while
 * getting the next one would pay for fresh pages every time. Buffers therefore come from a
 * small per-process cache of mappings, which are reused warm. (Transparent huge pages were
 * tried: with the usual "defrag on madvise" setting a fresh mapping can stall for tens of
 * milliseconds in compaction, worse than the faults it saves.)
 *
 * The cache holds at most CACHE_SLOTS mappings and CACHE_BYTES in all; a mapping that does
 * not fit is unmapped. All of it runs with the GIL held.
 */
#include <string.h>
#include <sys/mman.h>

#include "mpxmodule.h"

#define HUGE_PAGE (2u << 20) /* alignment of the data, for the memcpy and the kernel */
#define CACHE_SLOTS 4
#define CACHE_BYTES ((size_t)256 << 20)

typedef struct {
    void *base; /* the mapping, as returned by mmap */
    size_t size;
} region;

static region cache[CACHE_SLOTS];
static size_t cached_bytes;

typedef struct {
    PyObject_HEAD
    region mem;      /* owned mapping */
    void *data;      /* start of the buffer inside mem (huge-page aligned) */
    Py_ssize_t len;
} BufferObject;

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

/* A mapping with at least len usable bytes after aligning to a huge page. */
static int region_get(size_t len, region *out)
{
    size_t want = round_up(len, HUGE_PAGE) + HUGE_PAGE;
    int best = -1;
    for (int i = 0; i < CACHE_SLOTS; i++)
        if (cache[i].base && cache[i].size >= want && cache[i].size <= 2 * want &&
            (best < 0 || cache[i].size < cache[best].size))
            best = i;
    if (best >= 0) {
        *out = cache[best];
        cached_bytes -= cache[best].size;
        cache[best] = (region){NULL, 0};
        return 0;
    }
    void *p = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    *out = (region){p, want};
    return 0;
}

static void region_put(region r)
{
    if (r.size <= CACHE_BYTES - cached_bytes || cached_bytes > CACHE_BYTES) {
        for (int i = 0; i < CACHE_SLOTS; i++)
            if (!cache[i].base && cached_bytes + r.size <= CACHE_BYTES) {
                cache[i] = r;
                cached_bytes += r.size;
                return;
            }
    }
    munmap(r.base, r.size);
}

PyObject *mpx_buffer_from(mpx_state *st, const void *src, size_t len)
{
    PyTypeObject *tp = (PyTypeObject *)st->BufferType;
    BufferObject *b = PyObject_New(BufferObject, tp);
    if (!b)
        return NULL;
    if (region_get(len, &b->mem) < 0) {
        b->mem = (region){NULL, 0};
        b->data = NULL;
        Py_DECREF(b);
        return PyErr_NoMemory();
    }
    uintptr_t start = round_up((uintptr_t)b->mem.base, HUGE_PAGE);
    b->data = (void *)start;
    b->len = (Py_ssize_t)len;
    void *dst = b->data;
    /* Large messages are consumed without the queue lock (libmpx claims them), so the copy
     * can run without the GIL too. */
    Py_BEGIN_ALLOW_THREADS
    memcpy(dst, src, len);
    Py_END_ALLOW_THREADS
    return (PyObject *)b;
}

static void Buffer_dealloc(BufferObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->mem.base)
        region_put(self->mem);
    PyObject_Free(self);
    Py_DECREF(tp);
}

static int Buffer_getbuffer(BufferObject *self, Py_buffer *view, int flags)
{
    return PyBuffer_FillInfo(view, (PyObject *)self, self->data, self->len, 0, flags);
}

static Py_ssize_t Buffer_length(BufferObject *self)
{
    return self->len;
}

static PyType_Slot Buffer_slots[] = {
    {Py_tp_doc, "Writable memory holding a large buffer received from a queue; supports the "
                "buffer protocol."},
    {Py_tp_dealloc, Buffer_dealloc},
    {Py_bf_getbuffer, Buffer_getbuffer},
    {Py_sq_length, Buffer_length},
    {0, NULL},
};

static PyType_Spec Buffer_spec = {
    .name = "mpservice._mpx.Buffer",
    .basicsize = sizeof(BufferObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = Buffer_slots,
};

int mpx_buffer_type_init(PyObject *module, mpx_state *st)
{
    st->BufferType = PyType_FromModuleAndSpec(module, &Buffer_spec, NULL);
    if (!st->BufferType)
        return -1;
    return PyModule_AddObjectRef(module, "Buffer", st->BufferType);
}
