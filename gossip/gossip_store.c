/*
 * Where member views and their metadata live (docs/gossip.md, "Member store"); gossip.c runs the
 * protocol over these tables.
 *
 * Metadata. Without a pool every member holds a private copy of its metadata (the daemon: one
 * view, a few hundred members). A pool interns each distinct value once, reference-counted, in an
 * open-addressing table with tombstones, so thousands of instances in one process (shoal-sim)
 * share one copy per member instead of one per instance per member.
 *
 * Slots and views. Every node id the store has seen gets a slot; the index is open addressing over
 * id hashes, at most 3/4 full, rebuilt when it grows (or after a solo store freed reaped slots).
 * Base entries live in pages of 1,024 so a growing store never moves an entry. A solo store (one
 * instance) has no private entries: the base is its view. A shared store keeps, per view, a small
 * open-addressing table of the entries where that view differs from the base (copy-on-write on the
 * first change); gossip_member_store_fold() moves entries every view holds alike back into the
 * base. `ndelta` counts per slot the views holding their own entry, so a fold looks only at slots
 * every view has copied.
 */
#include "gossip_sim.h"
#include "gossip_store.h"
#include "shoal_array.h"
#include "shoal_error.h"
#include "shoal_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NONE GOSSIP_NONE
#define PAGE_BITS GOSSIP_PAGE_BITS
#define PAGE GOSSIP_PAGE

const member gossip_absent_member = {.accuser = NONE, .bc_prev = NONE, .bc_next = NONE, .susp = NONE,
                                     .state = GOSSIP_ABSENT};

/* ---- metadata: private copies, or interned in a pool shared by many instances ---- */

bool gossip_meta_same_identity(const gossip_meta *a, const gossip_meta *b)
{
    return strcmp(a->id, b->id) == 0 && shoal_addr_eq(&a->addr, &b->addr) &&
           strcmp(a->zone, b->zone) == 0 && memcmp(a->curve_public, b->curve_public, 32) == 0 &&
           a->capacity == b->capacity && a->serving == b->serving &&
           a->proto_version == b->proto_version && a->block_size == b->block_size;
}

bool gossip_meta_eq(const gossip_meta *a, const gossip_meta *b)
{
    return gossip_meta_same_identity(a, b) && a->cache_used_known == b->cache_used_known &&
           a->cache_used == b->cache_used;
}

uint32_t gossip_id_hash(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    /* FNV-1a's low bits are weak on short similar ids ("n1", "n2"): finish with murmur3's mix. */
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    return h ^ (h >> 16);
}

typedef struct meta_ent {
    gossip_meta m; /* first, so a gossip_meta pointer is its entry */
    uint32_t refs, hash;
} meta_ent;

struct gossip_meta_pool {
    meta_ent **slots;
    size_t cap, used, tombs;
};

static uint32_t meta_hash(const gossip_meta *m)
{
    uint32_t h = gossip_id_hash(m->id) ^ gossip_id_hash(m->zone) * 31u;
    const uint8_t *parts[] = {m->addr.ip, m->curve_public};
    size_t lens[] = {sizeof m->addr.ip, sizeof m->curve_public};
    for (size_t p = 0; p < 2; p++)
        for (size_t i = 0; i < lens[p]; i++)
            h = (h ^ parts[p][i]) * 16777619u;
    uint64_t nums[] = {m->addr.family, m->addr.port, m->capacity, m->serving, m->proto_version, m->block_size};
    for (size_t i = 0; i < 6; i++)
        h = (h ^ (uint32_t)nums[i] ^ (uint32_t)(nums[i] >> 32)) * 16777619u;
    return h;
}

#define POOL_TOMB ((meta_ent *)1)

gossip_meta_pool *gossip_meta_pool_new(void)
{
    gossip_meta_pool *p = calloc(1, sizeof *p);
    if (p)
        p->slots = calloc(p->cap = 1024, sizeof *p->slots);
    if (!p || !p->slots) {
        free(p);
        shoal_error_set(SHOAL_ERR_NOMEM, "gossip: metadata pool");
        return NULL;
    }
    return p;
}

void gossip_meta_pool_delete(gossip_meta_pool *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->cap; i++)
        if (p->slots[i] > POOL_TOMB)
            free(p->slots[i]);
    free(p->slots);
    free(p);
}

static int pool_grow(gossip_meta_pool *p)
{
    size_t cap = p->used * 4 > p->cap ? p->cap * 2 : p->cap;
    meta_ent **s = calloc(cap, sizeof *s);
    if (!s)
        return -1;
    for (size_t i = 0; i < p->cap; i++) {
        meta_ent *e = p->slots[i];
        if (e <= POOL_TOMB)
            continue;
        size_t j = e->hash & (cap - 1);
        while (s[j])
            j = (j + 1) & (cap - 1);
        s[j] = e;
    }
    free(p->slots);
    p->slots = s;
    p->cap = cap;
    p->tombs = 0;
    return 0;
}

const gossip_meta *gossip_meta_get(gossip_meta_pool *p, const gossip_meta *m)
{
    if (!p) {
        gossip_meta *copy = malloc(sizeof *copy);
        if (copy)
            *copy = *m;
        return copy;
    }
    if ((p->used + p->tombs + 1) * 2 > p->cap && pool_grow(p) < 0)
        return NULL;
    uint32_t h = meta_hash(m);
    size_t j = h & (p->cap - 1), free_at = SIZE_MAX;
    for (; p->slots[j]; j = (j + 1) & (p->cap - 1)) {
        meta_ent *e = p->slots[j];
        if (e == POOL_TOMB) {
            if (free_at == SIZE_MAX)
                free_at = j;
            continue;
        }
        if (e->hash == h && gossip_meta_eq(&e->m, m)) {
            e->refs++;
            return &e->m;
        }
    }
    meta_ent *e = malloc(sizeof *e);
    if (!e)
        return NULL;
    e->m = *m;
    e->refs = 1;
    e->hash = h;
    if (free_at != SIZE_MAX) {
        j = free_at;
        p->tombs--;
    }
    p->slots[j] = e;
    p->used++;
    return &e->m;
}

void gossip_meta_put(gossip_meta_pool *p, const gossip_meta *m)
{
    if (!m)
        return;
    if (!p) {
        free((gossip_meta *)m);
        return;
    }
    meta_ent *e = (meta_ent *)m;
    if (--e->refs > 0)
        return;
    for (size_t j = e->hash & (p->cap - 1); p->slots[j]; j = (j + 1) & (p->cap - 1)) {
        if (p->slots[j] == e) {
            p->slots[j] = POOL_TOMB;
            p->tombs++;
            break;
        }
    }
    p->used--;
    free(e);
}

const gossip_meta *gossip_meta_ref(gossip_meta_pool *p, const gossip_meta *m)
{
    if (!m)
        return NULL;
    if (p) {
        ((meta_ent *)m)->refs++;
        return m;
    }
    return gossip_meta_get(p, m);
}


/* ---- one view's own entries ---- */

static void dplace(uint32_t *keys, member **vals, uint32_t cap, uint32_t s, member *e)
{
    uint32_t j = (s * 2654435761u) & (cap - 1);
    while (keys[j] != NONE)
        j = (j + 1) & (cap - 1);
    keys[j] = s;
    vals[j] = e;
}

void gossip_view_put(gossip_member_store *st, gossip_view *v, uint32_t s, const member *e, const char *who)
{
    /* A view that cannot hold its own entry would silently behave differently: abort instead. */
    SHOAL_ASSERT(!gossip_view_get(v, s));
    if ((v->n + 1) * 2 > v->cap) {
        uint32_t cap = v->cap ? v->cap * 2 : 16;
        uint32_t *k = malloc((size_t)cap * sizeof *k);
        member **vals = malloc((size_t)cap * sizeof *vals);
        if (!k || !vals)
            goto nomem;
        memset(k, 0xff, (size_t)cap * sizeof *k);
        for (uint32_t j = 0; j < v->cap; j++)
            if (v->keys[j] != NONE)
                dplace(k, vals, cap, v->keys[j], v->vals[j]);
        free(v->keys);
        free(v->vals);
        v->keys = k;
        v->vals = vals;
        v->cap = cap;
    }
    member *d = malloc(sizeof *d);
    if (!d)
        goto nomem;
    *d = *e;
    dplace(v->keys, v->vals, v->cap, s, d);
    v->n++;
    st->ndelta[s]++;
    st->n_private++;
    return;
nomem:
    LOG_ERROR("gossip", "out_of_memory", "node=%s private member entries=%u", who, v->n);
    abort();
}

void gossip_view_del(gossip_member_store *st, gossip_view *v, uint32_t s)
{
    uint32_t mask = v->cap - 1, j = (s * 2654435761u) & mask;
    while (v->keys[j] != s) {
        SHOAL_ASSERT(v->keys[j] != NONE); /* the entry exists */
        j = (j + 1) & mask;
    }
    gossip_meta_put(st->pool, v->vals[j]->meta);
    free(v->vals[j]);
    v->keys[j] = NONE;
    v->n--;
    st->ndelta[s]--;
    st->n_private--;
    /* Backward-shift deletion keeps every probe sequence unbroken. */
    for (uint32_t k = (j + 1) & mask; v->keys[k] != NONE; k = (k + 1) & mask) {
        uint32_t key = v->keys[k];
        member *e = v->vals[k];
        v->keys[k] = NONE;
        dplace(v->keys, v->vals, v->cap, key, e);
    }
}

member *gossip_store_get_w(gossip_member_store *st, gossip_view *v, uint32_t s, const char *who)
{
    if (st->solo)
        return gossip_base_at(st, s);
    member *d = gossip_view_get(v, s);
    if (d)
        return d;
    gossip_view_put(st, v, s, gossip_base_at(st, s), who);
    d = gossip_view_get(v, s);
    d->meta = gossip_meta_ref(st->pool, d->meta);
    return d;
}

/* ---- slots: ids to slots ---- */

uint32_t gossip_store_find(const gossip_member_store *st, const char *id)
{
    uint32_t mask = st->index_cap - 1, h = gossip_id_hash(id);
    for (uint32_t s = h & mask;; s = (s + 1) & mask) {
        uint64_t v = st->index[s];
        if (v == UINT64_MAX)
            return NONE;
        if ((uint32_t)(v >> 32) == h && strcmp(st->ids[(uint32_t)v], id) == 0)
            return (uint32_t)v;
    }
}

static void index_put(gossip_member_store *st, uint32_t slot)
{
    uint32_t mask = st->index_cap - 1, h = gossip_id_hash(st->ids[slot]);
    uint32_t s = h & mask;
    while (st->index[s] != UINT64_MAX)
        s = (s + 1) & mask;
    st->index[s] = (uint64_t)h << 32 | slot;
}

static int index_rebuild(gossip_member_store *st, uint32_t cap)
{
    uint64_t *ix = malloc((size_t)cap * sizeof *ix);
    if (!ix)
        return shoal_error_set(SHOAL_ERR_NOMEM, "gossip: member index of %u slots", cap);
    free(st->index);
    st->index = ix;
    st->index_cap = cap;
    memset(ix, 0xff, (size_t)cap * sizeof *ix);
    for (uint32_t s = 0; s < st->n_slots; s++)
        if (st->ids[s][0])
            index_put(st, s);
    return 0;
}

int gossip_store_reindex(gossip_member_store *st) { return index_rebuild(st, st->index_cap); }

uint32_t gossip_store_slot(gossip_member_store *st, const char *id)
{
    uint32_t s = gossip_store_find(st, id);
    if (s != NONE)
        return s;
    if (st->n_free) {
        s = st->free_slots[--st->n_free];
    } else {
        if (st->n_slots == st->cap_slots) {
            uint32_t cap = st->cap_slots ? st->cap_slots * 2 : 64;
            char(*ids)[GOSSIP_ID_MAX + 1] = realloc(st->ids, (size_t)cap * sizeof *ids);
            if (ids)
                st->ids = ids;
            uint32_t *nd = ids ? realloc(st->ndelta, (size_t)cap * sizeof *nd) : NULL;
            if (!nd)
                return NONE;
            st->ndelta = nd;
            st->cap_slots = cap;
        }
        if (st->n_slots >> PAGE_BITS >= st->n_pages) {
            if (SHOAL_ARRAY_GROW(st->pages, st->n_pages, st->cap_pages) < 0)
                return NONE;
            if (!(st->pages[st->n_pages] = malloc(PAGE * sizeof(member))))
                return NONE;
            st->n_pages++;
        }
        s = st->n_slots++;
        st->ndelta[s] = 0;
    }
    snprintf(st->ids[s], sizeof st->ids[s], "%s", id);
    *gossip_base_at(st, s) = gossip_absent_member;
    /* Load factor up to 3/4: the index is a large part of a large store's memory. A rebuild
     * indexes every named slot, this one included. */
    if ((st->n_slots - st->n_free) * 4 > st->index_cap * 3) {
        if (index_rebuild(st, st->index_cap * 2) < 0) {
            st->ids[s][0] = '\0';
            if (s == st->n_slots - 1)
                st->n_slots--;
            else
                st->free_slots[st->n_free++] = s;
            return NONE;
        }
    } else {
        index_put(st, s);
    }
    return s;
}

bool gossip_store_free_slot(gossip_member_store *st, uint32_t s)
{
    SHOAL_ASSERT(st->solo); /* a shared store keeps slots for good: other views may still name them */
    if (SHOAL_ARRAY_GROW(st->free_slots, st->n_free, st->cap_free) < 0)
        return false;
    st->free_slots[st->n_free++] = s;
    st->ids[s][0] = '\0';
    return true;
}

/* ---- stores ---- */

static gossip_member_store *st_new(bool share, bool solo)
{
    gossip_member_store *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->share = share;
    st->solo = solo;
    st->rx = malloc(sizeof *st->rx);
    if (!st->rx || index_rebuild(st, 32) < 0) {
        free(st->rx);
        free(st);
        return NULL;
    }
    return st;
}

gossip_member_store *gossip_member_store_new(bool share)
{
    gossip_member_store *st = st_new(share, false);
    if (!st)
        shoal_error_set(SHOAL_ERR_NOMEM, "gossip: member store");
    return st;
}

gossip_member_store *gossip_store_new_solo(gossip_meta_pool *pool)
{
    gossip_member_store *st = st_new(false, true);
    if (st)
        st->pool = pool;
    return st;
}

static void st_free(gossip_member_store *st)
{
    for (uint32_t s = 0; s < st->n_slots; s++) {
        const gossip_meta *m = gossip_base_at(st, s)->meta;
        if (!m)
            continue;
        if (st->solo)
            gossip_meta_put(st->pool, m);
        else
            ((meta_ent *)m)->refs--; /* shared stores always use a pool, freed after the store */
    }
    for (uint32_t p = 0; p < st->n_pages; p++)
        free(st->pages[p]);
    free(st->pages);
    free(st->ids);
    free(st->ndelta);
    free(st->index);
    free(st->free_slots);
    free(st->views);
    free(st->rx);
    free(st);
}

void gossip_store_free_solo(gossip_member_store *st)
{
    SHOAL_ASSERT(st->solo);
    st_free(st);
}

void gossip_member_store_delete(gossip_member_store *st)
{
    if (!st)
        return;
    SHOAL_ASSERT(!st->solo && st->n_views == 0); /* every instance was deleted first */
    st_free(st);
}

void gossip_member_store_stats(const gossip_member_store *st, size_t *base, size_t *private_entries)
{
    *base = st->n_base;
    *private_entries = st->n_private;
}

/* ---- views of a shared store ---- */

int gossip_store_attach(gossip_member_store *st, gossip_view *v, gossip_meta_pool *pool, const char *who)
{
    SHOAL_ASSERT(!st->solo && pool);
    SHOAL_ASSERT(!st->pool || st->pool == pool); /* one pool for every view of a store */
    if (SHOAL_ARRAY_GROW(st->views, st->n_views, st->cap_views) < 0)
        return shoal_error_wrap("gossip: views of a member store");
    st->pool = pool;
    v->ix = st->n_views;
    st->views[st->n_views++] = v;
    /* A new view knows nothing the base holds: it starts with its own ABSENT entries. */
    for (uint32_t s = 0; s < st->n_slots; s++)
        if (gossip_present(gossip_base_at(st, s)))
            gossip_view_put(st, v, s, &gossip_absent_member, who);
    return 0;
}

void gossip_store_detach(gossip_member_store *st, gossip_view *v)
{
    for (uint32_t j = 0; j < v->cap; j++) {
        if (v->keys[j] == NONE)
            continue;
        gossip_meta_put(st->pool, v->vals[j]->meta);
        free(v->vals[j]);
        st->ndelta[v->keys[j]]--;
        st->n_private--;
    }
    if (v->ix != NONE) {
        SHOAL_ASSERT(st->views[v->ix] == v);
        st->views[v->ix] = st->views[--st->n_views];
        st->views[v->ix]->ix = v->ix;
    }
    free(v->keys);
    free(v->vals);
    *v = (gossip_view){.ix = NONE};
}

size_t gossip_member_store_fold(gossip_member_store *st)
{
    if (!st->share || st->n_views == 0)
        return 0;
    gossip_view *v0 = st->views[0];
    uint32_t *cand = malloc(((size_t)v0->n + 1) * sizeof *cand);
    if (!cand)
        return 0;
    uint32_t nc = 0;
    for (uint32_t j = 0; j < v0->cap; j++) {
        uint32_t s = v0->keys[j];
        if (s != NONE && st->ndelta[s] == st->n_views && gossip_idle(v0->vals[j]))
            cand[nc++] = s;
    }
    size_t folded = 0;
    for (uint32_t c = 0; c < nc; c++) {
        uint32_t s = cand[c];
        const member *e0 = gossip_view_get(v0, s);
        bool same = true;
        for (uint32_t v = 1; v < st->n_views && same; v++) {
            const member *e = gossip_view_get(st->views[v], s);
            same = e && gossip_idle(e) && gossip_fields_eq(e, e0);
        }
        if (!same)
            continue;
        member *b = gossip_base_at(st, s);
        st->n_base += (size_t)gossip_present(e0) - (size_t)gossip_present(b);
        if (b->meta)
            gossip_meta_put(st->pool, b->meta);
        *b = *e0;
        b->meta = gossip_meta_ref(st->pool, e0->meta);
        b->bc_prev = b->bc_next = NONE;
        for (uint32_t v = 0; v < st->n_views; v++)
            gossip_view_del(st, st->views[v], s);
        folded++;
    }
    free(cand);
    return folded;
}
