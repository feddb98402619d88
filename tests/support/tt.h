/*
 * tt: the project's small test runner (libuv's test-list idea, in plain C).
 *
 *   TT_TEST(test_s3_range_read_returns_last_bytes) { ... TT_CHECK(x == 3, "x=%d", x); ... }
 *   TT_MAIN()
 *
 * Each TT_TEST registers itself. CMake (tests/CMakeLists.txt, shoal_test()) reads the TT_TEST
 * names from the sources and registers every case as its own CTest entry, so each case runs in its
 * own process: `exe CASE` runs one case, `exe` runs all in turn, `exe --list` lists them.
 * A failed check prints file:line, the condition and the message, and fails the case (exit 1).
 * TT_SKIP prints why and exits 77, which CTest reports as skipped, never as passed.
 */
#ifndef SHOAL_TT_H
#define SHOAL_TT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef void (*tt_fn)(void);
void tt_register(const char *name, tt_fn fn);
int tt_main(int argc, char **argv);
void tt_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), noreturn));
void tt_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Prints a progress line "# ..." (kept in the CTest log). */
void tt_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define TT_TEST(name)                                                                             \
    static void name(void);                                                                       \
    __attribute__((constructor)) static void tt_reg_##name(void) { tt_register(#name, name); }    \
    static void name(void)

#define TT_CHECK(cond, ...)                                                                       \
    do {                                                                                          \
        if (!(cond))                                                                              \
            tt_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                                      \
    } while (0)

/* Checks an expression that returns 0/-1 in the shoal_error convention; prints the error. */
#define TT_OK(expr)                                                                               \
    do {                                                                                          \
        if ((expr) != 0)                                                                          \
            tt_fail(__FILE__, __LINE__, #expr, "failed: %s (%s)", shoal_error_message(),          \
                    shoal_error_name(shoal_error_code()));                                        \
    } while (0)

#define TT_SKIP(...) tt_skip(__VA_ARGS__)

#define TT_MAIN()                                                                                 \
    int main(int argc, char **argv) { return tt_main(argc, argv); }

/* ---- budgets from the work ----
 * A long case takes its time limit from what it does, never from one fixed number: tt_budget_ms
 * is base_ms + units x per_unit_ms (files, bytes, node-periods: the unit the case counts), times 3
 * in a sanitizer build and times SHOAL_TEST_SLOWDOWN when that is set (a number, for a machine
 * slower than any the allowances were measured on). A case's allowances hold with every core kept
 * busy (stress-ng --cpu N on N cores, `scripts/test --under-load`); CTest's TIMEOUT is only a
 * backstop above them. tt_budget_start arms this process's watchdog: when budget_ms has passed
 * since the call, the case fails with a line naming what ran out (formatted like printf) and the
 * budget, and exits (atexit handlers run: mounts are detached, daemons end with the process). A
 * later call re-arms it; tt_budget_stop disarms it. Thread-safe. */
uint64_t tt_budget_ms(uint64_t base_ms, uint64_t units, double per_unit_ms);
void tt_budget_start(uint64_t budget_ms, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tt_budget_stop(void);

/* A fresh temporary directory under $TMPDIR (removed by tt_rmtree). Never NULL (fails the test). */
char *tt_tmpdir(const char *tag);
void tt_rmtree(const char *path);
/* Directory of the test's sources (set by CMake as SHOAL_SOURCE_DIR) joined with rel. */
const char *tt_source_path(const char *rel);

/* Starts a helper server (the local S3 server, a fault proxy, a fake): execvp(argv[0], argv) with
 * `env` ("NAME=VALUE", or NULL) set in the child only and its stdin a pipe this process keeps
 * (the helpers serve until it closes), then reads the first line the helper prints, which must
 * carry "port": N. Returns the pid and sets *port and *stdin_fd; fails the test, naming `what`,
 * when no port comes. */
int tt_spawn_server(char *const argv[], const char *env, const char *what, int *port, int *stdin_fd);

#endif
