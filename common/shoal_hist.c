/*
 * shoal_hist: see the header. The bounds follow the shape Prometheus clients use for latency
 * (1, 2.5, 5 per decade) from 100 µs, where a read from the local store or the page cache lands,
 * to 60 s, past the slowest S3 request the client lets run before it gives up; anything beyond
 * falls in +Inf. Eighteen bounds keep a family of six label values near a hundred series.
 */
#include "shoal_hist.h"

#include <inttypes.h>

const uint64_t shoal_hist_bounds_us[SHOAL_HIST_BOUNDS] = {
    100,    250,    500,     1000,    2500,    5000,     10000,    25000,    50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000, 60000000,
};

void shoal_hist_create(shoal_hist *h)
{
    for (int i = 0; i <= SHOAL_HIST_BOUNDS; i++)
        atomic_init(&h->buckets[i], 0);
    atomic_init(&h->sum_us, 0);
}

void shoal_hist_observe(shoal_hist *h, uint64_t us)
{
    int i = 0;
    while (i < SHOAL_HIST_BOUNDS && us > shoal_hist_bounds_us[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

void shoal_hist_read(const shoal_hist *h, shoal_hist_counts *out)
{
    shoal_hist *m = (shoal_hist *)h; /* atomic loads take a non-const pointer in C11 */
    for (int i = 0; i <= SHOAL_HIST_BOUNDS; i++)
        out->buckets[i] = atomic_load_explicit(&m->buckets[i], memory_order_relaxed);
    out->sum_us = atomic_load_explicit(&m->sum_us, memory_order_relaxed);
}

void shoal_hist_store(shoal_hist *h, const shoal_hist_counts *counts)
{
    for (int i = 0; i <= SHOAL_HIST_BOUNDS; i++)
        atomic_store_explicit(&h->buckets[i], counts->buckets[i], memory_order_relaxed);
    atomic_store_explicit(&h->sum_us, counts->sum_us, memory_order_relaxed);
}

int shoal_hist_render(const shoal_hist *h, const char *name, const char *labels, shoal_buf *out)
{
    shoal_hist_counts c;
    shoal_hist_read(h, &c);
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    for (int i = 0; i <= SHOAL_HIST_BOUNDS; i++) {
        cum += c.buckets[i];
        int rc;
        if (i < SHOAL_HIST_BOUNDS)
            rc = shoal_buf_appendf(out, "%s_bucket{%s%sle=\"%g\"} %" PRIu64 "\n", name, labels, sep,
                                   (double)shoal_hist_bounds_us[i] / 1e6, cum);
        else
            rc = shoal_buf_appendf(out, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, sep, cum);
        if (rc < 0)
            return -1;
    }
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    return shoal_buf_appendf(out, "%s_sum%s%s%s %.6f\n%s_count%s%s%s %" PRIu64 "\n", name, open, labels, close,
                             (double)c.sum_us / 1e6, name, open, labels, close, cum);
}
