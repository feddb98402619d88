/*
 * Placement by weighted rendezvous hashing (highest random weight, Thaler & Ravishankar 1996, with
 * the logarithmic weighting of Schindelhauer & Schomaker 2005 / Resch's "weighted rendezvous").
 *
 * For a block b every eligible member i draws h = XXH3_64(b, seed_i), turns it into a uniform
 * u in (0,1) and gets the key E_i / w_i with E_i = -ln(u): an exponential variable scaled down by
 * the member's capacity w_i. The member with the smallest key wins, and it is member i with
 * probability exactly w_i / sum(w): the minimum of independent exponentials with rates w_i. (This
 * is the same order as the "score = -w / ln(u), highest wins" form, without a division per member.)
 * A member that joins takes only the blocks where its own key is the smallest and a member that
 * leaves gives up only its own blocks, so movement is the minimum possible, with no virtual nodes.
 *
 * Zones: the best member of each zone is the zone's candidate, and the R best candidates own the
 * block, so replicas land in R distinct zones whenever there are at least R zones. With fewer zones
 * every zone gives its best member first and the remaining places go to the best of the others.
 * The primary owner is the best member overall in every case, so it does not depend on R.
 *
 * Determinism: members are sorted by (zone, node id) when the view is built, ties between equal
 * keys go to the earlier member in that order, and the logarithm is computed here with IEEE basic
 * operations in a fixed order (no libm, and dht/CMakeLists.txt turns FP contraction off), so every
 * node with the same view computes the same owners bit for bit, whatever its libm or CPU.
 *
 * Speed: a lookup is one short hash per member plus a multiply and a compare. The logarithm is
 * needed only for members that might still enter the result: since -ln(u) >= 1 - u, a member whose
 * (1 - u) / w already exceeds the current R-th best key cannot win and is skipped. After the first
 * few members the threshold is small, so only about R ln(n) logarithms are taken per lookup.
 */
#define XXH_INLINE_ALL
#include "dht.h"

#include "shoal_bytes.h"
#include "shoal_error.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

struct dht_view {
    uint64_t version;
    size_t n;            /* eligible members, sorted by (zone, node id) */
    size_t nzones;
    dht_member *members; /* strings point into `strings` */
    uint64_t *seeds;     /* XXH3_64(node id): the member's hash seed */
    double *invw;        /* 1 / capacity */
    size_t *zone_start;  /* members of zone z are [zone_start[z], zone_start[z + 1]) */
    char *strings;
};

typedef struct dht_cand {
    double key;
    size_t idx;
} dht_cand;

/* A skipped member's lower bound must exceed the threshold by this factor, which covers the
 * rounding of the bound and of the logarithm (both far below 2^-40 relative). */
#define DHT_PRUNE_SLACK (1.0 + 0x1p-20)

static void hash_field(XXH3_state_t *st, const char *s)
{
    size_t len = s ? strlen(s) : 0;
    uint8_t prefix[8];
    shoal_store_le64(prefix, (uint64_t)len);
    XXH3_128bits_update(st, prefix, sizeof prefix);
    if (len)
        XXH3_128bits_update(st, s, len);
}

dht_id dht_block_id(const char *bucket, const char *key, const char *etag, uint64_t index)
{
    /* "shoal.block.v1" names the encoding: a change to it must change every id. */
    static const char tag[] = "shoal.block.v1";
    XXH3_state_t st;
    uint8_t idx[8];
    XXH3_128bits_reset(&st);
    XXH3_128bits_update(&st, tag, sizeof tag - 1);
    hash_field(&st, bucket);
    hash_field(&st, key);
    hash_field(&st, etag);
    shoal_store_le64(idx, index);
    XXH3_128bits_update(&st, idx, sizeof idx);
    XXH128_hash_t h = XXH3_128bits_digest(&st);
    return (dht_id){.hi = h.high64, .lo = h.low64};
}

char *dht_id_format(dht_id id, char out[33])
{
    snprintf(out, 33, "%016" PRIx64 "%016" PRIx64, id.hi, id.lo);
    return out;
}

void dht_id_bytes(dht_id id, uint8_t out[16])
{
    shoal_store_be64(out, id.hi);
    shoal_store_be64(out + 8, id.lo);
}

/* -ln(u) for u in (0, 1), from basic operations only: u = m 2^e with m in [sqrt(1/2), sqrt(2)),
 * ln(m) = 2 atanh(s) with s = (m - 1) / (m + 1), |s| < 0.172, summed to s^15 (relative error
 * below 1e-13). Subnormal u never occurs (u >= 2^-53). */
static double neg_ln(double u)
{
    uint64_t bits;
    memcpy(&bits, &u, sizeof bits);
    int e = (int)((bits >> 52) & 0x7ff) - 1023;
    bits = (bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL;
    double m;
    memcpy(&m, &bits, sizeof m);
    if (m > 1.4142135623730951) {
        m *= 0.5;
        e += 1;
    }
    double s = (m - 1.0) / (m + 1.0);
    double s2 = s * s;
    double p = 1.0 / 15;
    p = p * s2 + 1.0 / 13;
    p = p * s2 + 1.0 / 11;
    p = p * s2 + 1.0 / 9;
    p = p * s2 + 1.0 / 7;
    p = p * s2 + 1.0 / 5;
    p = p * s2 + 1.0 / 3;
    p = p * s2 + 1.0;
    return -((double)e * 0.69314718055994530942 + 2.0 * s * p);
}

static int cmp_id(const void *a, const void *b)
{
    const dht_member *x = *(const dht_member *const *)a, *y = *(const dht_member *const *)b;
    return strcmp(x->node_id, y->node_id);
}

static const char *zone_of(const dht_member *m) { return m->zone ? m->zone : ""; }

static int cmp_zone_id(const void *a, const void *b)
{
    const dht_member *x = *(const dht_member *const *)a, *y = *(const dht_member *const *)b;
    int c = strcmp(zone_of(x), zone_of(y));
    return c ? c : strcmp(x->node_id, y->node_id);
}

static bool eligible(const dht_member *m) { return m->alive && m->serving && m->capacity > 0; }

dht_view *dht_view_new(const dht_member *members, size_t n, uint64_t version)
{
    const dht_member **sorted = NULL;
    dht_view *v = NULL;
    if (n && !members) {
        shoal_error_set(SHOAL_ERR_INVAL, "dht view: %zu members but no array", n);
        goto fail;
    }
    sorted = calloc(n ? n : 1, sizeof *sorted);
    v = calloc(1, sizeof *v);
    if (!sorted || !v) {
        shoal_error_set(SHOAL_ERR_NOMEM, "dht view of %zu members", n);
        goto fail;
    }
    v->version = version;

    /* Every id must be present and unique in the whole input, eligible or not: a duplicate is a
     * caller bug that would make two nodes disagree on what the set is. */
    for (size_t i = 0; i < n; i++) {
        if (!members[i].node_id || !members[i].node_id[0]) {
            shoal_error_set(SHOAL_ERR_INVAL, "dht view: member %zu has no node id", i);
            goto fail;
        }
        sorted[i] = &members[i];
    }
    qsort(sorted, n, sizeof *sorted, cmp_id);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(sorted[i - 1]->node_id, sorted[i]->node_id) == 0) {
            shoal_error_set(SHOAL_ERR_INVAL, "dht view: duplicate node id '%s'", sorted[i]->node_id);
            goto fail;
        }
    }

    size_t ne = 0, bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (eligible(sorted[i])) {
            sorted[ne++] = sorted[i];
            bytes += strlen(sorted[i]->node_id) + strlen(zone_of(sorted[i])) + 2;
        }
    }
    qsort(sorted, ne, sizeof *sorted, cmp_zone_id);

    size_t cap = ne ? ne : 1;
    v->n = ne;
    v->members = calloc(cap, sizeof *v->members);
    v->seeds = calloc(cap, sizeof *v->seeds);
    v->invw = calloc(cap, sizeof *v->invw);
    v->zone_start = calloc(cap + 1, sizeof *v->zone_start);
    v->strings = malloc(bytes ? bytes : 1);
    if (!v->members || !v->seeds || !v->invw || !v->zone_start || !v->strings) {
        shoal_error_set(SHOAL_ERR_NOMEM, "dht view of %zu members", n);
        goto fail;
    }

    char *s = v->strings;
    for (size_t i = 0; i < ne; i++) {
        const dht_member *src = sorted[i];
        dht_member *m = &v->members[i];
        *m = *src;
        size_t il = strlen(src->node_id) + 1, zl = strlen(zone_of(src)) + 1;
        m->node_id = memcpy(s, src->node_id, il);
        s += il;
        m->zone = memcpy(s, zone_of(src), zl);
        s += zl;
        v->seeds[i] = XXH3_64bits(m->node_id, il - 1);
        v->invw[i] = 1.0 / (double)m->capacity;
        if (i == 0 || strcmp(m->zone, v->members[i - 1].zone) != 0)
            v->zone_start[v->nzones++] = i;
    }
    v->zone_start[v->nzones] = ne;
    free(sorted);
    return v;

fail:
    free(sorted);
    dht_view_delete(v);
    return NULL;
}

void dht_view_delete(dht_view *view)
{
    if (!view)
        return;
    free(view->members);
    free(view->seeds);
    free(view->invw);
    free(view->zone_start);
    free(view->strings);
    free(view);
}

uint64_t dht_view_version(const dht_view *view) { return view->version; }
size_t dht_view_size(const dht_view *view) { return view->n; }
size_t dht_view_zones(const dht_view *view) { return view->nzones; }

static bool better(double key, size_t idx, double than_key, size_t than_idx)
{
    return key < than_key || (key == than_key && idx < than_idx);
}

/* Inserts (key, idx) into the sorted list if it is among the best `cap`. */
static void cand_insert(dht_cand *list, int *count, int cap, double key, size_t idx)
{
    int at = *count;
    if (at == cap && !better(key, idx, list[cap - 1].key, list[cap - 1].idx))
        return;
    if (at == cap)
        at--;
    while (at > 0 && better(key, idx, list[at - 1].key, list[at - 1].idx)) {
        list[at] = list[at - 1];
        at--;
    }
    list[at] = (dht_cand){key, idx};
    if (*count < cap)
        (*count)++;
}

int dht_owners(const dht_view *view, dht_id id, int r, const dht_member *out[])
{
    if (r < 1)
        return shoal_error_set(SHOAL_ERR_INVAL, "dht owners: r=%d, need at least 1", r);
    if (view->n == 0)
        return shoal_error_set(SHOAL_ERR_DHT_NO_OWNER,
                               "dht owners: no alive serving member in view version %" PRIu64,
                               view->version);
    size_t want = (size_t)r < view->n ? (size_t)r : view->n;
    if (want > DHT_REPLICAS_MAX)
        return shoal_error_set(SHOAL_ERR_INVAL, "dht owners: %zu owners asked, at most %d", want,
                               DHT_REPLICAS_MAX);
    int rn = (int)want;

    uint8_t block[16];
    shoal_store_le64(block, id.hi);
    shoal_store_le64(block + 8, id.lo);

    /* With fewer zones than owners, the best members overall fill the places the zones leave. */
    bool fill = view->nzones < want;
    dht_cand zbest[DHT_REPLICAS_MAX], all[DHT_REPLICAS_MAX];
    int zn = 0, an = 0;

    for (size_t z = 0; z < view->nzones; z++) {
        /* This zone's candidate only matters if it beats the current R-th zone candidate. */
        double bkey = zn == rn ? zbest[zn - 1].key : INFINITY;
        size_t bidx = zn == rn ? zbest[zn - 1].idx : SIZE_MAX;
        bool found = false;
        double thr = bkey;
        if (fill && an == rn && all[an - 1].key > thr)
            thr = all[an - 1].key;
        double cut = thr * DHT_PRUNE_SLACK;

        for (size_t i = view->zone_start[z]; i < view->zone_start[z + 1]; i++) {
            uint64_t h = XXH3_64bits_withSeed(block, sizeof block, view->seeds[i]);
            double u = (double)((h >> 11) | 1) * 0x1p-53; /* odd multiple of 2^-53: 1 - u is exact */
            if ((1.0 - u) * view->invw[i] > cut)
                continue;
            double key = neg_ln(u) * view->invw[i];
            if (better(key, i, bkey, bidx)) {
                bkey = key;
                bidx = i;
                found = true;
            }
            thr = bkey;
            if (fill) {
                cand_insert(all, &an, rn, key, i);
                if (an == rn && all[an - 1].key > thr)
                    thr = all[an - 1].key;
                else if (an < rn)
                    thr = INFINITY;
            }
            cut = thr * DHT_PRUNE_SLACK;
        }
        if (found)
            cand_insert(zbest, &zn, rn, bkey, bidx);
    }

    int k = 0;
    for (; k < zn; k++)
        out[k] = &view->members[zbest[k].idx];
    for (int j = 0; j < an && k < rn; j++) {
        bool taken = false;
        for (int t = 0; t < zn && !taken; t++)
            taken = zbest[t].idx == all[j].idx;
        if (!taken)
            out[k++] = &view->members[all[j].idx];
    }
    return k;
}

void dht_prefer_zone(const dht_member *owners[], size_t n, const char *zone)
{
    if (!zone || !zone[0])
        return;
    size_t front = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(owners[i]->zone, zone) != 0)
            continue;
        const dht_member *m = owners[i];
        memmove(&owners[front + 1], &owners[front], (i - front) * sizeof *owners);
        owners[front++] = m;
    }
}
