/*
 * The Python package (python/shoal) against real daemons on loopback and the real local S3 server
 * (tests/node/test_daemon_harness.h). The C side starts the cluster and uploads the objects; a
 * manifest (key -> size and seed of td_content) tells the Python side what each object holds, so
 * every byte Python reads is checked. What S3 was asked is counted at the server.
 *
 * Python is Debian's /usr/bin/python3 (python3-fsspec and python3-torch load there), with
 * PYTHONPATH at the package's source tree; one case installs it with pip into a fresh venv
 * instead, offline, as a user would.
 */
#include "test_daemon_harness.h"

#include "shoal_error.h"
#include "tt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define PYTHON "/usr/bin/python3"
#define MIB (1024u * 1024u)

/* Skips the case unless /usr/bin/python3 imports `module`. */
static void need_module(const char *module, const char *package)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, PYTHON " -c 'import %s' >/dev/null 2>&1", module);
    if (access(PYTHON, X_OK) != 0)
        TT_SKIP("%s is missing (Debian's python3)", PYTHON);
    if (system(cmd) != 0)
        TT_SKIP("%s is not importable by %s (apt-get install %s; scripts/deps does)", module, PYTHON, package);
}

typedef struct manifest {
    FILE *f;
    char path[300];
    int n;
} manifest;

/* Uploads key with td_content(size, seed) and records it in the manifest. */
static void put(td_cluster *c, manifest *m, const char *key, size_t size, uint32_t seed)
{
    td_put(c, key, size, seed);
    fprintf(m->f, "%s\n  \"%s\": [%zu, %u]", m->n++ ? "," : "{", key, size, seed);
}

static void manifest_open(td_cluster *c, manifest *m)
{
    snprintf(m->path, sizeof m->path, "%s/manifest.json", c->dir);
    m->f = fopen(m->path, "w");
    TT_CHECK(m->f != NULL, "manifest %s", m->path);
    m->n = 0;
}

static void manifest_close(manifest *m)
{
    fputs(m->n ? "\n}\n" : "{}\n", m->f);
    fclose(m->f);
}

/* The objects the package's unit tests read (tests in python/tests name them). */
static void unit_objects(td_cluster *c, manifest *m)
{
    char key[64];
    put(c, m, "py/small.txt", 10, 1);
    put(c, m, "py/big.bin", 3 * MIB + MIB / 2, 2);
    put(c, m, "py/dir/a", 1000, 3);
    put(c, m, "py/dir/b", 2000, 4);
    put(c, m, "py/dir/sub/c", 3000, 5);
    put(c, m, "py/empty", 0, 6);
    put(c, m, "py/odd name+%\xc3\xa9", 100, 7);
    for (int k = 0; k < 25; k++) {
        snprintf(key, sizeof key, "py/many/o%03d", k);
        put(c, m, key, 50, (uint32_t)(100 + k));
    }
    for (int k = 0; k < 40; k++) {
        snprintf(key, sizeof key, "ds/train/s%03d.bin", k);
        put(c, m, key, 1000 + (size_t)k * 7919, (uint32_t)(200 + k));
    }
}

/* Runs `python3 ARGS` in python/tests with the package on PYTHONPATH and the cluster's facts in
 * the environment; returns the exit status. */
static int run_python(td_cluster *c, const manifest *m, unsigned block_size, const char *args)
{
    char cmd[4096], tests[2048];
    snprintf(tests, sizeof tests, "%s", tt_source_path("python/tests")); /* tt_source_path's buffer is reused */
    snprintf(cmd, sizeof cmd,
             "cd '%s' && PYTHONDONTWRITEBYTECODE=1 PYTHONPATH='%s' SHOAL_TEST_BUCKET=%s SHOAL_TEST_MANIFEST='%s' SHOAL_TEST_BLOCK_SIZE=%u "
             "SHOAL_TEST_CONTROL='%s' SHOAL_TEST_CONTROL2='%s' SHOAL_TEST_S3_STATS=http://127.0.0.1:%d/_shoal/stats "
             PYTHON " %s",
             tests, tt_source_path("python"), TD_BUCKET, m->path, block_size,
             c->nodes[0].control, c->n > 1 ? c->nodes[1].control : "", c->s3.port, args);
    tt_note("%s", cmd);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* One node with the unit tests' objects, then `python3 -m unittest -v MODULE`. */
static void unit_case(const char *module)
{
    td_cluster *c = td_cluster_new(1, "1M");
    manifest m;
    manifest_open(c, &m);
    unit_objects(c, &m);
    manifest_close(&m);
    td_node_start(c, 0, NULL);
    td_wait_cluster(c, 10000);
    char args[128];
    snprintf(args, sizeof args, "-m unittest -v %s", module);
    int st = run_python(c, &m, MIB, args);
    TT_CHECK(st == 0, "the Python tests of %s failed (exit %d; their output is above)", module, st);
    td_pass(c);
}

TT_TEST(test_python_client_speaks_the_control_protocol)
{
    need_module("json", "python3");
    unit_case("test_client");
}

TT_TEST(test_python_fsspec_filesystem_reads_lists_and_ranges)
{
    need_module("fsspec", "python3-fsspec");
    unit_case("test_filesystem");
}

TT_TEST(test_python_dataset_gives_every_object_under_a_prefix)
{
    need_module("torch", "python3-torch");
    unit_case("test_dataset");
}

/* `pip install ./python` works offline into a fresh venv, and fsspec then finds shoal:// through
 * the package's entry point without the test importing shoal first. The source tree is copied,
 * since setuptools builds in the directory it is given. */
TT_TEST(test_python_package_installs_with_pip)
{
    need_module("venv", "python3-venv");
    need_module("setuptools", "python3-setuptools");
    char *dir = tt_tmpdir("pip");
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "set -e; cp -r '%s' '%s/src'; rm -rf '%s/src/tests'; " PYTHON " -m venv --system-site-packages '%s/venv'; "
             "'%s/venv/bin/python' -m pip install --quiet --no-index --no-build-isolation --no-deps '%s/src'; "
             "cd /; '%s/venv/bin/python' -c 'import shoal, os, sys; "
             "assert shoal.__file__.startswith(sys.prefix), shoal.__file__; print(\"installed\", shoal.__file__)'",
             tt_source_path("python"), dir, dir, dir, dir, dir, dir);
    int st = system(cmd);
    TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "pip install of the package failed (status %d): %s", st, cmd);
    if (system(PYTHON " -c 'import fsspec' >/dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof cmd,
                 "cd / && '%s/venv/bin/python' -c 'import fsspec; c = fsspec.get_filesystem_class(\"shoal\"); "
                 "assert c.__module__ == \"shoal.filesystem\", c; print(\"fsspec finds\", c)'", dir);
        st = system(cmd);
        TT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fsspec does not find shoal:// after pip install: %s", cmd);
    } else {
        tt_note("fsspec is missing: the entry point was not checked");
    }
    tt_rmtree(dir);
    free(dir);
}

/* The end-to-end case: two daemons; on both at once a torch DataLoader with workers reads
 * every sample of a dataset through the package (whole objects with ShoalDataset, then random
 * ranges through fsspec files), checking every byte; S3 sees one GET per unique block. The peer
 * timeout is the maximum, so a busy machine delays a read but never sends it to S3 a second time,
 * and S3 retries are counted by the daemons: the verdict does not depend on load. */
TT_TEST(test_python_dataloader_on_two_nodes_reads_every_byte_once_from_s3)
{
    need_module("torch", "python3-torch");
    need_module("fsspec", "python3-fsspec");
    /* 64 KiB blocks keep the data small (Python rebuilds every byte to check it) while many
     * samples still span blocks. */
    enum { BLOCK = 64 * 1024 };
    td_cluster *c = td_cluster_new(2, "64K");
    manifest m;
    manifest_open(c, &m);
    char key[64];
    long blocks = 0;
    for (int k = 0; k < 120; k++) {
        /* samples of 2 KB to 75 KB, every tenth of 1-3 blocks, some ending exactly on a block */
        size_t size = k % 10 == 9 ? (size_t)(k % 3 + 1) * BLOCK - (k % 20 == 19 ? 0 : 1234u) : 2000u + (size_t)k * 613u;
        snprintf(key, sizeof key, "e2e/train/%04d.bin", k);
        put(c, &m, key, size, (uint32_t)(1000 + k));
        blocks += (long)((size + BLOCK - 1) / BLOCK);
    }
    manifest_close(&m);
    const char *const extra[] = {"--peer-timeout", "600000", NULL};
    td_node_start(c, 0, extra);
    td_node_start(c, 1, extra);
    td_wait_cluster(c, 10000);
    tt_s3rver_stats_reset(&c->s3);
    int st = run_python(c, &m, BLOCK, "test_e2e.py");
    TT_CHECK(st == 0, "the DataLoader script failed (exit %d; its output is above)", st);
    /* A GET that S3 failed and the daemon retried (counted in s3.retries) is the one thing that
     * may add to the count: never a block fetched twice. */
    long gets = tt_s3rver_stat(&c->s3, "gets");
    long retries = (long)(td_stat(c, 0, "s3.retries") + td_stat(c, 1, "s3.retries"));
    tt_note("unique blocks %ld, S3 GETs %ld, retries %ld; node0 reads.peer %llu, node1 reads.peer %llu", blocks, gets,
            retries, (unsigned long long)td_stat(c, 0, "reads.peer"), (unsigned long long)td_stat(c, 1, "reads.peer"));
    TT_CHECK(gets >= blocks && gets <= blocks + retries, "S3 saw %ld GETs for %ld unique blocks (%ld retried)", gets,
             blocks, retries);
    TT_CHECK(td_stat(c, 0, "reads.peer") > 0 && td_stat(c, 1, "reads.peer") > 0,
             "a node read nothing from its peer: the two nodes did not share the work");
    td_pass(c);
}

TT_MAIN()
