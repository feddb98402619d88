/*
 * The failure path of SHOAL_ASSERT and the lock-owner check behind SHOAL_ASSERT_LOCKED; the
 * choice of the check is explained in the header. The message goes straight to stderr with
 * one write, not through shoal_log: the process is about to abort and its logging may be the
 * broken part.
 */
#include "shoal_assert.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void shoal_assert_fail(const char *cond, const char *file, int line, const char *func)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "assertion failed: %s at %s:%d in %s()\n", cond, file, line, func);
    if (n > 0) {
        size_t len = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
        ssize_t w = write(STDERR_FILENO, msg, len);
        (void)w; /* nothing better to do on the way to abort */
    }
    abort();
}

bool shoal_mutex_held(pthread_mutex_t *mu)
{
#ifdef __GLIBC__
    return __atomic_load_n(&mu->__data.__owner, __ATOMIC_RELAXED) == gettid();
#else
    (void)mu;
    return true;
#endif
}
