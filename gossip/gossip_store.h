/*
 * gossip_store (private to gossip/): where member views and their metadata live. gossip.c runs the
 * protocol over these tables; gossip_store.c owns their memory (docs/gossip.md, "Member store").
 *
 * Members are numbered by slot: a store maps every node id it has seen to a slot, and a view is,
 * per slot, its own entry when it has one, else the base entry (ABSENT when nobody put one there).
 * A store owned by one instance (`solo`, the daemon) has no private entries: the base is the view.
 * Metadata values are private copies, or interned and reference-counted in a gossip_meta_pool.
 *
 * Nothing here is thread-safe: one thread drives every instance of a store. Functions that can run
 * out of memory say what they do then; the few that cannot go on (a view that cannot take its own
 * copy of an entry would silently diverge) log and abort.
 */
#ifndef SHOAL_GOSSIP_STORE_H
#define SHOAL_GOSSIP_STORE_H

#include "gossip.h"
#include "gossip_proto.h"

#include "shoal_assert.h"
#include <stdbool.h>
#include <stdint.h>

#define GOSSIP_NONE UINT32_MAX /* no slot */
#define GOSSIP_ABSENT 0xffu    /* member state of a slot this view does not hold */
#define GOSSIP_PAGE_BITS 10
#define GOSSIP_PAGE (1u << GOSSIP_PAGE_BITS)

/*
 * One member as one view holds it. The view fields (meta, incarnation, state_at, accuser, state)
 * are what the view knows; bc_* and susp are this instance's work on the member (a queued
 * broadcast, a running suspicion). `h` hashes the view fields (gossip.c, member_hash()).
 */
typedef struct member {
    const gossip_meta *meta; /* from gossip_meta_get(); released with gossip_meta_put(); NULL when ABSENT */
    uint64_t incarnation;
    uint64_t state_at;
    uint64_t h;
    uint32_t accuser; /* slot of who suspected / declared dead, GOSSIP_NONE when unknown */
    uint32_t bc_prev, bc_next;
    uint32_t susp; /* index into the instance's suspicions or GOSSIP_NONE */
    uint8_t state;
    uint8_t bc_tx;
    bool bc_queued;
} member;

/* One view's own entries in a shared store: open addressing slot -> entry (keys GOSSIP_NONE = empty). */
typedef struct gossip_view {
    uint32_t *keys;
    member **vals;
    uint32_t cap, n;
    uint32_t ix; /* position in the store's views, GOSSIP_NONE when not attached */
} gossip_view;

struct gossip_member_store {
    bool share, solo;
    gossip_meta_pool *pool; /* NULL: private metadata copies (solo stores of the daemon) */
    member **pages; /* base entries: slot s at pages[s >> GOSSIP_PAGE_BITS][s & (GOSSIP_PAGE - 1)] */
    char (*ids)[GOSSIP_ID_MAX + 1]; /* "" for a free slot (solo only) */
    uint32_t *ndelta; /* per slot: views holding an entry of their own */
    uint32_t n_slots, cap_slots, n_pages;
    size_t cap_pages;
    uint64_t *index; /* open addressing over ids: hash << 32 | slot; UINT64_MAX = empty */
    uint32_t index_cap;
    uint32_t *free_slots;
    uint32_t n_free;
    size_t cap_free;
    gossip_view **views;
    uint32_t n_views;
    size_t cap_views;
    size_t n_base, n_private;
    gossip_msg *rx; /* one receive buffer for every instance (one thread) */
};

extern const member gossip_absent_member;

/* ---- metadata values ---- */

/* Every field equal, the published cache use included. */
bool gossip_meta_eq(const gossip_meta *a, const gossip_meta *b);
/* Equal in what membership and placement read: every field but the published cache use. */
bool gossip_meta_same_identity(const gossip_meta *a, const gossip_meta *b);
/* FNV-1a finished with murmur3's mix: the hash of node ids in the index and the pool. */
uint32_t gossip_id_hash(const char *s);
/* A metadata value to hold in a member: interned (refcounted) in `pool`, or a private copy when
 * pool is NULL. NULL when memory ran out. */
const gossip_meta *gossip_meta_get(gossip_meta_pool *pool, const gossip_meta *m);
/* Releases a value from gossip_meta_get() or gossip_meta_ref(). Accepts NULL. */
void gossip_meta_put(gossip_meta_pool *pool, const gossip_meta *m);
/* Another reference to a value the caller holds (a copy without a pool; NULL when that fails). */
const gossip_meta *gossip_meta_ref(gossip_meta_pool *pool, const gossip_meta *m);

/* ---- entries ---- */

static inline member *gossip_base_at(const gossip_member_store *st, uint32_t s)
{
    SHOAL_ASSERT(s < st->n_slots);
    return &st->pages[s >> GOSSIP_PAGE_BITS][s & (GOSSIP_PAGE - 1)];
}

static inline const char *gossip_slot_id(const gossip_member_store *st, uint32_t s) { return st->ids[s]; }

static inline bool gossip_present(const member *m) { return m->state != GOSSIP_ABSENT; }

/* Nothing of the instance's own work (a broadcast, a suspicion) hangs on the entry. */
static inline bool gossip_idle(const member *m) { return !m->bc_queued && m->susp == GOSSIP_NONE; }

/* The view fields are equal. */
static inline bool gossip_fields_eq(const member *a, const member *b)
{
    return a->state == b->state && a->meta == b->meta && a->incarnation == b->incarnation &&
           a->state_at == b->state_at && a->accuser == b->accuser;
}

/* View v's own entry of slot s, NULL when it reads the base. */
static inline member *gossip_view_get(const gossip_view *v, uint32_t s)
{
    if (!v->n)
        return NULL;
    uint32_t mask = v->cap - 1;
    for (uint32_t j = (s * 2654435761u) & mask;; j = (j + 1) & mask) {
        if (v->keys[j] == s)
            return v->vals[j];
        if (v->keys[j] == GOSSIP_NONE)
            return NULL;
    }
}

/* Member s as view v holds it (read only: the base entry may be shared). */
static inline const member *gossip_store_get(const gossip_member_store *st, const gossip_view *v, uint32_t s)
{
    if (!st->solo) {
        member *d = gossip_view_get(v, s);
        if (d)
            return d;
    }
    return gossip_base_at(st, s);
}

/* Member s to change: in a shared store view v first takes its own copy (aborts, naming `who`,
 * when memory runs out). */
member *gossip_store_get_w(gossip_member_store *st, gossip_view *v, uint32_t s, const char *who);
/* Drops view v's own entry of slot s (its metadata reference included); the entry must exist. */
void gossip_view_del(gossip_member_store *st, gossip_view *v, uint32_t s);
/* A new own entry of view v for slot s, set to *e (its metadata reference is taken over). */
void gossip_view_put(gossip_member_store *st, gossip_view *v, uint32_t s, const member *e, const char *who);

/* ---- slots ---- */

/* The slot of `id`, GOSSIP_NONE when the store has never seen it. */
uint32_t gossip_store_find(const gossip_member_store *st, const char *id);
/* The slot of `id`, allocated (ABSENT in the base) when the store has not seen it; GOSSIP_NONE
 * when memory ran out. */
uint32_t gossip_store_slot(gossip_member_store *st, const char *id);
/* Gives a reaped slot back for reuse (solo stores only); false when memory ran out (the slot stays
 * allocated, ABSENT). Call gossip_store_reindex() after freeing slots. */
bool gossip_store_free_slot(gossip_member_store *st, uint32_t s);
/* Rebuilds the id index (after slots were freed). -1 with SHOAL_ERR_NOMEM (the old index stays). */
int gossip_store_reindex(gossip_member_store *st);

/* ---- stores and views ---- */

/* A store for one instance (the daemon's), whose base is its view. NULL when memory ran out. */
gossip_member_store *gossip_store_new_solo(gossip_meta_pool *pool);
/* Frees a solo store with every metadata value it holds. */
void gossip_store_free_solo(gossip_member_store *st);
/* Adds view v (empty) to a shared store using `pool`: every member the base holds becomes an
 * ABSENT entry of v's own. -1 with SHOAL_ERR_NOMEM. */
int gossip_store_attach(gossip_member_store *st, gossip_view *v, gossip_meta_pool *pool, const char *who);
/* Frees view v's own entries and removes it from the store (when attached). */
void gossip_store_detach(gossip_member_store *st, gossip_view *v);

#endif
