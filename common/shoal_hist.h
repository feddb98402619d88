/*
 * shoal_hist: a latency histogram with fixed buckets, cheap enough for every request of the hot
 * path, rendered as a Prometheus histogram in seconds.
 *
 * An observation is one bucket search over SHOAL_HIST_BOUNDS integers and two relaxed atomic
 * additions (its bucket, the sum); no lock, no allocation, safe from any thread. Buckets are kept
 * per interval (not cumulative) so an observation touches one of them; the rendering adds them
 * up, and derives _count from the same reads, so a scrape always shows monotone buckets whose
 * +Inf equals _count even while observations land. The bounds are the same for every histogram
 * of the product (100 µs to 60 s), so dashboards can compare and aggregate any two of them.
 */
#ifndef SHOAL_HIST_H
#define SHOAL_HIST_H

#include "shoal_buf.h"

#include <stdatomic.h>
#include <stdint.h>

#define SHOAL_HIST_BOUNDS 18

/* Caller-owned (embed it); zero it with shoal_hist_create. */
typedef struct shoal_hist {
    _Atomic uint64_t buckets[SHOAL_HIST_BOUNDS + 1]; /* per interval; the last is (60 s, +Inf) */
    _Atomic uint64_t sum_us;
} shoal_hist;

/* A plain copy of a histogram, for handing one across a module boundary. */
typedef struct shoal_hist_counts {
    uint64_t buckets[SHOAL_HIST_BOUNDS + 1];
    uint64_t sum_us;
} shoal_hist_counts;

/* The upper bounds in microseconds, ascending (static storage). */
extern const uint64_t shoal_hist_bounds_us[SHOAL_HIST_BOUNDS];

/* Zeroes every bucket and the sum. */
void shoal_hist_create(shoal_hist *h);

/* Records one duration in microseconds (relaxed atomics; any thread). */
void shoal_hist_observe(shoal_hist *h, uint64_t us);

/* Reads every bucket and the sum into out (each value exact, not one snapshot). */
void shoal_hist_read(const shoal_hist *h, shoal_hist_counts *out);

/* Overwrites h with counts (used to publish a module's own histogram in another's). */
void shoal_hist_store(shoal_hist *h, const shoal_hist_counts *counts);

/* Appends the sample lines of one histogram named `name` (without _bucket/_sum/_count):
 * `name_bucket{labels,le="..."}` cumulative up to le="+Inf", then `name_sum{labels}` in seconds
 * and `name_count{labels}`. `labels` is "" or pre-escaped `key="value",...` pairs. No HELP or
 * TYPE lines: the caller writes them once per family. -1 on NOMEM. */
int shoal_hist_render(const shoal_hist *h, const char *name, const char *labels, shoal_buf *out);

#endif
