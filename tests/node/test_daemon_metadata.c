/*
 * Cooperative metadata, end to end: real daemons over the real local S3 server, every count taken
 * at the server. An object's metadata has one owner in the cluster, which asks S3 once per
 * --metadata-ttl and answers every other node, so the cluster's HEADs do not grow with its size.
 */
#include "test_daemon_harness.h"

#include "tt.h"

#include <pthread.h>
#include <stdio.h>

#define MIB (1024u * 1024u)
#define MD_OBJECTS 300
#define MD_NODES 5

/* 300 objects: most of one block, every tenth of three (1 MiB blocks). */
static size_t md_size(int k) { return k % 10 == 9 ? 2 * MIB + 4096u : 20000u + (size_t)k * 37u; }
static void md_key(int k, char *out, size_t n) { snprintf(out, n, "meta/obj-%03d.bin", k); }

typedef struct reader {
    td_cluster *c;
    int node;
} reader;

/* Node `node` reads every object, starting at a different one on each node so that the nodes ask
 * about different objects at first and about the same ones later. */
static void *read_all_main(void *arg)
{
    reader *r = arg;
    char key[64];
    for (int i = 0; i < MD_OBJECTS; i++) {
        int k = (i + r->node * (MD_OBJECTS / MD_NODES)) % MD_OBJECTS;
        md_key(k, key, sizeof key);
        td_get_check(r->c, r->node, key, md_size(k), (uint32_t)k);
    }
    return NULL;
}

/* Five nodes each `shoal get` every object of a 300-object dataset: the server sees at most 1.02
 * HEADs per object (one per object from its metadata owner; without owners it was one per object
 * per node, five times as many), and all its requests stay within 1.02 x (unique blocks + objects).
 * A generous --peer-timeout keeps a busy machine from sending a reader to S3 around a slow owner,
 * and a TTL of an hour keeps it from stretching the reads past the metadata's expiry (each expiry
 * is one more HEAD per object, rightly). */
TT_TEST(test_daemon_five_nodes_send_one_head_per_object_for_the_cluster)
{
    td_cluster *c = td_cluster_new(MD_NODES, "1M");
    char key[64];
    long blocks = 0;
    for (int k = 0; k < MD_OBJECTS; k++) {
        md_key(k, key, sizeof key);
        td_put(c, key, md_size(k), (uint32_t)k);
        blocks += (long)((md_size(k) + MIB - 1) / MIB);
    }
    const char *flags[] = {"--peer-timeout", "10000", "--metadata-ttl", "3600", NULL};
    for (int i = 0; i < MD_NODES; i++)
        td_node_start(c, i, flags);
    td_wait_cluster(c, 20000);
    tt_s3rver_stats_reset(&c->s3);
    pthread_t t[MD_NODES];
    reader r[MD_NODES];
    for (int i = 0; i < MD_NODES; i++) {
        r[i] = (reader){c, i};
        TT_CHECK(pthread_create(&t[i], NULL, read_all_main, &r[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < MD_NODES; i++)
        pthread_join(t[i], NULL);
    long heads = tt_s3rver_stat(&c->s3, "heads"), gets = tt_s3rver_stat(&c->s3, "gets"),
         lists = tt_s3rver_stat(&c->s3, "lists");
    tt_note("%d nodes x %d objects (%ld blocks): S3 HEADs %ld, GETs %ld, LISTs %ld", MD_NODES, MD_OBJECTS, blocks,
            heads, gets, lists);
    TT_CHECK(heads * 100 <= MD_OBJECTS * 102, "S3 saw %ld HEADs for %d objects (more than 1.02 per object)", heads,
             MD_OBJECTS);
    long all = heads + gets + lists;
    TT_CHECK(all * 100 <= (blocks + MD_OBJECTS) * 102,
             "S3 saw %ld requests (GET+HEAD+LIST) for %ld blocks and %d objects (more than 1.02 each)", all, blocks,
             MD_OBJECTS);
    td_pass(c);
}

TT_MAIN()
