/*
 * LRU cache model. The recency list and the hash chains are threaded through one pool of entries
 * by index (not pointer), so the pool can be reallocated as it grows. The hash table doubles when
 * the count reaches the bucket count; block numbers are mixed with a multiplicative hash, since
 * neighbouring blocks of one file are read together.
 */
#include "sim_lru.h"
#include "shoal_array.h"
#include "shoal_error.h"

#include <stdlib.h>
#include <string.h>

#define NIL UINT32_MAX

static uint32_t slot(uint32_t block, uint32_t n_buckets)
{
    return (uint32_t)(((uint64_t)block * 0x9e3779b97f4a7c15ull) >> 32) & (n_buckets - 1);
}

void sim_lru_create(sim_lru *l, uint64_t cap_bytes)
{
    memset(l, 0, sizeof *l);
    l->cap_bytes = cap_bytes;
    l->free_head = l->mru = l->lru = NIL;
}

void sim_lru_destroy(sim_lru *l)
{
    free(l->pool);
    free(l->buckets);
    memset(l, 0, sizeof *l);
}

static uint32_t find(const sim_lru *l, uint32_t block)
{
    if (!l->n_buckets)
        return NIL;
    for (uint32_t v = l->buckets[slot(block, l->n_buckets)]; v; v = l->pool[v - 1].hnext)
        if (l->pool[v - 1].block == block)
            return v - 1;
    return NIL;
}

static void unlink_recency(sim_lru *l, uint32_t e)
{
    sim_lru_entry *x = &l->pool[e];
    if (x->prev != NIL)
        l->pool[x->prev].next = x->next;
    else
        l->mru = x->next;
    if (x->next != NIL)
        l->pool[x->next].prev = x->prev;
    else
        l->lru = x->prev;
}

static void push_front(sim_lru *l, uint32_t e)
{
    sim_lru_entry *x = &l->pool[e];
    x->prev = NIL;
    x->next = l->mru;
    if (l->mru != NIL)
        l->pool[l->mru].prev = e;
    l->mru = e;
    if (l->lru == NIL)
        l->lru = e;
}

bool sim_lru_touch(sim_lru *l, uint32_t block)
{
    uint32_t e = find(l, block);
    if (e == NIL)
        return false;
    if (l->mru != e) {
        unlink_recency(l, e);
        push_front(l, e);
    }
    return true;
}

static void evict_one(sim_lru *l)
{
    uint32_t e = l->lru;
    sim_lru_entry *x = &l->pool[e];
    unlink_recency(l, e);
    uint32_t *link = &l->buckets[slot(x->block, l->n_buckets)];
    while (*link != e + 1)
        link = &l->pool[*link - 1].hnext;
    *link = x->hnext;
    l->used_bytes -= x->size;
    l->count--;
    l->evictions++;
    x->hnext = l->free_head == NIL ? 0 : l->free_head + 1;
    l->free_head = e;
}

static int grow_buckets(sim_lru *l)
{
    uint32_t n = l->n_buckets ? l->n_buckets * 2 : 64;
    uint32_t *b = calloc(n, sizeof *b);
    if (!b)
        return shoal_error_set(SHOAL_ERR_NOMEM, "sim: cache index of %u buckets", n);
    for (uint32_t e = l->mru; e != NIL; e = l->pool[e].next) {
        uint32_t s = slot(l->pool[e].block, n);
        l->pool[e].hnext = b[s];
        b[s] = e + 1;
    }
    free(l->buckets);
    l->buckets = b;
    l->n_buckets = n;
    return 0;
}

int sim_lru_insert(sim_lru *l, uint32_t block, uint32_t size)
{
    if (size > l->cap_bytes)
        return 0;
    if (sim_lru_touch(l, block))
        return 0;
    if (l->no_evict && l->used_bytes + size > l->cap_bytes)
        return 0;
    while (l->used_bytes + size > l->cap_bytes)
        evict_one(l);
    if (l->count + 1 > l->n_buckets && grow_buckets(l) < 0)
        return -1;
    uint32_t e;
    if (l->free_head != NIL) {
        e = l->free_head;
        uint32_t next = l->pool[e].hnext;
        l->free_head = next ? next - 1 : NIL;
    } else {
        if (SHOAL_ARRAY_GROW(l->pool, l->n_pool, l->cap_pool) < 0)
            return shoal_error_wrap("sim: cache pool of %u entries", l->n_pool + 1);
        e = l->n_pool++;
    }
    sim_lru_entry *x = &l->pool[e];
    x->block = block;
    x->size = size;
    uint32_t s = slot(block, l->n_buckets);
    x->hnext = l->buckets[s];
    l->buckets[s] = e + 1;
    push_front(l, e);
    l->used_bytes += size;
    l->count++;
    return 0;
}

bool sim_lru_evict(sim_lru *l)
{
    if (l->lru == NIL)
        return false;
    evict_one(l);
    return true;
}

/* ---- the two-class store ---- */

void sim_store_create(sim_store *s, uint64_t cap, unsigned near_percent, sim_policy policy)
{
    s->cap = cap;
    s->near_cap = cap / 100 * near_percent + cap % 100 * near_percent / 100;
    s->no_evict = policy == SIM_POLICY_NO_EVICT;
    /* Each class's own bound; the shared capacity is enforced by sim_store_put. */
    sim_lru_create(&s->owned, cap);
    sim_lru_create(&s->near, s->near_cap);
}

void sim_store_destroy(sim_store *s)
{
    sim_lru_destroy(&s->owned);
    sim_lru_destroy(&s->near);
}

bool sim_store_touch(sim_store *s, uint32_t block) { return sim_lru_touch(&s->owned, block) || sim_lru_touch(&s->near, block); }

uint64_t sim_store_used(const sim_store *s) { return s->owned.used_bytes + s->near.used_bytes; }

int sim_store_put(sim_store *s, uint32_t block, uint32_t size, bool near)
{
    if (sim_store_touch(s, block))
        return 0;
    if (near) {
        if (size > s->near_cap)
            return 0;
        /* Room in the near share (near copies only), then in the whole store (never an owned block). */
        while (s->near.used_bytes + size > s->near_cap || sim_store_used(s) + size > s->cap) {
            if (s->no_evict || !sim_lru_evict(&s->near))
                return 0;
        }
        return sim_lru_insert(&s->near, block, size);
    }
    if (size > s->cap)
        return 0;
    while (sim_store_used(s) + size > s->cap) {
        if (s->no_evict)
            return 0;
        if (!sim_lru_evict(&s->near) && !sim_lru_evict(&s->owned))
            return 0;
    }
    return sim_lru_insert(&s->owned, block, size);
}
