/*
 * bench_s3_get: ranged-GET throughput of the S3 client with 1, 16 and 64 requests in flight,
 * beside Debian's awscli (`aws s3 cp --recursive`) reading the same objects, measured in one
 * run against the same server and printed as a table with ratios.
 *
 *   shoal-bench-s3 --endpoint http://127.0.0.1:PORT --bucket NAME [--objects 8] [--size-mib 32]
 *                  [--range-mib 1] [--aws /usr/bin/aws]
 *
 * Credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), for both
 * tools. The program first uploads the objects (multipart, through the client), then reads
 * every range of every object once per in-flight level through the asynchronous API, keeping
 * exactly N requests outstanding, then times awscli copying the same objects to a temporary
 * directory. Each figure is bytes read / wall time; ratios are client / awscli. bench/s3/run.sh
 * starts a local server and runs this.
 */
#include "s3_client.h"
#include "shoal_env.h"
#include "shoal_mix.h"

#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

typedef struct bench {
    const char *endpoint;
    const char *bucket;
    const char *aws;
    unsigned objects;
    uint64_t size;
    uint64_t range;
} bench;

/* The read loop: `inflight` outstanding ranged GETs, each completion submitting the next. */
typedef struct reader {
    s3_client *c;
    const bench *b;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t next;      /* index of the next range to submit */
    uint64_t total;     /* ranges in all */
    uint64_t finished;
    uint64_t bytes;
    unsigned failures;
    char first_error[512];
    uint8_t **bufs;     /* one buffer per slot */
} reader;

typedef struct slot {
    reader *r;
    unsigned index;
} slot;

static void submit_next(slot *s);

static void on_range(void *ud, s3_result *res)
{
    slot *s = ud;
    reader *r = s->r;
    pthread_mutex_lock(&r->mu);
    r->finished++;
    if (res->err) {
        if (r->failures++ == 0)
            snprintf(r->first_error, sizeof r->first_error, "%s", res->message);
    } else {
        r->bytes += res->bytes;
    }
    bool all = r->finished == r->total;
    if (all)
        pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    if (!all)
        submit_next(s);
}

static void submit_next(slot *s)
{
    reader *r = s->r;
    pthread_mutex_lock(&r->mu);
    uint64_t i = r->next < r->total ? r->next++ : UINT64_MAX;
    pthread_mutex_unlock(&r->mu);
    if (i == UINT64_MAX)
        return;
    uint64_t per = r->b->size / r->b->range;
    char key[64];
    snprintf(key, sizeof key, "bench/obj%02u", (unsigned)(i / per));
    s3_get_args g = {.bucket = r->b->bucket, .key = key, .ranged = true, .offset = (i % per) * r->b->range,
                     .length = r->b->range, .buf = r->bufs[s->index], .buf_len = r->b->range};
    if (s3_get_async(r->c, &g, on_range, s) < 0) {
        s3_result fake = {.err = shoal_error_code(), .message = shoal_error_message()};
        on_range(s, &fake);
    }
}

static s3_client *make_client(const bench *b, unsigned inflight)
{
    s3_client_config cfg;
    s3_client_config_defaults(&cfg);
    cfg.endpoint = b->endpoint;
    cfg.path_style = true;
    cfg.max_in_flight = inflight;
    cfg.multipart_threshold = 8u << 20;
    cfg.part_size = 8u << 20;
    s3_client *c = s3_client_new(&cfg);
    if (!c)
        fprintf(stderr, "shoal-bench-s3: %s\n", shoal_error_message());
    return c;
}

/* Returns MB/s of reading every range once with `inflight` outstanding, or -1. */
static double run_client(const bench *b, unsigned inflight)
{
    s3_client *c = make_client(b, inflight);
    if (!c)
        return -1;
    reader r = {.c = c, .b = b, .total = (uint64_t)b->objects * (b->size / b->range)};
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    r.bufs = calloc(inflight, sizeof *r.bufs);
    slot *slots = calloc(inflight, sizeof *slots);
    for (unsigned i = 0; i < inflight; i++) {
        r.bufs[i] = malloc(b->range);
        slots[i] = (slot){.r = &r, .index = i};
    }
    uint64_t t0 = shoal_clock_mono_us();
    for (unsigned i = 0; i < inflight; i++)
        submit_next(&slots[i]);
    pthread_mutex_lock(&r.mu);
    while (r.finished < r.total)
        pthread_cond_wait(&r.cv, &r.mu);
    pthread_mutex_unlock(&r.mu);
    uint64_t us = shoal_clock_mono_us() - t0;
    s3_client_delete(c);
    for (unsigned i = 0; i < inflight; i++)
        free(r.bufs[i]);
    free(r.bufs);
    free(slots);
    pthread_mutex_destroy(&r.mu);
    pthread_cond_destroy(&r.cv);
    if (r.failures) {
        fprintf(stderr, "shoal-bench-s3: %u of %llu GETs failed, first: %s\n", r.failures,
                (unsigned long long)r.total, r.first_error);
        return -1;
    }
    return (double)r.bytes / (1 << 20) / ((double)us / 1e6);
}

/* Times `aws s3 cp --recursive s3://bucket/bench/ DIR`; MB/s or -1. */
static double run_awscli(const bench *b)
{
    char dir[] = "/tmp/shoal-bench-s3-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return -1;
    }
    char src[256];
    snprintf(src, sizeof src, "s3://%s/bench/", b->bucket);
    char *argv[] = {(char *)b->aws, "s3", "cp", "--recursive", "--quiet", "--endpoint-url", (char *)b->endpoint,
                    src, dir, NULL};
    uint64_t t0 = shoal_clock_mono_us();
    pid_t pid;
    int status = -1;
    if (posix_spawn(&pid, b->aws, NULL, NULL, argv, environ) != 0 || waitpid(pid, &status, 0) < 0) {
        perror("spawn aws");
        status = -1;
    }
    uint64_t us = shoal_clock_mono_us() - t0;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "shoal-bench-s3: could not remove %s\n", dir);
    if (status != 0) {
        fprintf(stderr, "shoal-bench-s3: %s s3 cp failed (status %d)\n", b->aws, status);
        return -1;
    }
    return (double)b->objects * (double)b->size / (1 << 20) / ((double)us / 1e6);
}

static int prepare(const bench *b)
{
    s3_client *c = make_client(b, 16);
    if (!c)
        return -1;
    uint8_t *data = malloc(b->size);
    uint64_t x = 88172645463325252ull;
    shoal_mix_fill(data, b->size, &x);
    int rc = 0;
    for (unsigned o = 0; o < b->objects && rc == 0; o++) {
        char key[64];
        snprintf(key, sizeof key, "bench/obj%02u", o);
        data[0] = (uint8_t)o; /* distinct objects */
        s3_put_args a = {.bucket = b->bucket, .key = key, .data = data, .len = b->size, .fd = -1};
        if ((rc = s3_upload(c, &a, NULL)) < 0)
            fprintf(stderr, "shoal-bench-s3: upload %s: %s\n", key, shoal_error_message());
    }
    free(data);
    s3_client_delete(c);
    return rc;
}

static void usage(void)
{
    fprintf(stderr, "usage: shoal-bench-s3 --endpoint URL --bucket NAME [--objects N] [--size-mib N] "
                    "[--range-mib N] [--aws PATH]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    bench b = {.objects = 8, .size = 32u << 20, .range = 1u << 20, .aws = "/usr/bin/aws"};
    for (int i = 1; i < argc; i += 2) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            usage();
        if (strcmp(argv[i], "--endpoint") == 0)
            b.endpoint = v;
        else if (strcmp(argv[i], "--bucket") == 0)
            b.bucket = v;
        else if (strcmp(argv[i], "--objects") == 0)
            b.objects = (unsigned)atoi(v);
        else if (strcmp(argv[i], "--size-mib") == 0)
            b.size = (uint64_t)atoi(v) << 20;
        else if (strcmp(argv[i], "--range-mib") == 0)
            b.range = (uint64_t)atoi(v) << 20;
        else if (strcmp(argv[i], "--aws") == 0)
            b.aws = v;
        else
            usage();
    }
    if (!b.endpoint || !b.bucket || !b.objects || !b.range || b.size < b.range || b.size % b.range)
        usage();
    if (prepare(&b) < 0)
        return 1;
    printf("S3 ranged-GET throughput: %u objects x %llu MiB, %llu MiB ranges, endpoint %s\n", b.objects,
           (unsigned long long)(b.size >> 20), (unsigned long long)(b.range >> 20), b.endpoint);
    double aws = run_awscli(&b);
    static const unsigned levels[] = {1, 16, 64};
    double mbs[3];
    for (int i = 0; i < 3; i++)
        if ((mbs[i] = run_client(&b, levels[i])) < 0)
            return 1;
    printf("%-34s %10s %16s\n", "reader", "MiB/s", "ratio vs awscli");
    for (int i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof name, "shoal s3_client, %u in flight", levels[i]);
        if (aws > 0)
            printf("%-34s %10.1f %16.2f\n", name, mbs[i], mbs[i] / aws);
        else
            printf("%-34s %10.1f %16s\n", name, mbs[i], "n/a");
    }
    if (aws > 0)
        printf("%-34s %10.1f %16.2f\n", "aws s3 cp --recursive", aws, 1.0);
    else
        printf("%-34s %10s %16s\n", "aws s3 cp --recursive", "failed", "n/a");
    return aws > 0 ? 0 : 1;
}
