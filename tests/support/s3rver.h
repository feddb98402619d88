/*
 * A real local S3 server for tests: tests/s3rver/start.js (@20minutes/s3rver 4.0.4, which checks
 * SigV4 signatures) in a fresh directory on a free loopback port, one per test process.
 * Credentials: S3RVER / S3RVER. The server dies with the test (its stdin is our pipe).
 * When Node or the npm packages are missing (scripts/deps installs them) the test is skipped
 * with a message saying so, exit 77.
 */
#ifndef SHOAL_TT_S3RVER_H
#define SHOAL_TT_S3RVER_H

#include <stdbool.h>
#include <sys/types.h>

typedef struct tt_s3rver {
    pid_t pid;
    int port;
    int stdin_fd;
    char *dir;           /* the server's storage directory (removed by stop) */
    char endpoint[64];   /* "http://127.0.0.1:PORT" */
} tt_s3rver;

/* Starts a server with one bucket; `legacy` selects s3rver 3.7.1 (no signature checks). */
void tt_s3rver_start(tt_s3rver *s, const char *bucket, bool legacy);
void tt_s3rver_stop(tt_s3rver *s);
/* A counter of GET /_shoal/stats ("total", "gets", "rangedGets", "puts", "heads", "lists",
 * "deletes", "posts", "bytesOut": bytes of response bodies, "getBytes": those of the answers to
 * object GETs); fails the test if the server does not answer. */
long tt_s3rver_stat(const tt_s3rver *s, const char *field);
void tt_s3rver_stats_reset(const tt_s3rver *s);

/* Minimal HTTP/1.0 exchange with 127.0.0.1:port for test plumbing; returns the body (free it) or
 * NULL. Not the S3 client: it exists so a test can inspect a server without the code under test. */
char *tt_http(int port, const char *method, const char *path);

#endif
