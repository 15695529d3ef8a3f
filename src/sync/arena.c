/* Arenas: the shared segments that hold synchronization objects (docs/sync.md).
 *
 * One memfd holds up to a thousand objects, so a program with many locks does not hold a
 * descriptor per lock (the stdlib's named semaphores need none either). Each process keeps
 * a registry of the arenas it has mapped, keyed by the memfd's inode: attaching another
 * object of a known arena reuses the mapping and the descriptor, and an arena is unmapped
 * when the last handle on it in this process goes. Slots are never reused, so a handle in
 * flight to another process (a descriptor and an offset) can never name a different object
 * than the one sent: the arena lives as long as any descriptor or mapping of it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mpx/error.h"
#include "sync_internal.h"

struct mpx__arena {
    dev_t dev;
    ino_t ino;
    int fd;                           /* owned */
    struct mpx__arena_header *base;   /* owned mapping of `size` bytes */
    uint32_t size;
    unsigned refs;                    /* handles in this process, plus one while current */
    struct mpx__arena *next;
};

/* The registry. Guarded by reg_lock, which is held across fork() so that a child never
 * inherits it locked (the child's copy of every record stays valid: mappings and
 * descriptors are inherited). */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mpx__arena *arenas;
static struct mpx__arena *current; /* where new objects go; holds a reference */
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;

static void reg_prepare(void)
{
    pthread_mutex_lock(&reg_lock);
}

static void reg_unlock(void)
{
    pthread_mutex_unlock(&reg_lock);
}

static void reg_init(void)
{
    pthread_atfork(reg_prepare, reg_unlock, reg_unlock);
}

static void reg_enter(void)
{
    pthread_once(&reg_once, reg_init);
    pthread_mutex_lock(&reg_lock);
}

static void arena_unref(struct mpx__arena *a)
{
    if (--a->refs > 0)
        return;
    for (struct mpx__arena **pp = &arenas; *pp; pp = &(*pp)->next)
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    munmap(a->base, a->size);
    close(a->fd);
    free(a);
}

/* Takes ownership of fd (closed on failure). */
static int arena_add(int fd, struct mpx__arena **out)
{
    struct stat st;
    int r;
    struct mpx__arena *a = NULL;
    void *p = MAP_FAILED;
    if (fstat(fd, &st) < 0) {
        r = -errno;
        goto fail;
    }
    if (!(a = calloc(1, sizeof *a))) {
        r = -ENOMEM;
        goto fail;
    }
    p = mmap(NULL, MPX__ARENA_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        r = -errno;
        goto fail;
    }
    a->dev = st.st_dev;
    a->ino = st.st_ino;
    a->fd = fd;
    a->base = p;
    a->size = MPX__ARENA_SIZE;
    a->refs = 1;
    a->next = arenas;
    arenas = a;
    *out = a;
    return 0;
fail:
    free(a);
    close(fd);
    return r;
}

static int arena_new(struct mpx__arena **out)
{
    int fd = mpx__memfd_create("mpx-sync");
    if (fd < 0)
        return fd;
    int r = mpx__memfd_grow(fd, MPX__ARENA_SIZE);
    if (r == 0)
        r = mpx__memfd_seal(fd);
    if (r < 0) {
        close(fd);
        return r;
    }
    if ((r = arena_add(fd, out)) < 0)
        return r;
    struct mpx__arena_header *h = (*out)->base;
    h->magic = MPX__ARENA_MAGIC;
    h->version = MPX__ARENA_VERSION;
    h->size = MPX__ARENA_SIZE;
    h->slot_size = MPX__SYNC_SLOT;
    atomic_store_explicit(&h->next_slot, 1, memory_order_release);
    return 0;
}

static uint32_t slots_for(size_t size)
{
    return (uint32_t)((size + MPX__SYNC_SLOT - 1) / MPX__SYNC_SLOT);
}

/* Claims n slots of the current arena; 0 when it has no room. The counter is shared
 * because a fork child inherits the parent's current arena. */
static uint32_t claim_slots(struct mpx__arena *a, uint32_t n)
{
    uint32_t total = a->size / MPX__SYNC_SLOT;
    uint32_t s = atomic_load_explicit(&a->base->next_slot, memory_order_relaxed);
    do {
        if (s == 0 || s > total || n > total - s)
            return 0;
    } while (!atomic_compare_exchange_weak_explicit(&a->base->next_slot, &s, s + n,
                                                    memory_order_relaxed,
                                                    memory_order_relaxed));
    return s;
}

int mpx__sync_alloc(struct mpx__sync_obj *o, uint32_t kind, size_t size)
{
    uint32_t n = slots_for(size);
    int r = 0;
    reg_enter();
    uint32_t slot = current ? claim_slots(current, n) : 0;
    if (slot == 0) {
        struct mpx__arena *a;
        if ((r = arena_new(&a)) < 0)
            goto done;
        if (current)
            arena_unref(current);
        current = a; /* the reference from arena_new() is the "current" one */
        slot = claim_slots(current, n);
    }
    current->refs++;
    o->arena = current;
    o->offset = (uint64_t)slot * MPX__SYNC_SLOT;
    o->p = (unsigned char *)current->base + o->offset;
    struct mpx__object_header *oh = o->p;
    oh->nslots = n;
    atomic_store_explicit((_Atomic uint32_t *)&oh->kind, kind, memory_order_release);
done:
    pthread_mutex_unlock(&reg_lock);
    return r;
}

static int validate_arena(const struct mpx__arena_header *h)
{
    if (h->magic != MPX__ARENA_MAGIC)
        return MPX_EBADSEG;
    if (h->version != MPX__ARENA_VERSION)
        return MPX_EVERSION;
    if (h->size != MPX__ARENA_SIZE || h->slot_size != MPX__SYNC_SLOT)
        return MPX_EBADSEG;
    return 0;
}

int mpx__sync_attach(struct mpx__sync_obj *o, int fd, uint64_t offset, uint32_t kind,
                     size_t size)
{
    if (fd < 0)
        return -EBADF;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (offset < MPX__SYNC_SLOT || offset % MPX__SYNC_SLOT ||
        offset > MPX__ARENA_SIZE - slots_for(size) * MPX__SYNC_SLOT)
        return MPX_EBADSEG;
    int r = 0;
    reg_enter();
    struct mpx__arena *a;
    for (a = arenas; a; a = a->next)
        if (a->dev == st.st_dev && a->ino == st.st_ino)
            break;
    if (a) {
        a->refs++;
    } else {
        /* A new arena for this process: it must be one of ours, whole, and sealed so that
         * nobody can shrink it under our mapping. */
        uint64_t fsize;
        if ((r = mpx__memfd_check(fd)) < 0) {
            r = r == -EINVAL ? MPX_EBADSEG : r;
            goto done;
        }
        if ((r = mpx__fd_size(fd, &fsize)) < 0)
            goto done;
        if (fsize != MPX__ARENA_SIZE) {
            r = MPX_EBADSEG;
            goto done;
        }
        int own = mpx__dup_cloexec(fd);
        if (own < 0) {
            r = own;
            goto done;
        }
        if ((r = arena_add(own, &a)) < 0)
            goto done;
        if ((r = validate_arena(a->base)) < 0) {
            arena_unref(a);
            goto done;
        }
    }
    const struct mpx__object_header *oh =
        (const void *)((unsigned char *)a->base + offset);
    uint32_t used = atomic_load_explicit(&a->base->next_slot, memory_order_acquire);
    if (atomic_load_explicit((const _Atomic uint32_t *)&oh->kind, memory_order_acquire) !=
            kind ||
        oh->nslots != slots_for(size) || offset / MPX__SYNC_SLOT + oh->nslots > used) {
        arena_unref(a);
        r = MPX_EBADSEG;
        goto done;
    }
    o->arena = a;
    o->offset = offset;
    o->p = (unsigned char *)a->base + offset;
done:
    pthread_mutex_unlock(&reg_lock);
    return r;
}

void mpx__sync_detach(struct mpx__sync_obj *o)
{
    if (!o->arena)
        return;
    reg_enter();
    /* The last handle on the current arena: let the arena go too, so that a process that
     * has destroyed every object holds no descriptor (the next object starts a new one). */
    if (o->arena == current && current->refs == 2) {
        current = NULL;
        arena_unref(o->arena);
    }
    arena_unref(o->arena);
    pthread_mutex_unlock(&reg_lock);
    o->arena = NULL;
    o->p = NULL;
}

int mpx__sync_fd(const struct mpx__sync_obj *o)
{
    return o->arena ? o->arena->fd : -EINVAL;
}
